"""Benchmark: accuracy and speed of caption language ID on the emoji names in 14 languages.

Each emoji in emoji.jsonl has, per language (en fr de es it pt ko ja zh ru nl pl vi hi), a CLDR
label ("grinning face with big eyes") and tags. Two caption sets:
- `label`: the label alone (short noun phrases: the hard case);
- `label+tags`: "label, tag, tag, ..." (tags that repeat the label left out), a realistic alt text.

Words are counted by `pipeline.filters.text.count_words`: whitespace tokens holding a letter
(numbers and symbols are not words); Han and kana runs count one word per 2 characters, rounded up
("笑得满地打滚" = 3 words, "囲み数字: 4" = 2). Three detectors are compared: fastText alone (top-1
of lid.176.ftz), + the script rule (kana -> ja, Han without kana -> zh), and the pipeline's
default (+ the word-frequency re-ranking).

    .venv/bin/python bench/bench_langid.py --emoji-dir /work/shared/data/emoji
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path


def load_captions(emoji_dir: Path) -> list[tuple[str, str, str]]:
    """(kind, true language, caption) for every emoji, language and caption kind."""
    out = []
    with open(emoji_dir / "emoji.jsonl", encoding="utf-8") as f:
        for line in f:
            for lang, ann in json.loads(line)["annotations"].items():
                label = ann["label"].strip()
                tags = [t for t in ann.get("tags", []) if t.strip() and t.strip() != label]
                out.append(("label", lang, label))
                out.append(("label+tags", lang, ", ".join([label, *tags])))
    return out


def detectors(texts: list[str]) -> dict[str, list[str | None]]:
    from pipeline.filters.langid import detect_languages, load_model, prepare

    prepared = [prepare(t) for t in texts]
    labels, _ = load_model().predict(prepared, k=1)
    return {
        "fasttext": [lab[0].removeprefix("__label__") if lab else None for lab in labels],
        "+script": [lang for lang, _ in detect_languages(texts, lexicon=False)],
        "+lexicon": [lang for lang, _ in detect_languages(texts)],
    }


def accuracy(rows, preds, idx: list[int]) -> float:
    return sum(preds[i] == rows[i][1] for i in idx) / len(idx) if idx else float("nan")


def select(rows, words, kind: str, min_words: int = 0, lang: str | None = None) -> list[int]:
    return [
        i
        for i, r in enumerate(rows)
        if r[0] == kind and words[i] >= min_words and (lang is None or r[1] == lang)
    ]


def report_accuracy(rows, words, results) -> None:
    print("\naccuracy of `lang`")
    print(f"{'captions':<22}{'n':>8}" + "".join(f"{name:>12}" for name in results))
    for kind in ("label", "label+tags"):
        for desc, min_words in (("all", 0), (">=3 words", 3)):
            idx = select(rows, words, kind, min_words)
            cells = "".join(f"{accuracy(rows, p, idx):>12.4f}" for p in results.values())
            print(f"{kind + ' ' + desc:<22}{len(idx):>8}" + cells)


def report_per_language(rows, words, preds) -> None:
    print("\nper language, pipeline default (+lexicon): accuracy (n)")
    print(f"{'lang':<6}{'label >=3 words':>18}{'label all':>18}{'label+tags >=3':>18}  top errors")
    for lang in sorted({r[1] for r in rows}):
        cells = ""
        for kind, min_words in (("label", 3), ("label", 0), ("label+tags", 3)):
            idx = select(rows, words, kind, min_words, lang)
            cells += f"{accuracy(rows, preds, idx):.3f} ({len(idx)})".rjust(18)
        wrong = [i for i in select(rows, words, "label", 3, lang) if preds[i] != lang]
        top = " ".join(f"{k}:{v}" for k, v in Counter(preds[i] for i in wrong).most_common(3))
        print(f"{lang:<6}{cells}  {top}")


def report_thresholds(rows, words, texts) -> None:
    from pipeline.filters.langid import detect_languages

    got = detect_languages(texts)
    idx = select(rows, words, "label", 3)
    print("\nlabel >=3 words, pipeline default: min_lang_score -> share kept, accuracy of kept")
    for th in (0.0, 0.3, 0.5, 0.7, 0.9):
        kept = [i for i in idx if got[i][1] >= th]
        acc = sum(got[i][0] == rows[i][1] for i in kept) / max(1, len(kept))
        print(f"  {th:.1f}: kept {len(kept) / len(idx):.3f}, accuracy {acc:.4f}")
    for min_words in (4, 5):
        sel = select(rows, words, "label", min_words)
        acc = sum(got[i][0] == rows[i][1] for i in sel) / len(sel)
        print(f"label >={min_words} words: accuracy {acc:.4f} (n={len(sel)})")


def report_speed(texts: list[str], repeats: int) -> None:
    from pipeline.filters.langid import detect_languages
    from pipeline.filters.text import TextFilterConfig, filter_captions

    detect_languages(texts)  # model and word lists loaded, outside the timing
    config = TextFilterConfig()
    print(f"\nthroughput, one process, {len(texts)} captions x {repeats}")
    for name, fn in (
        ("detect_languages (fastText + script)", lambda: detect_languages(texts, lexicon=False)),
        ("detect_languages (default, +lexicon)", lambda: detect_languages(texts)),
        ("filter_captions (default config)", lambda: filter_captions(texts, config)),
    ):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        rate = len(texts) * repeats / (time.perf_counter() - start)
        print(f"  {name:<40}{rate:>12,.0f} captions/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emoji-dir", required=True, type=Path, help="folder of emoji.jsonl")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats")
    args = parser.parse_args()
    from pipeline.filters.langid import load_model
    from pipeline.filters.text import count_words

    start = time.perf_counter()
    load_model()
    print(f"lid.176.ftz loaded in {time.perf_counter() - start:.2f} s")
    rows = load_captions(args.emoji_dir)
    texts = [r[2] for r in rows]
    words = [count_words(t) for t in texts]
    results = detectors(texts)
    print(f"{len(rows)} captions, {len({r[1] for r in rows})} languages")
    report_accuracy(rows, words, results)
    report_per_language(rows, words, results["+lexicon"])
    report_thresholds(rows, words, texts)
    report_speed(texts, args.repeats)


if __name__ == "__main__":
    main()
