"""Benchmark: zero-shot vs k-shot linear probes on Twitter-style emoji, as in CLIP's Figure 6.

Takes a checkpoint trained by bench/bench_train_emoji.py (clip-tiny on the Google-style images,
captioned with their English CLDR names) and evaluates it through `trainer eval`'s code on the
Twitter-style images (another artist: never seen in training) as ImageFolder eval sets:

- `subcategory`: classes are the 99 Unicode emoji subcategories ("animal-mammal" read as
  "animal mammal"); zero-shot with each template set given, then linear probes on the frozen image
  features, full and k-shot (k = 1, 2, 4, 8, 16, several seeds) on a seeded stratified half of the
  images, tested on the other half, and the k at which the probe matches zero-shot.
- `name`: classes are the distinct English names (about 1,900, one Twitter image each); zero-shot,
  and a 1-shot probe trained on the Google-style image of each name (`--probe-train`).

    .venv/bin/python bench/bench_eval_emoji.py --emoji-dir /work/shared/data/emoji \
        --checkpoint runs/bench-emoji/run/latest.pt [--out runs/bench-emoji/eval] \
        [--templates plain,generic,imagenet80] [--seeds 5] [--modes subcategory,name]
"""

import argparse
import logging
import tempfile
import time
from pathlib import Path

from bench_train_emoji import read_emoji  # bench/ is sys.path[0] when a bench runs


def folder_name(text: str) -> str:
    """A class folder whose label text (underscores read as spaces) is `text`."""
    return "_".join(text.replace("/", " ").replace("-", " ").split())


def image_folder(root: Path, rows: list[dict], style_dir: Path, key: str) -> Path:
    """root/<class>/<image>.png as symlinks to the emoji artwork of one style."""
    for row in rows:
        source = style_dir / row["image"]
        if not source.exists():
            continue
        target = root / folder_name(row[key]) / row["image"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(source.resolve())
    return root


def evaluate(
    checkpoint,
    eval_dir,
    templates,
    seeds,
    probe=True,
    probe_train=None,
    workers=1,
    shots="1,2,4,8,16",
):
    from trainer.evaluation.cli import EvalOptions, evaluate

    opts = EvalOptions(
        checkpoint=str(checkpoint),
        eval_set=[str(eval_dir)],
        templates=templates,
        workers=workers,
        probe=probe,
        probe_seeds=seeds,
        probe_shots=shots,
        probe_train=[str(probe_train)] if probe_train else [],
        batch_size=256,
    )
    return evaluate(opts)


def pct(x) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f}"


def report_subcategory(results, name: str) -> None:
    r = results[name]
    probe = r["linear_probe"]
    print(
        f"  linear probe on frozen features ({probe['split']['method']}: "
        f"{probe['split']['n_train']} train, {probe['split']['n_val']} val, "
        f"{probe['split']['n_test']} test images):"
    )
    print(f"    zero-shot on the probe's test split: top-1 {pct(probe['zero_shot_top1_test'])}%")
    for k, s in probe["k_shot"].items():
        print(
            f"    {k:>2}-shot: top-1 {pct(s['top1_mean'])}% ± {100 * s['top1_std']:.1f} "
            f"over {len(s['top1'])} seeds ({s['short_classes']} classes with fewer than "
            f"{k} train images)"
        )
    print(
        f"    full probe ({probe['full']['n_train']} images, C={probe['full']['C']:g}): "
        f"top-1 {pct(probe['top1'])}%"
    )
    m = probe["k_match"]
    if m["first"] is None:
        print(f"    the probe matches zero-shot at no k up to {list(probe['k_shot'])[-1]}")
    elif m["bound"] == "at_most":
        print(f"    the probe matches zero-shot already at k = {m['first']} (k <= {m['first']})")
    else:
        print(
            f"    the probe matches zero-shot at k = {m['interpolated']:.2f} "
            f"(log-interpolated; first k reaching it: {m['first']}); CLIP's ImageNet-scale "
            "finding: 4"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emoji-dir", required=True, type=Path)
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/bench-emoji/run/latest.pt"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench-emoji/eval"))
    parser.add_argument(
        "--templates",
        default="plain,generic,imagenet80",
        help="template sets for zero-shot; the first is compared with the probes",
    )
    parser.add_argument("--seeds", type=int, default=5, help="k-shot draws per k")
    parser.add_argument("--modes", default="subcategory,name")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared machine: 1)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.checkpoint.is_file():
        raise SystemExit(
            f"no checkpoint at {args.checkpoint}: train one with "
            "bench/bench_train_emoji.py, or pass --checkpoint"
        )
    import torch

    from trainer.evaluation.report import markdown, write_all

    torch.set_num_threads(args.threads)
    rows = read_emoji(args.emoji_dir)
    templates = [t for t in args.templates.split(",") if t]
    modes = [m for m in args.modes.split(",") if m]
    twitter, google = args.emoji_dir / "twitter", args.emoji_dir / "google"
    print(f"checkpoint {args.checkpoint}; {len(rows)} emoji; Twitter-style images as eval sets")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            key = {"subcategory": "subcategory", "name": "name"}[mode]
            eval_dir = image_folder(Path(tmp) / f"emoji_{mode}", rows, twitter, key)
            train_dir = image_folder(Path(tmp) / "google" / f"emoji_{mode}", rows, google, key)
            n_classes = sum(1 for _ in eval_dir.iterdir())
            print(f"\n[{mode}] {n_classes} classes (chance top-1 {100 / n_classes:.2f}%)")
            for i, spec in enumerate(templates):
                t0 = time.perf_counter()
                probe = i == 0
                results, meta = evaluate(
                    args.checkpoint,
                    eval_dir,
                    spec,
                    args.seeds,
                    probe=probe,
                    probe_train=train_dir if mode == "name" else None,
                    workers=args.workers,
                    shots="1,2,4,8,16" if mode == "subcategory" else "1",
                )
                zs = results[eval_dir.name]["zero_shot"]
                print(
                    f"  zero-shot, {spec} ({meta['n_templates']} templates): top-1 "
                    f"{pct(zs['top1'])}%  top-5 {pct(zs['top5'])}%  mean per-class recall "
                    f"{pct(zs['mean_per_class_recall'])}%  [{time.perf_counter() - t0:.0f} s]"
                )
                if probe and mode == "subcategory":
                    report_subcategory(results, eval_dir.name)
                elif probe:
                    p = results[eval_dir.name]["linear_probe"]
                    print(
                        f"  1-shot probe trained on the Google-style image of each name: "
                        f"top-1 {pct(p.get('top1'))}% (zero-shot on the same images "
                        f"{pct(p.get('zero_shot_top1_test'))}%)"
                    )
                if probe:
                    written = write_all(args.out / f"emoji_{mode}.json", results, meta)
                    print(f"  written: {', '.join(str(p) for p in written.values())}")
                    logging.debug(markdown(results, meta))


if __name__ == "__main__":
    main()
