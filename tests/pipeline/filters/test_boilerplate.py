import pytest

from pipeline.filters.boilerplate import BOILERPLATE, BOILERPLATE_WORDS

pytestmark = pytest.mark.timeout(60)

BOILERPLATE_CAPTIONS = [
    "IMG_1234.jpg",
    "DSC01234",
    "dsc_0042.JPG",
    "IMG_20230101_123456",
    "IMG-20190101-WA0001",
    "PXL_20230612_101112345",
    "Screenshot 2023-01-01 at 10.00.00",
    "image.png",
    "spacer.gif",
    "photo",
    "Photo",
    "  LOGO  ",
    "logo.",
    "click here",
    "Click here!",
    "spacer",
    "banner",
    "thumbnail",
    "untitled",
    "Untitled-1",
    "image",
    "picture",
    "icon",
    "1x1",
    "300x250",
    "300 x 250",
    "728×90 banner",
    "https://example.org/a/b.jpg",
    "www.example.com",
    "example.com/path/to/image",
    "data:image/png;base64,iVBORw0KGgo=",
    "12345",
    "2023-01-01",
    "d41d8cd98f00b204e9800998ecf8427e",
    "123e4567-e89b-12d3-a456-426614174000",
    "Loading...",
    "placeholder",
    "image 1",
    "Photo (2)",
    "white logo",
    "company logo",
    "no image available",
    "image not found",
    "click to enlarge",
    "read more",
    "图片",
    "Foto",
]

REAL_CAPTIONS = [
    "a logo of a red fox",
    "Red fox logo on a white t-shirt",
    "Banner Elk, North Carolina",
    "Icon of the Virgin Mary, 16th century",
    "Photo of a cat sleeping on a sofa",
    "Thumbnail sketch of a suspension bridge",
    "Untitled (Blue) by Mark Rothko",
    "Click Here (Blink-182 song) single cover",
    "2001: A Space Odyssey poster",
    "Room 101",
    "300 Spartans at Thermopylae",
    "Node.js",
    "iPhone 15 Pro in blue",
    "猫的图片",
    "Ein Foto vom Strand",
    "Loading dock at the port of Hamburg",
    "fox",
    "猫",
]


@pytest.mark.parametrize("caption", BOILERPLATE_CAPTIONS)
def test_boilerplate(caption):
    assert BOILERPLATE.reason(caption) is not None


@pytest.mark.parametrize("caption", REAL_CAPTIONS)
def test_not_boilerplate(caption):
    assert BOILERPLATE.reason(caption) is None


def test_reasons_say_what_kind():
    assert BOILERPLATE.reason("IMG_1234.jpg") == "file name"
    assert BOILERPLATE.reason("DSC01234") == "camera file name"
    assert BOILERPLATE.reason("https://example.org/x") == "url"
    assert BOILERPLATE.reason("300x250") == "number or size"
    assert BOILERPLATE.reason("logo") == "generic words"
    assert BOILERPLATE.reason("") is None


def test_extended_lists():
    custom = BOILERPLATE.extended(["Product Shot", "teaser"])
    assert custom.reason("product shot!") == "boilerplate phrase"
    assert custom.reason("Teaser 2") == "generic words"
    assert custom.reason("a teaser for the film") is None
    assert BOILERPLATE.reason("teaser") is None  # the default is unchanged
    assert "teaser" not in BOILERPLATE_WORDS
