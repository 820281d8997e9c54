"""Benchmark: train clip-tiny on CPU on emoji, test retrieval on another artist's emoji.

Builds a dataset (the pipeline's layout, the tests' writer) from the Google-style images, each
captioned with its English CLDR name (annotations.en.label, e.g. "grinning face with big eyes"),
trains clip-tiny from scratch through `trainer run` within a time budget, and reports image->text
retrieval over all the distinct names on the Twitter-style images of the same emoji (drawn by
other artists, never seen in training), against chance, plus the same on the training images.
The training curves are written as PNG; the checkpoint path is printed for the evaluation bench.

    .venv/bin/python bench/bench_train_emoji.py --emoji-dir /work/shared/data/emoji \
        [--out runs/bench-emoji] [--minutes 12] [--batch-size 128] [--threads 1]
"""

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch
from PIL import Image

from pipeline.testing.toydata import write_dataset


def read_emoji(emoji_dir: Path) -> list[dict]:
    """One row per emoji drawn in both styles: its English CLDR label (also as `name`), Unicode
    subcategory, file name, both paths."""
    rows = []
    with open(emoji_dir / "emoji.jsonl", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            label = (record.get("annotations", {}).get("en") or {}).get("label")
            label = label or record["name"].lower()
            google, twitter = (
                emoji_dir / "google" / record["image"],
                emoji_dir / "twitter" / record["image"],
            )
            if google.exists() and twitter.exists():
                rows.append(
                    {
                        "label": label,
                        "name": label,
                        "subcategory": record["subcategory"],
                        "image": record["image"],
                        "google": google,
                        "twitter": twitter,
                    }
                )
    return rows


def build(rows: list[dict], root: Path) -> Path:
    if (root / "run.json").exists():
        return root
    pairs = [(Image.open(r["google"]).convert("RGBA"), r["label"]) for r in rows]
    return write_dataset(
        root, pairs, image_format="png", shard_rows=1000, group_rows=1000, dropped=0
    )


def trainer_run(argv: list) -> None:
    from trainer.cli import main

    code = main(["run", *map(str, argv)])
    if code != 0:
        raise SystemExit(f"trainer run failed with status {code}")


def calibrate(data: Path, out: Path, common: list, batch: int) -> float:
    """Seconds per training step on this machine, from a short throwaway run."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)  # the previous calibration of this bench
    trainer_run([*common, "--data", data, "--out", out, "--samples", batch * 12, "--log-every", 4])
    return batch / _rows(out)[-1]["samples_per_s"]


def _rows(run_dir: Path) -> list[dict]:
    from trainer.metrics import read_rows

    return read_rows(run_dir / "metrics.csv")


@torch.no_grad()
def retrieval(model, rows: list[dict], key: str, labels: list[str]) -> tuple[float, float]:
    """Image->text top-1 and top-5 over the distinct labels."""
    import trainer.models as models
    from trainer.data.image import eval_image, normalize

    mean, std = models.mean_std(model)
    size = models.image_size(model)
    texts = torch.nn.functional.normalize(
        torch.cat(
            [
                model.encode_text(models.tokenizer("clip-tiny")(labels[i : i + 256]))
                for i in range(0, len(labels), 256)
            ]
        ),
        dim=-1,
    )
    target = torch.tensor([labels.index(r["label"]) for r in rows])
    top1 = top5 = 0
    for i in range(0, len(rows), 256):
        chunk = rows[i : i + 256]
        images = normalize(torch.stack([eval_image(r[key], size) for r in chunk]), mean, std)
        sims = torch.nn.functional.normalize(model.encode_image(images), dim=-1) @ texts.T
        best = sims.topk(5, dim=1).indices
        truth = target[i : i + len(chunk)]
        top1 += (best[:, 0] == truth).sum().item()
        top5 += (best == truth[:, None]).any(dim=1).sum().item()
    return top1 / len(rows), top5 / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emoji-dir", required=True, type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-emoji"))
    parser.add_argument("--minutes", type=float, default=12.0, help="training time budget")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared machine: 1)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    rows = read_emoji(args.emoji_dir)
    labels = sorted({r["label"] for r in rows})
    data = build(rows, args.out / "dataset")
    print(
        f"{len(rows)} emoji with both styles, {len(labels)} distinct English names; dataset {data}"
    )
    common = [
        "--model",
        "clip-tiny",
        "--batch-size",
        args.batch_size,
        "--threads",
        args.threads,
        "--workers",
        args.workers,
        "--lr",
        args.lr,
        "--shuffle-buffer",
        1000,
    ]
    step_s = calibrate(data, args.out / "calibration", common, args.batch_size)
    steps = max(50, int(args.minutes * 60 / step_s))
    print(
        f"{step_s:.2f} s/step measured: training {steps} steps of {args.batch_size} "
        f"({steps * args.batch_size / len(rows):.0f} epochs) in about {args.minutes:.0f} min"
    )
    run_dir = args.out / "run"
    t0 = time.perf_counter()
    trainer_run(
        [
            *common,
            "--data",
            data,
            "--out",
            run_dir,
            "--samples",
            steps * args.batch_size,
            "--log-every",
            10,
            "--save-every",
            500,
            "--warmup",
            max(10, steps // 20),
            "--resume",
        ]
    )
    minutes = (time.perf_counter() - t0) / 60
    history = _rows(run_dir)
    first, last = history[0]["loss"], sum(r["loss"] for r in history[-5:]) / len(history[-5:])

    import open_clip

    import trainer.models  # noqa: F401 - registers clip-tiny
    from trainer.plot import plot_run

    checkpoint = (run_dir / "latest.pt").resolve()
    model = open_clip.create_model("clip-tiny", pretrained=str(checkpoint), output_dict=True).eval()
    twitter1, twitter5 = retrieval(model, rows, "twitter", labels)
    google1, google5 = retrieval(model, rows, "google", labels)
    print(
        f"training: {minutes:.1f} min, loss {first:.3f} -> {last:.3f} "
        f"(ln {args.batch_size} = {math.log(args.batch_size):.3f})"
    )
    print(
        f"image->text retrieval over {len(labels)} names (chance top-1 {1 / len(labels):.2%}, "
        f"top-5 {5 / len(labels):.2%}):"
    )
    print(f"  Twitter-style (unseen artist): top-1 {twitter1:.2%}  top-5 {twitter5:.2%}")
    print(f"  Google-style (training images): top-1 {google1:.2%}  top-5 {google5:.2%}")
    print(f"curves: {plot_run(run_dir)}")
    print(f"checkpoint: {checkpoint}")


if __name__ == "__main__":
    main()
