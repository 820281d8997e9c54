"""Benchmark: build a 500,000-query matcher, match captions on one core, balance the matches.

The query list is wordfreq's English words (alphabetic, 2+ letters) topped up with bigrams of
frequent words and synthetic rare tokens; captions are 5-20 words drawn by word frequency, with
some capitalisation and punctuation. Nothing is downloaded.

    .venv/bin/python bench/bench_match.py [--queries 500000] [--captions 200000] [--cap 20000]
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import tempfile
import time

import numpy as np


def build_queries(
    n_queries: int, rng: np.random.Generator
) -> tuple[list[str], list[str], np.ndarray]:
    """(query list, caption vocabulary, vocabulary sampling probabilities)."""
    import wordfreq

    words = [
        w for w in wordfreq.iter_wordlist("en", wordlist="large") if w.isalpha() and len(w) >= 2
    ]
    vocab = words[:50_000]
    freq = np.array([wordfreq.word_frequency(w, "en") for w in vocab])
    queries = list(words[:n_queries])
    seen = {q.casefold() for q in queries}
    top = np.array(words[:5_000], dtype=object)
    while len(queries) < n_queries * 0.9:  # bigrams of frequent words, like CLIP's PMI bigrams
        for a, b in zip(rng.choice(top, 50_000), rng.choice(top, 50_000), strict=True):
            bigram = f"{a} {b}"
            if bigram.casefold() not in seen:
                seen.add(bigram.casefold())
                queries.append(bigram)
    from pipeline.queries import dedupe_queries

    queries = dedupe_queries(queries)  # NFKC case folding merges a few wordfreq spellings
    queries += [f"zq{i:x}k" for i in range(n_queries - len(queries))]  # rare tokens
    return queries[:n_queries], vocab, freq / freq.sum()


def make_captions(
    n: int, vocab: list[str], probs: np.ndarray, rng: np.random.Generator
) -> list[str]:
    vocab_arr = np.array(vocab, dtype=object)
    lengths = rng.integers(5, 21, size=n)
    picks = rng.choice(len(vocab), size=int(lengths.sum()), p=probs)
    captions, pos = [], 0
    for i, length in enumerate(lengths):
        words = list(vocab_arr[picks[pos : pos + length]])
        pos += length
        if i % 3 == 0:
            words[0] = words[0].capitalize()
        if i % 5 == 0:
            words[-1] += "."
        if i % 7 == 0:
            words[len(words) // 2] += ","
        captions.append(" ".join(words))
    return captions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=500_000)
    parser.add_argument("--captions", type=int, default=200_000)
    parser.add_argument("--cap", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):  # one core, so the figure is per core
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from pipeline.balance import balance, count_queries
    from pipeline.queries import QueryMatcher

    rng = np.random.default_rng(args.seed)
    queries, vocab, probs = build_queries(args.queries, rng)
    captions = make_captions(args.captions, vocab, probs, rng)
    t0, c0 = time.perf_counter(), time.process_time()
    matcher = QueryMatcher(queries)
    build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "matcher.pkl")
        t0 = time.perf_counter()
        matcher.save(path)
        save_s = time.perf_counter() - t0
        size_mb = os.path.getsize(path) / 1e6
        t0 = time.perf_counter()
        QueryMatcher.load(path)
        load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pickle.loads(pickle.dumps(matcher))
    pickle_s = time.perf_counter() - t0

    t0, c0 = time.perf_counter(), time.process_time()
    matched = matcher.match_many(captions)
    match_s, match_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    single = [matcher.match(c) for c in captions[: len(captions) // 4]]
    single_s, single_cpu = time.perf_counter() - t0, time.process_time() - c0
    assert single == matched[: len(single)], "match and match_many disagree"
    n_pairs = sum(map(len, matched))

    uids = [f"{i:032x}" for i in range(len(captions))]
    t0 = time.perf_counter()
    counts = count_queries(matched)
    count_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    keep = balance(uids, matched, counts, cap=args.cap, seed=args.seed)
    balance_s = time.perf_counter() - t0
    low_cap = 10  # most queries over the cap: nearly every row needs hashed draws
    t0 = time.perf_counter()
    keep_low = balance(uids, matched, counts, cap=low_cap, seed=args.seed)
    balance_low_s = time.perf_counter() - t0

    n = len(captions)
    print(f"load average:       {os.getloadavg()[0]:.2f} (wall figures suffer on a shared machine)")
    print(
        f"queries:            {len(matcher):,} (build {build_s:.2f} s wall, {build_cpu:.2f} CPU-s, one core)"
    )
    print(
        f"saved matcher:      {size_mb:.1f} MB, save {save_s:.2f} s, load {load_s:.2f} s, "
        f"pickle round trip {pickle_s:.2f} s"
    )
    print(
        f"captions:           {n:,}, {np.mean([len(c.split()) for c in captions]):.1f} words "
        f"on average, {n_pairs / n:.1f} matched queries each"
    )
    print(
        f"match_many:         {n / match_s:,.0f} captions/s wall, {n / match_cpu:,.0f} per CPU-s "
        f"({match_s:.2f} s)"
    )
    n1 = len(single)
    print(
        f"match (one by one): {n1 / single_s:,.0f} captions/s wall, {n1 / single_cpu:,.0f} per "
        f"CPU-s ({single_s:.2f} s for {n1:,})"
    )
    print(f"count_queries:      {n / count_s:,.0f} rows/s ({count_s:.2f} s)")
    print(
        f"balance cap={args.cap:<7,} {n / balance_s:,.0f} rows/s ({balance_s:.2f} s), "
        f"kept {keep.mean():.1%}"
    )
    print(
        f"balance cap={low_cap:<7,} {n / balance_low_s:,.0f} rows/s ({balance_low_s:.2f} s), "
        f"kept {keep_low.mean():.1%}"
    )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory:        {rss_mb:,.0f} MB (whole benchmark process)")


if __name__ == "__main__":
    main()
