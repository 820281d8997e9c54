"""A user's fastText text-quality classifier: training (`pipeline textmodel train`) and scoring.

Labelled input, one example a line, in either form:
- fastText: `__label__good a red fox in the snow` / `__label__bad click here to buy`;
- CSV or TSV with a header naming a `text` (or `caption`) column and a `label` column.

A caption's `text_score` is the model's probability of the positive label: the one named when
scoring, else the one named at training (kept in `MODEL.bin.json` beside the model with the
metrics), else the first of POSITIVE_LABELS the model knows. Training holds out a stratified
split and reports precision and recall on it; the saved model is the one those figures describe.
"""

import csv
import functools
import io
import json
import logging
import os
import random
import tempfile
from collections import Counter
from pathlib import Path

from manifests.config import ConfigError
from manifests.layout import atomic_path, write_bytes_atomic

log = logging.getLogger(__name__)

POSITIVE_LABELS = ("good", "1", "keep", "positive", "pos", "true", "yes", "clean", "high")
FORMATS = ("fasttext", "csv", "tsv")
_PREFIX = "__label__"


class TextModelError(ConfigError):
    """A labelled file or model that cannot be used; the message says why."""


def _one_line(text: str) -> str:
    # Lone surrogates cannot cross into fastText (UTF-8 only): they become '?'.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return " ".join(text.split())


def _check_label(label: str, where: str) -> str:
    label = label.strip()
    if not label:
        raise TextModelError(f"{where}: empty label")
    if any(c.isspace() for c in label):
        raise TextModelError(f"{where}: label {label!r} contains whitespace")
    return label


def _read_fasttext(lines: list[str], name: str) -> list[tuple[str, str]]:
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{name} line {n}"
        head, _, text = line.strip().partition(" ")
        if not head.startswith(_PREFIX):
            raise TextModelError(f"{where}: expected '__label__<label> <text>', got {line[:60]!r}")
        if text.lstrip().startswith(_PREFIX):
            raise TextModelError(f"{where}: one label per line, got several")
        if not text.strip():
            raise TextModelError(f"{where}: label without text")
        rows.append((_one_line(text), _check_label(head[len(_PREFIX) :], where)))
    return rows


def _read_table(content: str, name: str, delimiter: str) -> list[tuple[str, str]]:
    reader = csv.DictReader(io.StringIO(content, newline=""), delimiter=delimiter)
    header = {(h or "").strip().lower(): h for h in reader.fieldnames or []}
    text_col = header.get("text") or header.get("caption")
    label_col = header.get("label")
    if text_col is None or label_col is None:
        raise TextModelError(
            f"{name}: the header must name a 'text' (or 'caption') column and a 'label' column; "
            f"found {sorted(header)}"
        )
    rows = []
    for row in reader:
        where = f"{name} line {reader.line_num}"
        if None in row:
            raise TextModelError(f"{where}: more fields than the header names")
        text = _one_line(row.get(text_col) or "")
        if not text:
            raise TextModelError(f"{where}: empty text")
        rows.append((text, _check_label(row.get(label_col) or "", where)))
    return rows


def _sniff(path: Path, first: str) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("csv", "tsv"):
        return suffix
    if first.startswith(_PREFIX):
        return "fasttext"
    if "\t" in first:
        return "tsv"
    if "," in first:
        return "csv"
    raise TextModelError(
        f"{path}: cannot tell its format; expected fastText lines ('__label__good some text') "
        "or a CSV/TSV file with 'text' and 'label' columns"
    )


def read_labelled(path: str | os.PathLike, fmt: str | None = None) -> list[tuple[str, str]]:
    """(text, label) pairs of a labelled file; `fmt` is one of FORMATS or None to detect it."""
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise TextModelError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    try:
        content = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise TextModelError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TextModelError(f"{path}: is a directory, not a labelled file") from None
    except UnicodeDecodeError as exc:
        raise TextModelError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    lines = content.splitlines()
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise TextModelError(f"{path}: empty file")
    fmt = fmt or _sniff(path, first)
    try:
        if fmt == "fasttext":
            return _read_fasttext(lines, str(path))
        return _read_table(content, str(path), "," if fmt == "csv" else "\t")
    except csv.Error as exc:
        raise TextModelError(f"{path}: bad {fmt.upper()}: {exc}") from None


def resolve_positive_label(labels, positive_label: str | None = None) -> str:
    labels = [label.removeprefix(_PREFIX) for label in labels]
    if positive_label is not None:
        if positive_label not in labels:
            raise TextModelError(
                f"positive label {positive_label!r} is not among the labels {sorted(labels)}"
            )
        return positive_label
    for candidate in POSITIVE_LABELS:
        if candidate in labels:
            return candidate
    raise TextModelError(
        f"none of the labels {sorted(labels)} is a known positive label "
        f"({', '.join(POSITIVE_LABELS)}); name one with --positive-label"
    )


def _split(rows, test_fraction: float, seed: int):
    """Stratified, seeded split: each label gives round(fraction * n) rows (at least 1) to test."""
    by_label: dict[str, list] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    rng = random.Random(seed)
    train, test = [], []
    for label in sorted(by_label):
        group = by_label[label]
        if len(group) < 2:
            raise TextModelError(f"label {label!r} has {len(group)} example; need at least 2")
        rng.shuffle(group)
        n_test = min(len(group) - 1, max(1, round(test_fraction * len(group))))
        test += group[:n_test]
        train += group[n_test:]
    rng.shuffle(train)
    return train, test


def _metrics(scores: list[float], truth: list[bool], threshold: float = 0.5) -> dict:
    pred = [s >= threshold for s in scores]
    tp = sum(p and t for p, t in zip(pred, truth, strict=True))
    fp = sum(p and not t for p, t in zip(pred, truth, strict=True))
    fn = sum(t and not p for p, t in zip(pred, truth, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(2 * precision * recall / (precision + recall), 4) if tp else 0.0,
        "accuracy": round(sum(p == t for p, t in zip(pred, truth, strict=True)) / len(truth), 4),
        "auc": _auc(scores, truth),
    }


def _auc(scores: list[float], truth: list[bool]) -> float | None:
    """The chance that a random positive outscores a random negative (ties count half), from
    the rank sum of the positives (Mann-Whitney U); None without both classes."""
    n_pos = sum(truth)
    n_neg = len(truth) - n_pos
    if not n_pos or not n_neg:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum, i = 0.0, 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mean_rank = (i + j) / 2 + 1  # tied scores share their mean rank
        rank_sum += mean_rank * sum(truth[order[k]] for k in range(i, j + 1))
        i = j + 1
    return round((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg), 4)


def train_text_model(
    labelled_file: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    epochs: int = 25,
    lr: float = 0.2,  # 0.5 sometimes diverged (NaN) on small labelled files
    word_ngrams: int = 2,
    dim: int = 50,
    char_ngrams: tuple[int, int] = (0, 0),
    bucket: int = 200_000,
    positive_label: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    threads: int | None = None,
    fmt: str | None = None,
) -> dict:
    """Train a fastText classifier on `labelled_file`, save it to `out_path`, and return metrics
    of the positive label on the held-out split: precision, recall, f1, accuracy (at score 0.5),
    auc, plus counts. `bucket` x `dim` floats hold the word n-grams (200k x 50: 40 MB)."""
    import fasttext

    if epochs < 1 or lr <= 0 or dim < 1 or word_ngrams < 1 or not 0 < test_fraction < 1:
        raise TextModelError(
            "need epochs >= 1, lr > 0, dim >= 1, word_ngrams >= 1, 0 < test_fraction < 1"
        )
    rows = read_labelled(labelled_file, fmt)
    counts = Counter(label for _, label in rows)
    if len(counts) < 2:
        raise TextModelError(f"{labelled_file}: need at least two labels, found {sorted(counts)}")
    positive = resolve_positive_label(counts, positive_label)
    train, test = _split(rows, test_fraction, seed)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(dir=out_path.parent) as tmp,
        atomic_path(out_path) as model_path,
    ):
        train_file = Path(tmp) / "train.txt"
        train_file.write_text("".join(f"{_PREFIX}{lab} {txt}\n" for txt, lab in train), "utf-8")
        options = dict(
            input=str(train_file),
            epoch=epochs,
            wordNgrams=word_ngrams,
            dim=dim,
            minn=char_ngrams[0],
            maxn=char_ngrams[1],
            bucket=bucket,
            minCount=1,
            loss="softmax",
            seed=seed,
            thread=threads or os.cpu_count() or 1,
            verbose=0,
        )
        _train_supervised(options, lr, model_path)
        model = fasttext.load_model(str(model_path))
    scores = _positive_probs(model, [t for t, _ in test], positive)
    metrics = _metrics(scores, [lab == positive for _, lab in test])
    metrics.update(
        positive_label=positive,
        labels=dict(sorted(counts.items())),
        n_train=len(train),
        n_test=len(test),
        model=str(out_path),
    )
    write_bytes_atomic(json.dumps(metrics, indent=1).encode("utf-8"), _sidecar(out_path))
    log.info("text model %s: %s", out_path, metrics)
    return metrics


def _sidecar(model_path: str | os.PathLike):
    from manifests.storage import location

    return location(f"{model_path}.json")  # a str: Path() would fold an s3:// URI


def _trained_positive_label(model_path: str | os.PathLike) -> str | None:
    try:
        from manifests.storage import location

        return json.loads(location(_sidecar(model_path)).read_text()).get("positive_label")
    except (OSError, ValueError, AttributeError):
        return None


def _train_and_save(options: dict, lr: float, path: str) -> None:
    import fasttext

    fasttext.train_supervised(lr=lr, **options).save_model(path)


def _train_supervised(options: dict, lr: float, path: Path, attempts: int = 4) -> None:
    """Train and save to `path` in a fresh process. fastText's SGD diverged ("Encountered NaN")
    on a small file at every learning rate inside the test suite's long-lived process (after
    torch and FAISS work in it), not when the same test ran alone; a child process also keeps a
    fastText abort from taking the caller down. On NaN, retry at half the learning rate."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    for attempt in range(attempts):
        try:
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                pool.submit(_train_and_save, options, lr, str(path)).result()
            return
        except RuntimeError as exc:
            if "NaN" not in str(exc) or attempt == attempts - 1:
                raise TextModelError(
                    f"fastText training failed: {exc} (try a lower --lr)"
                ) from None
            log.warning("fastText diverged at lr %g; retrying at %g", lr, lr / 2)
            lr /= 2
    raise AssertionError("unreachable")


def _positive_probs(model, texts: list[str], positive: str) -> list[float]:
    if not texts:
        return []
    labels, probs = model.predict([_one_line(t) for t in texts], k=-1, threshold=0.0)
    key = _PREFIX + positive
    out = []
    for labs, ps in zip(labels, probs, strict=True):
        got = dict(zip(labs, ps, strict=True))
        out.append(float(got.get(key, 0.0)))
    return out


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int):
    import fasttext

    try:
        return fasttext.load_model(path)
    except ValueError as exc:  # fastText's message for a file that is not a model
        raise TextModelError(f"{path}: not a fastText model ({exc})") from None


def load_text_model(path: str | os.PathLike):
    """The fastText model at `path`, loaded once per process (reloaded if the file changes)."""
    from manifests.storage import cached_local

    try:
        path = os.fspath(cached_local(path))  # a model in an object store: fetched once
        mtime = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        raise TextModelError(f"{path}: no such text model") from None
    return _load(path, mtime)


def score_texts(
    model_path: str | os.PathLike, texts: list[str], positive_label: str | None = None
) -> list[float]:
    """Probability of the positive label for each text (0.0 for a text with no word)."""
    model = load_text_model(model_path)
    positive = resolve_positive_label(
        model.get_labels(), positive_label or _trained_positive_label(model_path)
    )
    lines = [_one_line(t) for t in texts]
    idx = [i for i, line in enumerate(lines) if line]
    scores = [0.0] * len(lines)
    for i, s in zip(idx, _positive_probs(model, [lines[i] for i in idx], positive), strict=True):
        scores[i] = s
    return scores


def add_textmodel_train_arguments(parser) -> None:
    """Flags of `pipeline textmodel train`."""
    parser.add_argument("--input", required=True, metavar="FILE", help="labelled file")
    parser.add_argument("--out", required=True, metavar="MODEL.bin")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--word-ngrams", type=int, default=2)
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument(
        "--positive-label", help="label of good captions (default: good, 1, keep, ...)"
    )
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="default: all cores")
    parser.add_argument("--format", choices=FORMATS, help="default: from the file")


def cmd_textmodel_train(args) -> int:
    """Train from parsed arguments; print the held-out metrics as JSON (bad input: a
    TextModelError, which the CLI prints as one line with exit status 2)."""
    metrics = train_text_model(
        args.input,
        args.out,
        epochs=args.epochs,
        lr=args.lr,
        word_ngrams=args.word_ngrams,
        dim=args.dim,
        positive_label=args.positive_label,
        test_fraction=args.test_fraction,
        seed=args.seed,
        threads=args.threads,
        fmt=args.format,
    )
    print(json.dumps(metrics, indent=1))
    return 0
