import argparse
import json
import random

import pytest

from pipeline.filters.text import TextFilterConfig, filter_captions
from pipeline.filters.textmodel import (
    TextModelError,
    add_textmodel_train_arguments,
    cmd_textmodel_train,
    read_labelled,
    score_texts,
    train_text_model,
)

pytestmark = pytest.mark.timeout(60)

ANIMALS = ["dog", "cat", "fox", "horse", "rabbit", "owl", "deer", "duck", "goat", "bear"]
COLOURS = ["brown", "white", "black", "red", "grey", "spotted", "striped", "small", "young", "old"]
PLACES = ["on the beach", "in the snow", "in a green field", "under a tree", "by the river"]
SPAM = ["buy now", "cheap", "discount", "free shipping", "best price", "click", "order today"]
SPAM += ["sale", "deal", "limited offer"]
FAST = {"epochs": 30, "dim": 16, "bucket": 20_000, "threads": 1, "lr": 0.2}


def good(rng):
    return f"a {rng.choice(COLOURS)} {rng.choice(ANIMALS)} {rng.choice(PLACES)}"


def bad(rng):
    return " ".join(rng.sample(SPAM, 4))


def examples(n: int, seed: int):
    rng = random.Random(seed)
    return [(good(rng), "good") for _ in range(n)] + [(bad(rng), "bad") for _ in range(n)]


def write_fasttext(path, rows):
    path.write_text("".join(f"__label__{label} {text}\n" for text, label in rows), "utf-8")
    return path


def test_train_fasttext_format_and_score_held_out(tmp_path):
    data = write_fasttext(tmp_path / "labels.txt", examples(40, seed=1))
    metrics = train_text_model(data, tmp_path / "m" / "model.bin", **FAST)
    assert (tmp_path / "m" / "model.bin").is_file()
    assert metrics["positive_label"] == "good"
    assert metrics["labels"] == {"bad": 40, "good": 40}
    assert metrics["n_train"] + metrics["n_test"] == 80 and metrics["n_test"] == 16
    assert metrics["precision"] >= 0.8 and metrics["recall"] >= 0.8 and metrics["auc"] >= 0.9
    held_out = examples(10, seed=99)  # combinations the model has not seen
    scores = score_texts(tmp_path / "m" / "model.bin", [t for t, _ in held_out])
    good_scores, bad_scores = scores[:10], scores[10:]
    assert min(good_scores) > max(bad_scores)
    assert all(0.0 <= s <= 1.0 for s in scores)
    odd = score_texts(tmp_path / "m" / "model.bin", ["", "a fox\ud800 on\nthe beach"])
    assert odd[0] == 0.0 and odd[1] > 0.5


def test_tsv_csv_and_text_filter(tmp_path):
    rows = [(t, "1" if lab == "good" else "0") for t, lab in examples(30, seed=2)]
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("label\ttext\n" + "".join(f"{lab}\t{t}\n" for t, lab in rows), "utf-8")
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("Text,Label\n" + "".join(f'"{t}, really",{lab}\n' for t, lab in rows))
    assert read_labelled(csv_file)[0][0].endswith(", really")
    metrics = train_text_model(tsv, tmp_path / "tsv.bin", **FAST)
    assert metrics["positive_label"] == "1"
    train_text_model(csv_file, tmp_path / "csv.bin", positive_label="0", **FAST)

    cfg = TextFilterConfig(text_model=str(tmp_path / "tsv.bin"), min_text_score=0.5)
    captions = ["a white owl in the snow", "cheap discount buy now sale"]
    verdicts = filter_captions(captions, cfg)
    assert [v.status for v in verdicts] == ["kept", "low_text_score"]
    assert verdicts[0].text_score > 0.5 > verdicts[1].text_score
    assert "text score" in verdicts[1].error
    flipped = filter_captions(captions, TextFilterConfig(text_model=str(tmp_path / "csv.bin")))
    assert [v.status for v in flipped] == ["low_text_score", "kept"]  # trained with '0' positive
    assert json.loads((tmp_path / "csv.bin.json").read_text())["positive_label"] == "0"
    named = TextFilterConfig(text_model=str(tmp_path / "csv.bin"), text_positive_label="1")
    assert [v.status for v in filter_captions(captions, named)] == ["kept", "low_text_score"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("a.txt", "", "empty file"),
        ("a.txt", "__label__good a fox\nno label here\n", "line 2: expected '__label__"),
        ("a.txt", "__label__good\n__label__bad spam\n", "line 1: label without text"),
        ("a.txt", "__label__good __label__ok a fox\n", "one label per line"),
        ("a.txt", "just some words\nmore words\n", "cannot tell its format"),
        ("a.csv", "caption_text,label\nfox,good\n", "'text' \\(or 'caption'\\) column"),
        ("a.csv", "text,label\nfox,good\n,bad\n", "line 3: empty text"),
        ("a.tsv", "text\tlabel\nfox\t\n", "empty label"),
        ("a.tsv", "text\tlabel\nfox\tvery good\n", "contains whitespace"),
        ("a.csv", "text,label\nfox,good,extra\n", "more fields"),
        ("a.txt", "__label__good a fox\n__label__good a cat\n", "at least two labels"),
        ("a.txt", "__label__yes a fox\n__label__no spam\n", "has 1 example"),
        (
            "a.txt",
            "__label__fine a fox\n__label__fine owl\n__label__meh x\n__label__meh y\n",
            "known positive",
        ),
    ],
)
def test_bad_labelled_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, "utf-8")
    with pytest.raises(TextModelError, match=message):
        train_text_model(path, tmp_path / "model.bin", **FAST)
    assert not (tmp_path / "model.bin").exists()


def test_bad_inputs_and_models(tmp_path):
    with pytest.raises(TextModelError, match="no such file"):
        read_labelled(tmp_path / "missing.txt")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("__label__good caf\xe9\n".encode("latin-1"))
    with pytest.raises(TextModelError, match="not UTF-8"):
        read_labelled(latin1)
    data = write_fasttext(tmp_path / "l.txt", examples(5, seed=3))
    with pytest.raises(TextModelError, match="positive label 'great'"):
        train_text_model(data, tmp_path / "m.bin", positive_label="great", **FAST)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model")
    with pytest.raises(TextModelError, match="not a fastText model"):
        score_texts(junk, ["a fox"])


def test_cli_command(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_textmodel_train_arguments(parser)
    data = write_fasttext(tmp_path / "l.txt", examples(20, seed=4))
    args = parser.parse_args(
        ["--input", str(data), "--out", str(tmp_path / "m.bin"), "--epochs", "10", "--threads", "1"]
    )
    assert cmd_textmodel_train(args) == 0
    assert json.loads(capsys.readouterr().out)["positive_label"] == "good"
    from pipeline.cli import main

    argv = [
        "textmodel",
        "train",
        "--input",
        str(tmp_path / "none.txt"),
        "--out",
        str(tmp_path / "x"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pipeline textmodel: error:") and "no such file" in err
