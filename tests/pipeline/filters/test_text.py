import pytest

from manifests.config import ConfigError
from pipeline.filters.text import (
    TextFilterConfig,
    count_words,
    filter_captions,
    verdicts_to_columns,
)

pytestmark = pytest.mark.timeout(60)

EN = "A red fox standing in the snow"
FR = "Un renard roux debout dans la neige"
DE = "Ein roter Fuchs steht im Schnee"


def test_default_keeps_every_language_and_fills_lang_columns():
    captions = [EN, FR, DE, "雪の中に立つ赤いキツネ", "Рыжая лиса стоит в снегу"]
    verdicts = filter_captions(captions, TextFilterConfig())
    assert [v.status for v in verdicts] == ["kept"] * 5
    assert [v.lang for v in verdicts] == ["en", "fr", "de", "ja", "ru"]
    assert all(v.error is None and v.lang_score > 0.5 for v in verdicts)


def test_languages_keep_only_those():
    verdicts = filter_captions([EN, FR, DE], TextFilterConfig(languages=["en"]))
    assert [v.status for v in verdicts] == ["kept", "language", "language"]
    assert verdicts[1].lang == "fr" and "fr" in verdicts[1].error
    both = filter_captions([EN, FR, DE], TextFilterConfig(languages=["EN", " fr"]))
    assert [v.status for v in both] == ["kept", "kept", "language"]


def test_min_lang_score():
    verdicts = filter_captions([EN, "hello"], TextFilterConfig(min_lang_score=0.9))
    assert verdicts[1].lang_score < 0.9
    assert [v.status for v in verdicts][1] == "language"


def test_word_counts_for_spaced_and_spaceless_scripts():
    assert count_words("a red fox") == 3
    assert count_words("keycap: 4") == 1  # numbers and symbols are not words
    assert count_words("🦊 !!!") == 0
    assert count_words("按键") == 1  # Han and kana: one word per 2 characters, rounded up
    assert count_words("笑得满地打滚") == 3
    assert count_words("囲み数字: 4") == 2
    assert count_words("猫とneko") == 2


LONG = "extraordinarily longwinded incomprehensibilities everywhere"  # 4 words, 59 characters


def test_length_limits():
    cfg = TextFilterConfig(min_words=2, max_words=5, min_chars=5, max_chars=40)
    captions = ["", "   ", "fox", "red fox", "a red fox in the deep snow", "ox a", "🦊🦊🦊", LONG]
    got = filter_captions(captions, cfg)
    assert [v.status for v in got] == [
        "caption_length",
        "caption_length",
        "caption_length",
        "kept",
        "caption_length",
        "caption_length",
        "caption_length",
        "caption_length",
    ]
    assert got[0].error == "empty caption"
    assert "min_words" in got[2].error and "max_words" in got[4].error
    assert "min_chars" in got[5].error and "max_chars" in got[7].error
    default = filter_captions(["猫", "🦊", "fox " * 201], TextFilterConfig())
    assert [v.status for v in default] == ["kept", "caption_length", "caption_length"]


def test_boilerplate_before_length_and_language():
    cfg = TextFilterConfig(languages=["fr"], min_words=3)
    got = filter_captions(["IMG_1234.jpg", "logo", "a logo of a red fox", None], cfg)
    assert [v.status for v in got] == [
        "boilerplate_caption",
        "boilerplate_caption",
        "language",
        "caption_length",
    ]
    assert "file name" in got[0].error
    off = filter_captions(["logo"], TextFilterConfig(boilerplate=False))
    assert off[0].status == "kept"
    extra = filter_captions(["teaser"], TextFilterConfig(extra_boilerplate=["teaser"]))
    assert extra[0].status == "boilerplate_caption"


def test_columns():
    cols = verdicts_to_columns(filter_captions([EN, ""], TextFilterConfig()))
    assert cols["status"] == ["kept", "caption_length"]
    assert cols["lang"] == ["en", None]
    assert set(cols) == {"status", "error", "lang", "lang_score", "words", "chars", "text_score"}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"languages": ["english"]}, "unknown code"),
        ({"languages": "en"}, "list"),
        ({"min_lang_score": 1.5}, "between 0 and 1"),
        ({"min_words": 5, "max_words": 2}, "min_words"),
        ({"max_chars": "100"}, "--max-chars must be int"),
        ({"lang_lexicon": 1}, "--lang-lexicon must be bool"),
        ({"text_model": "/no/such/model.bin"}, "no such file"),
        ({"min_word": 1}, "unknown option"),
    ],
)
def test_config_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        TextFilterConfig.from_dict(values)


def test_config_from_dict():
    cfg = TextFilterConfig.from_dict({"languages": ["en", "fr"], "min_lang_score": 0})
    assert cfg.languages == ["en", "fr"] and cfg.min_lang_score == 0.0
    with pytest.raises(ConfigError, match="--min-words must be a number, not a boolean"):
        TextFilterConfig(min_words=True)
