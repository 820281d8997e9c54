"""Boilerplate and file-name captions: alt texts that say nothing about the image.

A caption is boilerplate when, as a whole, it is a file name, a camera or screenshot name, a URL,
a number, date, dimension or hash, or made only of generic words ("logo", "click here", "image 1",
"white logo", "no image available"). A real caption that merely contains such a word ("a logo of
a red fox", "Banner Elk, North Carolina") is not: every token must be generic, and at least one
must be a boilerplate word.

Extend the lists per run with `TextFilterConfig.extra_boilerplate` (whole captions or single
words), or by building a `Boilerplate` from your own sets.
"""

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import regex

# Words that, alone or with only FILLER_WORDS, numbers and sizes around them, make a caption
# boilerplate. Casefolded. A few common non-English ones: alt texts come in every language.
BOILERPLATE_WORDS = frozenset(
    """image images img imgs picture pictures pic pics photo photos photograph foto fotos bild
    bilder imagen imagenes imágenes immagine imagem afbeelding zdjęcie obraz изображение картинка
    фото 图片 图像 照片 画像 写真 이미지 사진 logo logos logotype icon icons favicon banner banners
    thumbnail thumbnails thumb thumbs spacer placeholder avatar screenshot untitled unnamed unknown
    blank pixel transparent loading advertisement ad ads button click here more default null none
    undefined nan alt empty dummy nbsp gif jpg jpeg png webp svg bmp ico""".split()  # noqa: SIM905
)

# Words allowed around a boilerplate word but never enough on their own.
FILLER_WORDS = frozenset(
    """a an the this that these my our your his her their its of for with in on to and or no not
    found available view see read learn open full size zoom enlarge large small big medium mini
    new main site website page web company brand header footer top bottom left right white black
    dark light color colour retina mobile desktop hd preview profile user author alternative text
    version copy final edited featured hover active default""".split()  # noqa: SIM905
)

# Extensions of file names that alt texts are set to ("IMG_1234.jpg", "index.php").
FILE_NAME_EXTENSIONS = frozenset(
    """jpg jpeg jpe jfif pjpeg pjp png apng gif webp bmp dib tif tiff svg svgz ico cur heic heif
    avif jxl psd raw cr2 nef dng arw html htm php asp aspx jsp""".split()  # noqa: SIM905
)

_EXT = "|".join(sorted(FILE_NAME_EXTENSIONS, key=len, reverse=True))
# A single token ending in a known extension: "IMG_1234.jpg", "spacer.gif", "my-photo.PNG".
_FILE_NAME = re.compile(rf"^\S+\.(?:{_EXT})(?:[?#]\S*)?$", re.IGNORECASE)
# Camera, phone and screenshot names: "DSC01234", "IMG_20230101_123456", "PXL_2023...",
# "IMG-20190101-WA0001", "Screenshot 2023-01-01 at 10.00.00", "GOPR0123".
_CAMERA = re.compile(
    r"^(?:img|dsc|dscn|dscf|dsci|sdc|pict|pxl|mvimg|vid|gopr|gp|dji|cimg|imag|p|pano|burst"
    r"|screenshot|screen shot|scan|wp|sam|snapshot|capture|photo|image|picture)[\s_\-]*\d"
    r"[\d\s_\-.:()~]*"
    r"(?:(?:wa|at|hdr|edited|copy|final|mp|portrait|burst|cover|v)[\d\s_\-.:()~]*)*$",
    re.IGNORECASE,
)
_URL = re.compile(
    r"^(?:(?:[a-z][a-z0-9+.\-]*:)?//\S+|www\.\S+|data:\S+|[\w\-]+(?:\.[\w\-]+)+/\S*)$",
    re.IGNORECASE,
)
# Numbers, dates, times, sizes ("300x250", "1 x 1", "2023-01-01", "#12"): digits and
# separators only, with at least one digit.
_NUMERIC = re.compile(r"^(?=.*\d)[\d\s.,:;/\\\-_#+x×*%()\[\]]+$", re.IGNORECASE)
_HEX_HASH = re.compile(r"^(?=(?:.*\d){2})[0-9a-f]{8,}$", re.IGNORECASE)
_UUID = re.compile(r"^[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}$", re.IGNORECASE)
# Random ids ("Xk3jd9Qm2LpZ"): one long token mixing at least three digits and three letters.
_RANDOM_ID = re.compile(r"^(?=(?:.*\d){3})(?=(?:.*[a-z]){3})[a-z0-9_\-]{12,}$", re.IGNORECASE)
_TOKEN = regex.compile(r"[\p{L}\p{M}\p{N}]+")
_SIZE_TOKEN = re.compile(r"^\d+(?:x\d+)?(?:px|p|k)?$")


def normalise(caption: str) -> str:
    """NFKC, casefolded, whitespace collapsed, edge punctuation trimmed."""
    text = " ".join(unicodedata.normalize("NFKC", caption).casefold().split())
    return text.strip(" \t\"'`.,;:!?*-_|~()[]{}<>«»“”‘’…")


@dataclass(frozen=True)
class Boilerplate:
    """A boilerplate detector; `BOILERPLATE` is the default one."""

    words: frozenset[str] = BOILERPLATE_WORDS
    fillers: frozenset[str] = FILLER_WORDS
    phrases: frozenset[str] = frozenset()  # whole captions, normalised

    def extended(self, extra: Iterable[str]) -> "Boilerplate":
        """A copy that also treats `extra` (single words or whole captions) as boilerplate."""
        extra = [normalise(e) for e in extra if normalise(e)]
        return Boilerplate(
            words=self.words | {e for e in extra if " " not in e},
            fillers=self.fillers,
            phrases=self.phrases | {e for e in extra if " " in e},
        )

    def reason(self, caption: str) -> str | None:
        """Why `caption` is boilerplate ('file name', 'url', ...), or None if it is not."""
        raw = " ".join(caption.split())
        if not raw:
            return None
        if _NUMERIC.match(raw):
            return "number or size"
        if _URL.match(raw):
            return "url"
        if _FILE_NAME.match(raw):
            return "file name"
        if _CAMERA.match(raw):
            return "camera file name"
        if _UUID.match(raw) or _HEX_HASH.match(raw) or _RANDOM_ID.match(raw):
            return "hash or id"
        text = normalise(raw)
        if text in self.phrases:
            return "boilerplate phrase"
        return self._generic_words(text)

    def _generic_words(self, text: str) -> str | None:
        tokens = _TOKEN.findall(text)
        if not tokens:
            return None
        has_word = False
        for tok in tokens:
            if tok in self.words:
                has_word = True
            elif tok not in self.fillers and not _SIZE_TOKEN.match(tok):
                return None
        return "generic words" if has_word else None


BOILERPLATE = Boilerplate()
