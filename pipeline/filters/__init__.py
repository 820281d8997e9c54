"""Filters of the build: caption (text) filters for now. Importing this package is light; fastText
and wordfreq load on first use."""

from pipeline.filters.boilerplate import BOILERPLATE, BOILERPLATE_WORDS, FILLER_WORDS, Boilerplate
from pipeline.filters.langid import detect_languages
from pipeline.filters.text import (
    TextFilterConfig,
    TextVerdict,
    count_words,
    filter_captions,
    verdicts_to_columns,
)
from pipeline.filters.textmodel import (
    TextModelError,
    cmd_textmodel_train,
    score_texts,
    train_text_model,
)

__all__ = [
    "BOILERPLATE",
    "BOILERPLATE_WORDS",
    "FILLER_WORDS",
    "Boilerplate",
    "TextFilterConfig",
    "TextModelError",
    "TextVerdict",
    "cmd_textmodel_train",
    "count_words",
    "detect_languages",
    "filter_captions",
    "score_texts",
    "train_text_model",
    "verdicts_to_columns",
]
