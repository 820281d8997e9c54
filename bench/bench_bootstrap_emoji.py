"""Benchmark: the bootstrap loop on emoji with web-like caption noise, both models zero-shot.

The Google-style emoji PNGs are served on a loopback server this script starts (and stops); a URL
list (csv url,caption) captions each with its English CLDR label, except a known, seeded fraction
(--mismatch) whose caption is another emoji's label. Then, through the CLIs a user runs:

1. `pipeline build` of the whole list, unfiltered -> `trainer run` clip-tiny on the CPU ->
   `pipeline embed` (embeddings + FAISS index) -> a `pipeline search` example;
2. `pipeline build` into a new folder with `--clip-model <round 1 latest.pt> --clip-top-fraction
   F`; the `low_clip_score` drops are checked against the known mismatched rows (precision,
   recall, ROC AUC of the scores) -> `trainer run` the same model for the same number of samples;
3. `trainer eval` of both checkpoints, zero-shot over the ~1,900 English names, on the
   Twitter-style images (other artists, never trained on) as an ImageFolder eval set.

Scorers (--scorer): `self` scores every pair with the round 1 model, which trained on those very
pairs, mismatched ones included, so it may have memorised them; `crossfit` trains two round 1
models on the two halves of the rows (a seeded split by uid) and lets each score the half it never
saw (two scoring builds, one per half, then round 2 is built from the URL list of the pairs they
kept, with no further filter). Both report how well the scores separate the noise.

    .venv/bin/python bench/bench_bootstrap_emoji.py --emoji-dir /work/shared/data/emoji \
        [--out runs/bench-bootstrap] [--minutes 5] [--mismatch 0.3] [--top-fraction 0.7] \
        [--scorer self|crossfit]
"""

import argparse
import csv
import json
import logging
import random
import shutil
import time
from pathlib import Path

from bench_train_emoji import read_emoji  # this folder is sys.path[0]

log = logging.getLogger("bench_bootstrap")


def add_noise(rows: list[dict], mismatch: float, seed: int) -> None:
    """Caption every row with its label, except round(mismatch * n) seeded rows, which get the
    label of another, randomly drawn emoji (the alt text of some other picture)."""
    rng = random.Random(seed)
    wrong = set(rng.sample(range(len(rows)), round(mismatch * len(rows))))
    for i, row in enumerate(rows):
        other = i
        if i in wrong:
            while other == i:
                other = rng.randrange(len(rows))
        row["caption"] = rows[other]["label"]
        row["matched"] = i not in wrong


def serve(rows: list[dict]):
    """A loopback server of the Google-style PNGs; sets each row's url."""
    from pipeline.loopback import LoopbackServer

    png = {"Content-Type": "image/png"}
    routes = {f"/emoji/{r['image']}": (200, png, r["google"].read_bytes()) for r in rows}
    server = LoopbackServer("127.0.0.1", routes=routes).start()
    for row in rows:
        row["url"] = f"{server.base}emoji/{row['image']}"
    return server


def write_url_list(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url", "caption"])
        writer.writerows((r["url"], r["caption"]) for r in rows)
    return path


def write_eval_set(rows: list[dict], folder: Path) -> Path:
    """The Twitter-style images as ImageFolder classes named by their labels (spaces as
    underscores, which the eval reads back as spaces; no label holds '/' or '_')."""
    for row in rows:
        target = folder / "_".join(row["label"].split()) / row["image"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(row["twitter"].resolve())
    return folder


def cli(main, argv: list, what: str) -> None:
    argv = [str(a) for a in argv]
    log.info("%s %s", what, " ".join(argv))
    if main(argv) != 0:
        raise SystemExit(f"`{what} {argv[0]}` failed; see the log above")


def build(url_list: Path, out: Path, eval_set: Path | None, extra: list = ()) -> Path:
    """`pipeline build` of a URL list; with `eval_set`, the leak check against it too."""
    from pipeline.cli import main

    if eval_set is not None:
        extra = ["--eval-set", eval_set, *extra]

    cli(
        main,
        [
            "build",
            "--url-list",
            url_list,
            "--out",
            out,
            "--allow-network",
            "127.0.0.1/32",
            "--executor",
            "local",
            "--image-size",
            64,
            "--encode-format",
            "png",
            "--timeout",
            10,
            *extra,
        ],
        "pipeline",
    )
    return out


def train(data: Path, run_dir: Path, samples: int, args, where=None, log_every=10) -> Path:
    from trainer.cli import main

    steps = max(1, samples // args.batch_size)
    argv = [
        "run",
        "--data",
        data,
        "--out",
        run_dir,
        "--model",
        "clip-tiny",
        "--samples",
        samples,
        "--batch-size",
        args.batch_size,
        "--lr",
        args.lr,
        "--threads",
        args.threads,
        "--workers",
        1,
        "--shuffle-buffer",
        1000,
        "--warmup",
        max(10, steps // 20),
        "--log-every",
        log_every,
        "--save-every",
        10_000,
        "--seed",
        args.seed,
        "--resume",
    ]
    cli(main, argv + (["--where", where] if where else []), "trainer")
    return run_dir / "latest.pt"


def calibrate(data: Path, out: Path, args) -> float:
    """Seconds per training step here and now: the wall time between the first and the last
    logged step of a short throwaway run (start-up excluded)."""
    from trainer.metrics import read_rows

    shutil.rmtree(out, ignore_errors=True)
    train(data, out, args.batch_size * 25, args, log_every=5)
    history = read_rows(out / "metrics.csv")
    shutil.rmtree(out, ignore_errors=True)
    first, last = history[0], history[-1]
    return (last["elapsed_s"] - first["elapsed_s"]) / (last["step"] - first["step"])


def scores(dataset: Path) -> dict[str, tuple[str, float | None]]:
    """url -> (status, clip_score) of every candidate row."""
    import manifests

    con = manifests.open(dataset)
    return {
        u: (s, c)
        for u, s, c in con.execute("SELECT url, status, clip_score FROM samples").fetchall()
    }


def roc_auc(positive: list[float], negative: list[float]) -> float:
    """P(a matched pair scores above a mismatched one), ties half (Mann-Whitney U)."""
    import numpy as np

    pos, neg = np.asarray(positive), np.asarray(negative)
    if not len(pos) or not len(neg):
        return float("nan")
    above = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(above / (len(pos) * len(neg)))


def filter_quality(by_url: dict, rows: list[dict]) -> dict:
    """The `low_clip_score` drops as a detector of the mismatched captions, over scored rows."""
    scored = [r for r in rows if by_url.get(r["url"], (None, None))[1] is not None]
    wrong = {r["url"] for r in scored if not r["matched"]}
    right = {r["url"] for r in scored if r["matched"]}
    dropped = {u for u, (s, _) in by_url.items() if s == "low_clip_score"}
    caught = len(dropped & wrong)
    return {
        "scored": len(scored),
        "mismatched_scored": len(wrong),
        "dropped": len(dropped),
        "precision": caught / max(1, len(dropped)),
        "recall": caught / max(1, len(wrong)),
        "matched_dropped": len(dropped & right) / max(1, len(right)),
        "roc_auc": roc_auc([by_url[u][1] for u in right], [by_url[u][1] for u in wrong]),
    }


def evaluate(checkpoint: Path, eval_set: Path, data: Path, out: Path, args) -> dict:
    from trainer.cli import main

    cli(
        main,
        [
            "eval",
            "--checkpoint",
            checkpoint,
            "--eval-set",
            eval_set,
            "--data",
            data,
            "--out",
            out,
            "--templates",
            "plain",
            "--no-probe",
            "--no-retrieval",
            "--workers",
            0,
            "--threads",
            args.threads,
        ],
        "trainer",
    )
    return json.loads(out.read_text())[eval_set.name]["zero_shot"]


def training_mix(dataset: Path, rows: list[dict]) -> dict:
    """Kept pairs of a dataset and how many of them carry a mismatched caption."""
    by_url = scores(dataset)
    kept = [r for r in rows if by_url.get(r["url"], ("",))[0] == "kept"]
    wrong = sum(not r["matched"] for r in kept)
    return {"pairs": len(kept), "mismatched": wrong, "noise": wrong / max(1, len(kept))}


def search_example(dataset: Path, rows: list[dict]) -> None:
    from pipeline.cli import main

    labels = {r["label"] for r in rows}
    query = next((q for q in ("red apple", "dog face", "rocket") if q in labels), rows[0]["label"])
    print(f'\n$ pipeline search {dataset} "{query}" -k 5')
    cli(main, ["search", dataset, query, "-k", 5], "pipeline")


FOLD_SQL = "substr(uid, 1, 1) {} '8'"  # halves of the rows by their uid's first hex digit


def crossfit_round2(rows, url_lists: Path, data1: Path, leak: Path | None, samples: int, args):
    """Two round 1 models, each on one half; each scores the other half in a scoring build; round 2
    is built from the pairs both builds kept. Returns (round 2 dataset, url -> (status, score))."""
    from manifests.schema import sample_uid

    by_url = {}
    for fold, (mine, other) in enumerate((("<", ">="), (">=", "<"))):
        scorer = train(
            data1, args.out / f"scorer{fold}", samples // 2, args, where=FOLD_SQL.format(mine)
        )
        scored = [
            r
            for r in rows
            if (int(sample_uid(r["url"], r["caption"])[0], 16) >= 8) == (other == ">=")
        ]
        out = build(
            write_url_list(scored, url_lists / f"fold{fold}.csv"),
            args.out / f"scored{fold}",
            leak,
            ["--clip-model", scorer, "--clip-top-fraction", args.top_fraction],
        )
        by_url.update(scores(out))
    kept = [r for r in rows if by_url.get(r["url"], ("",))[0] == "kept"]
    data2 = build(write_url_list(kept, url_lists / "round2.csv"), args.out / "round2", leak)
    return data2, by_url


def side_by_side(result: dict) -> None:
    one, two = result["round1"], result["round2"]
    quality = result["filter"]
    print(
        f"\nCLIP-score filter ({result['config']['scorer']} scorer, keep the best "
        f"{result['config']['top_fraction']:.0%}) against the {quality['mismatched_scored']} "
        f"known mismatched captions of {quality['scored']} scored pairs:"
    )
    print(
        f"  dropped {quality['dropped']}: precision {quality['precision']:.3f}  recall "
        f"{quality['recall']:.3f}  matched pairs dropped {quality['matched_dropped']:.3f}  "
        f"ROC AUC of the scores {quality['roc_auc']:.3f}"
    )
    n = result["eval"]["classes"]
    print(f"\nzero-shot on the Twitter-style images ({n} names, chance top-1 {1 / n:.2%}):")
    print(f"  {'':<26}{'round 1 (unfiltered)':>22}{'round 2 (CLIP-filtered)':>26}")
    print(f"  {'training pairs':<26}{one['pairs']:>22}{two['pairs']:>26}")
    print(f"  {'  of them mismatched':<26}{one['noise']:>22.1%}{two['noise']:>26.1%}")
    print(f"  {'samples trained':<26}{one['samples']:>22}{two['samples']:>26}")
    for key, name in (
        ("top1", "top-1"),
        ("top5", "top-5"),
        ("mean_per_class_recall", "mean per-class recall"),
    ):
        print(f"  {name:<26}{one['zero_shot'][key]:>22.2%}{two['zero_shot'][key]:>26.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emoji-dir", required=True, type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-bootstrap"))
    parser.add_argument("--minutes", type=float, default=5.0, help="time budget per training run")
    parser.add_argument("--samples", type=int, help="samples per training run (skips calibration)")
    parser.add_argument("--mismatch", type=float, default=0.3, help="fraction of wrong captions")
    parser.add_argument("--top-fraction", type=float, default=0.7, help="--clip-top-fraction")
    parser.add_argument("--scorer", choices=["self", "crossfit"], default="self")
    parser.add_argument(
        "--no-leak-check",
        dest="leak_check",
        action="store_false",
        help="builds skip the leak check against the Twitter-style images",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared machine: 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: the bench starts from nothing; remove it first")
    started = time.perf_counter()
    rows = read_emoji(args.emoji_dir)
    add_noise(rows, args.mismatch, args.seed)
    eval_set = write_eval_set(rows, args.out / "evalsets" / "emoji_twitter")
    server = serve(rows)
    try:
        result = run_loop(rows, eval_set, args)
    finally:
        server.close()
    result["minutes"] = round((time.perf_counter() - started) / 60, 1)
    side_by_side(result)
    path = args.out / "bootstrap.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwritten: {path} ({result['minutes']} min in all)")


def run_loop(rows: list[dict], eval_set: Path, args) -> dict:
    lists = args.out / "urls"
    print(
        f"{len(rows)} emoji; {sum(not r['matched'] for r in rows)} captions "
        f"({args.mismatch:.0%}) replaced by another emoji's label"
    )
    leak = eval_set if args.leak_check else None
    data1 = build(write_url_list(rows, lists / "all.csv"), args.out / "round1", leak)
    samples = args.samples
    if samples is None:
        step_s = calibrate(data1, args.out / "calibration", args)
        samples = max(20, int(args.minutes * 60 / step_s)) * args.batch_size
        print(f"{step_s:.2f} s/step: {samples} samples per training run")
    ckpt1 = train(data1, args.out / "run1", samples, args)
    from pipeline.cli import main as pipeline_main

    cli(pipeline_main, ["embed", data1, "--checkpoint", ckpt1], "pipeline")
    search_example(data1, rows)
    if args.scorer == "self":
        data2 = build(
            write_url_list(rows, lists / "all.csv"),
            args.out / "round2",
            leak,
            ["--clip-model", ckpt1, "--clip-top-fraction", args.top_fraction],
        )
        by_url = scores(data2)
    else:
        data2, by_url = crossfit_round2(rows, lists, data1, leak, samples, args)
    quality = filter_quality(by_url, rows)
    ckpt2 = train(data2, args.out / "run2", samples, args)
    result = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "filter": quality,
        "eval": {"set": str(eval_set), "classes": sum(1 for _ in eval_set.iterdir())},
    }
    for name, data, ckpt in (("round1", data1, ckpt1), ("round2", data2, ckpt2)):
        zero_shot = evaluate(ckpt, eval_set, data, ckpt.parent / "eval.json", args)
        result[name] = {
            "data": str(data),
            "checkpoint": str(ckpt),
            "samples": samples,
            **training_mix(data, rows),
            "zero_shot": zero_shot,
        }
    return result


if __name__ == "__main__":
    main()
