"""Caption filters: language, length, boilerplate and an optional fastText text-quality model.

`filter_captions(captions, config)` returns one `TextVerdict` per caption. Every caption gets its
`lang`, `lang_score` and counts, kept or not, so the manifests describe dropped rows too. Checks
run in this order and the first failing one names the drop reason:

1. `caption_length` for an empty caption;
2. `boilerplate_caption` (file names, URLs, numbers, "logo", "click here", ...);
3. `caption_length` for words or characters outside the limits;
4. `language` for a language not asked for, or identified with too little confidence;
5. `low_text_score` below `min_text_score` of the user's text model.
"""

import math
from dataclasses import dataclass, fields
from typing import Any

import regex

from manifests.config import ConfigError, check_fields, from_dict, option
from manifests.storage import location
from pipeline.filters.boilerplate import BOILERPLATE
from pipeline.filters.langid import LID_LANGUAGES, detect_languages

KEPT = "kept"

# Scripts written without spaces between words, with the rough number of characters per word
# used to count their words: Chinese and Japanese words average 1.5-2 characters, so 2 is the
# conservative choice ("按键" is one word, "笑得满地打滚" three); Thai, Lao, Khmer and Burmese
# words are longer in code points (vowel and tone marks are characters of their own).
_SPACELESS = (
    (regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}ー]+"), 2),
    (regex.compile(r"[\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]+"), 4),
)
_LETTER = regex.compile(r"\p{L}")


def count_words(text: str) -> int:
    """Words in `text`: whitespace-separated tokens holding a letter, except that runs of
    spaceless scripts (Han, kana, Thai, ...) count one word per 2 (CJK) or 4 characters, rounded
    up. Numbers, punctuation and emoji alone are not words: "keycap: 4" has one word."""
    count = 0
    if not text.isascii():
        for pattern, chars_per_word in _SPACELESS:
            runs = pattern.findall(text)
            if runs:
                count += sum(math.ceil(len(run) / chars_per_word) for run in runs)
                text = pattern.sub(" ", text)
    return count + sum(1 for token in text.split() if _LETTER.search(token))


@dataclass
class TextFilterConfig:
    """Caption filter options. Defaults keep every language and drop only captions with no word,
    runaway lengths and boilerplate.

    - `languages`: ISO codes as lid.176 names them ('en', 'fr', 'zh', ...); empty keeps all.
    - `min_lang_score`: 0 by default. On short alt texts the top language is right far more often
      than its probability suggests (bench_langid: 95.7% right on 3+ word captions, yet 12% of
      them score under 0.5), so a threshold mostly drops good captions; raise it for purity
      (0.5 keeps 88% of them at 97.5% accuracy).
    - `lang_lexicon`: re-rank fastText's unsure answers with word frequencies (see langid.py).
    - `min_words` / `max_words`, `min_chars` / `max_chars`: see `count_words`; characters are
      code points after collapsing whitespace. 1 word and 1 character keep one-character Chinese
      captions ("猫"); 200 words / 1000 characters: longer alt texts are pasted articles or
      keyword stuffing, and CLIP's 77-token context reads only the first ~300 characters. For
      stricter filtering raise them, e.g. min_words=2, min_chars=5. None = no upper limit.
    - `boilerplate` and `extra_boilerplate`: words or whole captions added to the built-in lists.
    - `text_model`: a fastText classifier (`pipeline textmodel train`); captions whose probability
      of `text_positive_label` (default: the one named at training, else the first of
      good/1/keep/... the model knows) is below `min_text_score` (0.5: the classifier's own
      decision boundary) are dropped.
    """

    languages: list[str] = option(
        default_factory=list,
        sep=",",
        metavar="LANG",
        help="keep only these fastText lid.176 languages, e.g. en,fr (default: all)",
    )
    min_lang_score: float = option(0.0, help="drop captions whose language scores below this")
    lang_lexicon: bool = option(True, help="re-rank unsure language answers with word lists")
    min_words: int = option(1, help="fewest words a caption may have")
    max_words: int | None = option(200, help="most words a caption may have")
    min_chars: int = option(1, help="fewest characters a caption may have")
    max_chars: int | None = option(1000, help="most characters a caption may have")
    boilerplate: bool = option(True, help="drop file names, 'logo', 'click here' and the like")
    extra_boilerplate: list[str] = option(
        default_factory=list, metavar="TEXT", help="more boilerplate words or whole captions"
    )
    text_model: str | None = option(
        None, metavar="FILE", help="fastText caption classifier from `pipeline textmodel train`"
    )
    min_text_score: float = option(0.5, help="drop captions the text model scores below this")
    text_positive_label: str | None = option(None, help="the text model's label for good text")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TextFilterConfig":
        return from_dict(cls, values)

    def __post_init__(self) -> None:
        check_fields(self)
        self.languages = [lang.strip().lower() for lang in self.languages if lang.strip()]
        unknown = [lang for lang in self.languages if lang not in LID_LANGUAGES]
        if unknown:
            raise ConfigError(
                f"--languages: unknown code(s) {', '.join(unknown)}; use ISO codes as lid.176 "
                "names them, e.g. en, fr, de, zh, ja"
            )
        for name in ("min_lang_score", "min_text_score"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1, not {getattr(self, name)}")
        for low, high in (("min_words", "max_words"), ("min_chars", "max_chars")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo < 0 or (hi is not None and hi < lo):
                raise ConfigError(f"need 0 <= {low} <= {high}, got {lo} and {hi}")
        if self.text_model is not None and not location(self.text_model).is_file():
            raise ConfigError(f"--text-model: no such file {self.text_model}")


@dataclass(frozen=True)
class TextVerdict:
    status: str  # 'kept' or a drop reason
    error: str | None  # human-readable detail of a drop; None when kept
    lang: str | None  # ISO code; None for a caption without letters
    lang_score: float
    words: int
    chars: int
    text_score: float | None = None  # None without a text model or for an empty caption


def _length_error(words: int, chars: int, cfg: TextFilterConfig) -> str | None:
    if words < cfg.min_words:
        return f"{words} words < min_words {cfg.min_words}"
    if cfg.max_words is not None and words > cfg.max_words:
        return f"{words} words > max_words {cfg.max_words}"
    if chars < cfg.min_chars:
        return f"{chars} characters < min_chars {cfg.min_chars}"
    if cfg.max_chars is not None and chars > cfg.max_chars:
        return f"{chars} characters > max_chars {cfg.max_chars}"
    return None


def _language_error(lang: str | None, score: float, cfg: TextFilterConfig) -> str | None:
    if cfg.languages and lang not in cfg.languages:
        wanted = ",".join(cfg.languages)
        return f"language {lang or 'unknown'} ({score:.2f}) not among languages {wanted}"
    if score < cfg.min_lang_score:
        return f"language {lang or 'unknown'} scored {score:.2f} < min_lang_score"
    return None


def _verdict(text, lang, lang_score, text_score, cfg, boilerplate) -> TextVerdict:
    words, chars = count_words(text), len(text)

    def make(status: str, error: str | None = None) -> TextVerdict:
        return TextVerdict(status, error, lang, lang_score, words, chars, text_score)

    if not text:
        return make("caption_length", "empty caption")
    why = boilerplate.reason(text) if boilerplate is not None else None
    if why:
        return make("boilerplate_caption", f"boilerplate caption ({why})")
    error = _length_error(words, chars, cfg)
    if error:
        return make("caption_length", error)
    error = _language_error(lang, lang_score, cfg)
    if error:
        return make("language", error)
    if text_score is not None and text_score < cfg.min_text_score:
        return make("low_text_score", f"text score {text_score:.3f} < {cfg.min_text_score}")
    return make(KEPT)


def filter_captions(captions: list[str], config: TextFilterConfig) -> list[TextVerdict]:
    """One verdict per caption, in order. A caption that is not a string counts as empty."""
    texts = [" ".join(c.split()) if isinstance(c, str) else "" for c in captions]
    langs = detect_languages(texts, lexicon=config.lang_lexicon)
    scores: list[float | None] = [None] * len(texts)
    if config.text_model:
        from pipeline.filters.textmodel import score_texts

        idx = [i for i, t in enumerate(texts) if t]
        got = score_texts(config.text_model, [texts[i] for i in idx], config.text_positive_label)
        for i, s in zip(idx, got, strict=True):
            scores[i] = s
    boilerplate = None
    if config.boilerplate:
        boilerplate = BOILERPLATE.extended(config.extra_boilerplate)
    return [
        _verdict(text, lang, lang_score, score, config, boilerplate)
        for text, (lang, lang_score), score in zip(texts, langs, scores, strict=True)
    ]


def verdicts_to_columns(verdicts: list[TextVerdict]) -> dict[str, list]:
    """Columnar form: {'status': [...], 'error': [...], 'lang': [...], ...}."""
    return {f.name: [getattr(v, f.name) for v in verdicts] for f in fields(TextVerdict)}
