"""Benchmark: every caption counts, measured (issue 18) -- the same (url, caption) pairs three ways.

The same web-like pairs, the same model (clip-tiny, 64 px), the same number of samples seen, three
seeds each (mean ± sd):

  (a) open_clip_train 3.3.0 on the raw pairs exported as webdataset tars: every pair is one
      sample, so an image with four alt texts is four samples (its bytes repeated), and a pair
      that occurs twice in the raw list (same image, same caption under two URLs) stays twice;
  (b) our `pipeline build` of the URL list, then `trainer run --caption-sampling first`;
  (c) the same build, then `trainer run` with the default `--caption-sampling random`;
  and, only where --ways names it, the diagnostic (d): the same build through our trainer with
      `--caption-sampling all --caption-weights occurrences`, every caption as often as the URL
      list carried it for its image: the raw pairs' distribution, so (a) against (d) compares
      the trainers and (d) against (c) the way captions are presented.

Zero-shot top-1 and top-5 on the art style NOT trained on, over every class the corpus has, chance
named (1/classes, 5/classes). One evaluation function for the three kinds of checkpoint: each is
loaded through trainer/inference.py (`load` reads our checkpoints and open_clip_train's
`epoch_N.pt` alike, and strips a `module.` / `_orig_mod.` prefix), images go through its eval
transform (composited on white, short side to 64, centre crop), texts through its tokenizer.

The corpus (--emoji-dir, the emoji folder under shared/data: only a bench may read it). Each emoji
is drawn by two artists; the bench trains on one style (--train-style, google) and reports on the
other (twitter); --reverse adds the opposite direction as a second table. Captions per emoji,
as a web page would give them, exactly:
  1. the English CLDR label               annotations.en.label   "grinning face with big eyes"
  2. the English CLDR tags, ", "-joined   annotations.en.tags    "face, mouth, open, smile"
  3. the Unicode name, lower-cased        name.lower()           "smiling face with open mouth"
  4. the label followed by " emoji"                              "grinning face with big eyes emoji"
(a label missing from the CLDR data falls back to the lower-cased Unicode name; an emoji without
tags has no caption 2). Each image is served under two URLs by a loopback server the bench starts
and stops (127.0.0.1 only): /a/<file> carries captions 1 and 2, /b/<file> captions 3 and 4, so the
build merges both per-URL repeats and equal bytes under other URLs (exact dedup by sha256). Where
the Unicode name equals the label (1,204 of 1,911 emoji), caption 3 is caption 1 again: the build
makes it `duplicate`, (a) trains on it twice; where the tags are the label alone (11 emoji:
"pencil", "battery", ...), the same pair occurs twice under /a/: one `samples` row, two of
(a)'s samples. The URL list (csv url,caption) is in one fixed seeded shuffled order (a crawl
meets an image's alt texts in no particular order), the same list for every way and seed; so
the caption `first` keeps is whichever of an image's captions the list has first (the bench
prints the mix). (a)'s tars hold the pairs in that order, each image processed by the build's
own image code with the build's settings (pipeline.images.process, 64 px, png, flattened onto
white), so (a) and (b)/(c) train on the same pixels (checked).

Classes: the English labels of every emoji drawn in both styles (all 1,911 are distinct in this
corpus; were two emoji to share a label, they would be one class and both images count as that
class). The text prompt of a class is its label, as it is (no template). Each eval image's truth
is its own emoji's label; an eval image that is byte-identical to another emoji's (flags drawn
alike) still counts under its own label, as a user would count it.

The build runs with its default text filters (caption length, boilerplate, language: all kept by
default); the raw pairs go to (a) as they are, (b)/(c) train on what the build keeps; the table
says how many rows and images each side had.

Same samples seen: one --samples figure for every run (rounded up to whole batches of
--batch-size, 128); open_clip_train gets --train-num-samples = --samples and --epochs 1 (its
webdataset pipeline repeats the tars within the epoch until it has them: drop-last per pass),
ours --samples. Both: fp32 on the CPU, one loader worker, OMP_NUM_THREADS=1 and one torch
thread, AdamW (beta2 0.98, eps 1e-6: open_clip_train's own defaults for a non-ViT model name are
0.999 / 1e-8, so both are given), weight decay --wd, peak --lr after --warmup linear steps
then cosine to 0, gradient clipping 1.0, seed = the run's seed. lr 1e-3 and a warmup of 5% of
the steps are the emoji benches' settings (bench_train_emoji.py), not tuned here. At most
--parallel (2) training processes run at once; runs go a b c per seed, interleaved, so a change
of the machine's load hits every way alike.

The recipe levers (the first direction only) are chosen on a validation split that never
touches the reported style: (c) trained on the training style's images of four fifths of the
concepts (a fixed fifth held out by the hash of the image bytes), zero-shot on the training
style's images of the held-out fifth over their own labels, --seeds seeds each.
  1. --lever-samples N: more samples seen, every way alike; adopted when (c)'s mean top-1 at N
     beats the one at --samples.
  2. --levers FIELD=VALUE,...: each on top of what step 1 chose, against that same base:
     crop_scale (RandomResizedCrop's lowest share of the area; (a) gets --aug-cfg scale alike),
     loss=siglip ((a): --siglip), lr, wd (both alike), ema (ours only: open_clip_train has no
     average of the weights), caption_weights=occurrences (ours only: a caption drawn as often
     as the URL list carried it for the image; (a)'s raw pairs are that already), color_jitter
     and grayscale (ours: --color-jitter / --grayscale; (a): --aug-cfg color_jitter=(J, J, J, 0)
     color_jitter_prob=1.0 / gray_scale_prob=P, the same formulas, ours in a fixed order). Each is
     adopted when it raises (c)'s mean top-1 (a tie is not); two or more adopted are also run
     together, and the better of that and the best single lever is the chosen recipe.
Only where the chosen recipe differs from the bench's are (a), (b), (c) run again with it on the
reported style: a separate table, marked as the lever's. A run finished by an earlier invocation
in --out (same command, same evaluation) is read back, not run again, and so is the build.

Acceptance (issue 18): (c) > (b) beyond the seed spread (mean difference > the sd of both),
(c) >= (a); the goal (c) >= 2 x (a). Results: OUT/outcome.json.

    .venv/bin/python bench/bench_outcome.py --emoji-dir ../shared/data/emoji \
        [--out runs/bench-outcome] [--samples 20480] [--seeds 3] [--reverse] \
        [--lever-samples 40960] [--levers crop_scale=0.5,ema=0.99,...]
"""

import argparse
import csv
import hashlib
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))  # the other benches, when this module is imported
from bench_train_vs_openclip import CONFIG, MODEL, OPENCLIP_RUNNER  # noqa: E402

log = logging.getLogger("bench_outcome")

WAYS = {
    "a": "(a) open_clip_train, raw pairs",
    "b": "(b) ours, --caption-sampling first",
    "c": "(c) ours, --caption-sampling random",
    # a diagnostic beside the three: our trainer on the raw pairs' distribution (the build's
    # captions, each as often as the URL list carried it for its image, one sample each), so
    # that (a) against (d) is the trainers alone and (d) against (c) the captions' presentation
    "d": "(d) ours, all + occurrences",
}
KINDS = ("label", "tags", "name", "label emoji")  # caption kinds, in the docstring's order
URL_OF_KIND = {"label": "a", "tags": "a", "name": "b", "label emoji": "b"}
LIST_SEED = 18  # the URL list's fixed shuffled order (the number), for every run
# the build's --image-size and --encode-format, and (a)'s image processing
IMAGE_OPTIONS = {"image_size": 64, "encode_format": "png"}
TAR_ROWS = 1000  # pairs per webdataset tar of (a)


# ---------------------------------------------------------------------------------------- corpus
@dataclass
class Emoji:
    image: str  # file name in both style folders
    label: str  # English CLDR label: the class
    captions: dict = field(default_factory=dict)  # kind -> caption text
    train: Path | None = None  # the training style's image
    eval: Path | None = None  # the reported style's image


def read_corpus(emoji_dir: Path, train_style: str, eval_style: str) -> list[Emoji]:
    """Every emoji drawn in both styles, with its four web-like captions (the docstring's)."""
    out = []
    with open(emoji_dir / "emoji.jsonl", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            train, other = (emoji_dir / s / record["image"] for s in (train_style, eval_style))
            if not (train.exists() and other.exists()):
                continue
            en = record.get("annotations", {}).get("en") or {}
            name = " ".join(record["name"].lower().split())
            label = en.get("label") or name
            captions = {"label": label, "name": name, "label emoji": f"{label} emoji"}
            if en.get("tags"):
                captions["tags"] = ", ".join(en["tags"])
            captions = {k: captions[k] for k in KINDS if k in captions}
            out.append(Emoji(record["image"], label, captions, train, other))
    return out


def classes(corpus: list[Emoji]) -> list[str]:
    """The zero-shot classes: the distinct labels (emoji sharing a label share its class)."""
    return sorted({e.label for e in corpus})


def raw_pairs(corpus: list[Emoji]) -> list[dict]:
    """Every (url path, caption) pair, in the fixed shuffled order of the URL list."""
    pairs = [
        {"path": f"/{URL_OF_KIND[kind]}/{e.image}", "caption": text, "kind": kind, "emoji": i}
        for i, e in enumerate(corpus)
        for kind, text in e.captions.items()
    ]
    random.Random(LIST_SEED).shuffle(pairs)
    return pairs


def serve(corpus: list[Emoji]):
    """A loopback server of the training style's images, each under /a/ and /b/."""
    from pipeline.loopback import LoopbackServer

    png = {"Content-Type": "image/png"}
    routes = {}
    for e in corpus:
        body = e.train.read_bytes()
        routes[f"/a/{e.image}"] = routes[f"/b/{e.image}"] = (200, png, body)
    return LoopbackServer("127.0.0.1", routes=routes).start()


def write_url_list(pairs: list[dict], base: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url", "caption"])
        writer.writerows((base.rstrip("/") + p["path"], p["caption"]) for p in pairs)
    return path


# ----------------------------------------------------------------------------------- the build
def build(url_list: Path, out: Path) -> Path:
    """`pipeline build` of the URL list with its default filters (our side of the comparison)."""
    from pipeline.cli import main

    argv = ["build", "--url-list", str(url_list), "--out", str(out)]
    argv += ["--allow-network", "127.0.0.1/32", "--executor", "local", "--timeout", "10"]
    argv += ["--image-size", str(IMAGE_OPTIONS["image_size"])]
    argv += ["--encode-format", IMAGE_OPTIONS["encode_format"], "-q"]
    if main(argv) != 0:
        raise SystemExit(f"`pipeline {' '.join(argv)}` failed")
    return out


def build_counts(dataset: Path, pairs: list[dict]) -> dict:
    """Rows and images the build keeps, its statuses, and which caption kind `first` trains on."""
    import manifests

    con = manifests.open(dataset)
    statuses = dict(con.execute("SELECT status, count(*) FROM samples GROUP BY 1").fetchall())
    images = con.execute("SELECT count(*) FROM images").fetchone()[0]
    first = con.execute(
        "SELECT url, caption FROM samples WHERE status = 'kept' AND caption_index = 0"
    ).fetchall()
    con.close()
    kind = {(p["path"], p["caption"]): p["kind"] for p in pairs}
    first = [(urlsplit(url).path, caption) for url, caption in first]
    return {
        "rows": statuses.get("kept", 0),
        "images": images,
        "statuses": statuses,
        "first_caption_kinds": dict(Counter(kind.get(tuple(r), "?") for r in first)),
    }


# ------------------------------------------------------------------------------------- way (a)
def export_raw(corpus: list[Emoji], pairs: list[dict], base: str, out: Path) -> dict:
    """(a)'s webdataset tars: every raw pair one sample, its image processed as the build does."""
    from manifests.schema import sample_uid
    from pipeline.images import ImageConfig
    from pipeline.images.process import process_image
    from pipeline.shards import ShardWriter, write_webdataset_sizes

    config = ImageConfig(**IMAGE_OPTIONS)
    processed, digests = {}, {}
    shutil.rmtree(out, ignore_errors=True)
    written = 0
    for index in range(0, len(pairs), TAR_ROWS):
        with ShardWriter(out, index // TAR_ROWS, config.encode_format, webdataset=True) as w:
            for pair in pairs[index : index + TAR_ROWS]:
                e = corpus[pair["emoji"]]
                if e.image not in processed:
                    body = e.train.read_bytes()
                    processed[e.image] = process_image(body, "image/png", config)
                    digests[e.image] = hashlib.sha256(body).hexdigest()
                image = processed[e.image]
                if not image.kept:
                    continue  # what img2dataset would drop too; counted below
                url = base.rstrip("/") + pair["path"]
                w.write(sample_uid(url, pair["caption"]), url, pair["caption"], image)
                written += 1
    write_webdataset_sizes(out)
    tars = sorted(out.glob("*.tar"))
    kept = {i for i, p in processed.items() if p.kept}
    return {
        "pattern": str(out / f"{{00000..{len(tars) - 1:05d}}}.tar"),
        "rows": written,
        "images": len({digests[i] for i in kept}),
        "pixels": {digests[i]: processed[i].image for i in kept},
    }


def same_pixels(dataset: Path, pixels: dict) -> int:
    """How many of the build's stored images differ from (a)'s for the same source bytes (0)."""
    import pyarrow.parquet as pq

    differ = 0
    for path in sorted((dataset / "shards").glob("*.parquet")):
        table = pq.read_table(path, columns=["sha256", IMAGE_OPTIONS["encode_format"]])
        for digest, data in zip(*(c.to_pylist() for c in table.columns), strict=True):
            differ += pixels.get(digest) != data
    return differ


# ------------------------------------------------------------------------------------ training
@dataclass
class Recipe:
    samples: int
    batch: int
    lr: float
    wd: float
    warmup: int
    loss: str = "clip"  # or siglip (open_clip_train: --siglip)
    crop_scale: float = 0.9  # RandomResizedCrop's lowest share of the area (open_clip's 0.9)
    ema: float = 0.0  # ours only: open_clip_train has no average of the weights
    # ours only: (a)'s raw pairs carry every occurrence of a caption already
    caption_weights: str = "distinct"
    # brightness/contrast/saturation jitter (hue kept) and grayscale probability; (a) gets
    # --aug-cfg color_jitter=(J, J, J, 0) color_jitter_prob=1 gray_scale_prob=P alike
    color_jitter: float = 0.0
    grayscale: float = 0.0


# The recipe levers --levers may name (field=value), each measured on the validation split.
LEVER_TYPES = {
    "lr": float,
    "wd": float,
    "loss": str,
    "crop_scale": float,
    "ema": float,
    "caption_weights": str,
    "color_jitter": float,
    "grayscale": float,
}
LEVER_CHOICES = {"loss": ("clip", "siglip"), "caption_weights": ("distinct", "occurrences")}
# ema 0.99: an average over about the last 100 of the 320 steps of a 40,960-sample run
DEFAULT_LEVERS = "crop_scale=0.5,ema=0.99,loss=siglip,lr=0.002,caption_weights=occurrences"


def parse_levers(text: str) -> list[tuple[str, object]]:
    levers = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, _, value = item.partition("=")
        if key not in LEVER_TYPES or not value:
            raise ValueError(
                f"lever {item!r}: expected FIELD=VALUE, FIELD one of {list(LEVER_TYPES)}"
            )
        if key in LEVER_CHOICES and value not in LEVER_CHOICES[key]:
            raise ValueError(f"lever {item!r}: {key} is one of {LEVER_CHOICES[key]}")
        levers.append((key, LEVER_TYPES[key](value)))
    return levers


def _env() -> dict:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    return env


def ours_cmd(data: Path, out: Path, seed: int, sampling: str, r: Recipe) -> list[str]:
    cmd = [sys.executable, "-m", "trainer", "run", "--data", str(data), "--out", str(out)]
    cmd += ["--model", MODEL, "--samples", str(r.samples), "--batch-size", str(r.batch)]
    cmd += ["--precision", "fp32", "--device", "cpu", "--workers", "1", "--threads", "1"]
    cmd += ["--lr", str(r.lr), "--warmup", str(r.warmup), "--weight-decay", str(r.wd)]
    cmd += ["--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6", "--grad-clip", "1.0"]
    cmd += ["--seed", str(seed), "--caption-sampling", sampling, "--log-every", "10"]
    cmd += ["--save-every", str(r.samples), "--keep", "1", "-q"]  # only the closing checkpoint
    if r.loss != "clip":  # the levers, only where set (an earlier invocation's runs stay valid)
        cmd += ["--loss", r.loss]
    if r.crop_scale != 0.9:
        cmd += ["--crop-scale", str(r.crop_scale)]
    if r.ema:
        cmd += ["--ema", str(r.ema)]
    if r.caption_weights != "distinct":
        cmd += ["--caption-weights", r.caption_weights]
    if r.color_jitter:
        cmd += ["--color-jitter", str(r.color_jitter)]
    if r.grayscale:
        cmd += ["--grayscale", str(r.grayscale)]
    return cmd


def openclip_cmd(tars: str, logs: Path, seed: int, r: Recipe) -> list[str]:
    argv = ["--train-data", tars, "--dataset-type", "webdataset", "--epochs", "1"]
    argv += ["--train-num-samples", str(r.samples), "--model", MODEL]
    argv += ["--batch-size", str(r.batch), "--precision", "fp32", "--device", "cpu"]
    argv += ["--workers", "1", "--lr", str(r.lr), "--warmup", str(r.warmup), "--wd", str(r.wd)]
    argv += ["--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6", "--grad-clip-norm", "1.0"]
    argv += ["--seed", str(seed), "--log-every-n-steps", "10", "--logs", str(logs)]
    argv += ["--name", "run", "--save-frequency", "1", "--zeroshot-frequency", "0"]
    argv += ["--val-frequency", "0"]
    if r.loss == "siglip":
        argv += ["--siglip"]
    aug = [f"scale=({r.crop_scale}, 1.0)"] if r.crop_scale != 0.9 else []
    if r.color_jitter:  # open_clip_train's ColorJitter(b, c, s, hue), applied with this prob
        j = r.color_jitter
        aug += [f"color_jitter=({j}, {j}, {j}, 0.0)", "color_jitter_prob=1.0"]
    if r.grayscale:
        aug += [f"gray_scale_prob={r.grayscale}"]
    if aug:
        argv += ["--aug-cfg", *aug]
    return [sys.executable, "-c", OPENCLIP_RUNNER, str(CONFIG), *argv]


@dataclass
class Job:
    way: str
    seed: int
    cmd: list
    folder: Path
    checkpoint: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0
    wall_s: float = 0.0


def make_job(way: str, seed: int, data: Path, tars: str, folder: Path, r: Recipe) -> Job:
    if way == "a":
        cmd, ckpt = openclip_cmd(tars, folder, seed, r), folder / "run/checkpoints/epoch_1.pt"
    else:
        sampling = {"b": "first", "c": "random", "d": "all"}[way]
        r = replace(r, caption_weights="occurrences") if way == "d" else r
        cmd, ckpt = ours_cmd(data, folder, seed, sampling, r), folder / "latest.pt"
    return Job(way, seed, cmd, folder, ckpt)


def run_jobs(jobs: list[Job], parallel: int, done) -> None:
    """Run the jobs in order, `parallel` at a time; `done(job)` as each one ends."""
    todo, running = list(jobs), []
    while todo or running:
        while todo and len(running) < parallel:
            job = todo.pop(0)
            shutil.rmtree(job.folder, ignore_errors=True)  # an earlier invocation's run
            job.folder.mkdir(parents=True)
            logfile = open(job.folder.parent / f"{job.folder.name}.log", "w")  # noqa: SIM115
            job.started = time.perf_counter()
            job.proc = subprocess.Popen(
                job.cmd, stdout=logfile, stderr=subprocess.STDOUT, env=_env(), cwd=REPO
            )
            job.proc.logfile = logfile
            running.append(job)
        time.sleep(0.5)
        for job in [j for j in running if j.proc.poll() is not None]:
            running.remove(job)
            job.proc.logfile.close()
            job.wall_s = time.perf_counter() - job.started
            if job.proc.returncode != 0 or not job.checkpoint.is_file():
                for other in running:  # stop what this bench started before giving up
                    other.proc.terminate()
                    other.proc.wait()
                tail = (job.folder.parent / f"{job.folder.name}.log").read_text()[-3000:]
                raise SystemExit(
                    f"{job.way} seed {job.seed} failed ({job.proc.returncode}):\n{tail}"
                )
            done(job)


# ---------------------------------------------------------------------------------- evaluation
def zero_shot(checkpoint: Path, items: list[tuple[Path, str]], labels: list[str]) -> dict:
    """Top-1 and top-5 of the images of `items` ((path, true label) pairs) over `labels`
    (prompt = the label), for a checkpoint of either trainer: the one evaluation of this bench."""
    import torch

    from trainer.inference import encode_images, encode_texts, load

    loaded = load(checkpoint, device="cpu", model_name=MODEL)
    texts = encode_texts(loaded, labels)
    feats, ok, bad = encode_images(loaded, [str(path) for path, _ in items], batch_size=256)
    if bad:
        raise SystemExit(f"{len(bad)} eval images did not decode")
    index = {label: i for i, label in enumerate(labels)}
    truth = torch.tensor([index[items[i][1]] for i in ok])
    best = (feats @ texts.T).topk(min(5, len(labels)), dim=1).indices
    return {
        "top1": (best[:, 0] == truth).float().mean().item(),
        "top5": (best == truth[:, None]).any(dim=1).float().mean().item(),
        "images": len(ok),
    }


# -------------------------------------------------------------------------------------- report
def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(results: dict, n_classes: int) -> dict:
    """Per way mean ± sd of top-1/top-5, and the acceptance checks (beside them, the per-seed
    differences: the runs of one seed share their seed, so these vary less than the means)."""
    ways = {}
    for way, runs in results.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        ways[way] = {"runs": runs}
        for metric in ("top1", "top5"):
            m, sd = mean_sd([r[metric] for r in runs])
            ways[way][metric] = {"mean": m, "sd": sd}
    checks = {}
    if {"a", "b", "c"} <= ways.keys():
        for metric in ("top1", "top5"):
            a, b, c = (ways[w][metric] for w in "abc")
            paired = {}
            for other in "ab":
                by_seed = {r["seed"]: r[metric] for r in ways[other]["runs"]}
                diffs = [
                    r[metric] - by_seed[r["seed"]]
                    for r in ways["c"]["runs"]
                    if r["seed"] in by_seed
                ]
                paired[f"c_minus_{other}"] = dict(zip(("mean", "sd"), mean_sd(diffs), strict=True))
            checks[metric] = {
                "c_beats_b_beyond_spread": c["mean"] - b["mean"] > max(b["sd"], c["sd"]),
                "c_at_least_a": c["mean"] >= a["mean"],
                "goal_c_twice_a": c["mean"] >= 2 * a["mean"],
                "c_minus_b": c["mean"] - b["mean"],
                "c_over_a": c["mean"] / a["mean"] if a["mean"] else float("inf"),
                "paired_by_seed": paired,
            }
    chance = {"top1": 1 / n_classes, "top5": min(1.0, 5 / n_classes)}
    return {"ways": ways, "checks": checks, "chance": chance}


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def print_table(title: str, summary: dict, sizes: dict, n_classes: int, names=WAYS) -> None:
    if title:
        print(f"\n{title}")
    print(
        f"{'way':<40} {'rows/images trained on':>22}  {'top-1 % mean±sd':>16}  "
        f"{'top-5 % mean±sd':>16}  per seed top-1 / top-5 %"
    )
    for way, s in summary["ways"].items():
        size = f"{sizes[way]['rows']}/{sizes[way]['images']}"
        t1, t5 = s["top1"], s["top5"]
        seeds = "  ".join(f"s{r['seed']}: {pct(r['top1'])}/{pct(r['top5'])}" for r in s["runs"])
        print(
            f"{names[way]:<40} {size:>22}  "
            f"{pct(t1['mean']):>7} ± {pct(t1['sd']):<6}  {pct(t5['mean']):>7} ± {pct(t5['sd']):<6}  "
            f"{seeds}"
        )
    chance = summary["chance"]
    print(
        f"chance over {n_classes} classes: top-1 {pct(chance['top1'])}%, "
        f"top-5 {pct(chance['top5'])}%"
    )
    yes = {True: "yes", False: "NO"}
    for metric, c in summary["checks"].items():
        paired = c["paired_by_seed"]
        print(
            f"acceptance ({metric}): (c) > (b) beyond the seed spread: "
            f"{yes[c['c_beats_b_beyond_spread']]} (difference {pct(c['c_minus_b'])} points); "
            f"(c) >= (a): {yes[c['c_at_least_a']]}; goal (c) >= 2x (a): "
            f"{yes[c['goal_c_twice_a']]} ((c)/(a) = {c['c_over_a']:.2f}x); per seed (c)-(b) "
            f"{pct(paired['c_minus_b']['mean'])} ± {pct(paired['c_minus_b']['sd'])}, (c)-(a) "
            f"{pct(paired['c_minus_a']['mean'])} ± {pct(paired['c_minus_a']['sd'])} points"
        )


# ---------------------------------------------------------------------------------------- main
def held_out(e: Emoji) -> bool:
    """The validation split: a fixed fifth of the concepts, by the training image's bytes (so
    byte-identical images fall on one side)."""
    return int(hashlib.sha256(e.train.read_bytes()).hexdigest()[:8], 16) % 5 == 0


def prepare(corpus: list[Emoji], root: Path, what: str) -> dict:
    """The URL list of `corpus` served on loopback and built (our side), and its raw pairs
    exported as tars ((a)'s side); the build of an earlier run in `root` is reused."""
    root.mkdir(parents=True, exist_ok=True)
    pairs = raw_pairs(corpus)
    t0 = time.perf_counter()
    server = serve(corpus)
    try:
        url_list = write_url_list(pairs, server.base, root / "pairs.csv")
        dataset = root / "dataset"
        if not (dataset / "dataset.json").exists():
            build(url_list, dataset)
        base = server.base
    finally:
        server.close()
    counts = build_counts(dataset, pairs)
    raw = export_raw(corpus, pairs, base, root / "raw_tars")
    differ = same_pixels(dataset, raw.pop("pixels"))
    if differ:
        raise SystemExit(f"{differ} images of the build differ from (a)'s: not the same pixels")
    print(
        f"\n[{what}] {len(corpus)} emoji, {len(pairs)} raw pairs ({raw['images']} distinct "
        f"images); the build kept {counts['rows']} caption rows of {counts['images']} images, "
        f"statuses {counts['statuses']}; `first` trains on the kinds "
        f"{counts['first_caption_kinds']}; prepared in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return {"dataset": dataset, "tars": raw["pattern"], "raw": raw, "build": counts}


def _record(job: Job) -> Path:
    """Where a finished run's scores are kept, beside its folder and log."""
    return job.folder.parent / f"{job.folder.name}.result.json"


def measure(args, runs: list[tuple], prepared: dict, items: list, labels: list[str]) -> dict:
    """Train `runs` ((name, way, seed, recipe, folder) each, in this order, --parallel at a time)
    and evaluate each; returns name -> [per-seed results]. A run an earlier invocation finished
    in --out with the very same command and evaluation is not run again: its scores are read."""
    results = {name: [] for name, *_ in runs}
    name_of, jobs = {}, []
    evaluation = {"labels": len(labels), "images": [str(p) for p, _ in items]}

    def report(name: str, job: Job, scores: dict, note: str = "") -> None:
        results[name].append(scores)
        print(
            f"  {name} seed {job.seed}: top-1 {pct(scores['top1'])}%  top-5 "
            f"{pct(scores['top5'])}%  [{scores['wall_s']:.0f} s{note}]",
            flush=True,
        )

    for name, way, seed, recipe, folder in runs:
        job = make_job(way, seed, prepared["dataset"], prepared["tars"], folder, recipe)
        record = _record(job)
        if record.exists():
            kept = json.loads(record.read_text())
            if kept["cmd"] == job.cmd and kept["evaluation"] == evaluation:
                report(name, job, kept["scores"], ", an earlier invocation's run")
                continue
        name_of[id(job)] = name
        jobs.append(job)

    def done(job: Job) -> None:
        scores = zero_shot(job.checkpoint, items, labels)
        scores = {"seed": job.seed, **scores, "wall_s": round(job.wall_s, 1)}
        record = {"cmd": job.cmd, "evaluation": evaluation, "scores": scores}
        _record(job).write_text(json.dumps(record, indent=1))
        report(name_of[id(job)], job, scores)
        if not args.keep_checkpoints:  # ~30 MB each, with the optimizer's state
            for path in job.folder.rglob("*.pt"):
                path.unlink()

    run_jobs(jobs, args.parallel, done)
    return results


def three_ways(args, prepared, root: Path, recipe: Recipe, items, labels, title: str) -> dict:
    """(a), (b), (c), seed by seed, evaluated on `items`: one table."""
    runs = [
        (w, w, seed, recipe, root / f"{w}-seed{seed}")
        for seed in range(args.seeds)
        for w in args.ways
    ]
    results = measure(args, runs, prepared, items, labels)
    summary = summarise(results, len(labels))
    sizes = {"a": prepared["raw"], **dict.fromkeys("bcd", prepared["build"])}
    print_table(title, summary, sizes, len(labels))
    return summary


def direction(args, train_style: str, eval_style: str, recipe: Recipe, lever: bool) -> dict:
    """Build, export, train every way and seed, evaluate on the other style: one table; with
    `lever`, the recipe levers measured on the validation split (measure_lever), then (if one
    is chosen there) the three ways again on the reported style with the chosen recipe."""
    root = args.out / f"{train_style}-to-{eval_style}"
    corpus = read_corpus(args.emoji_dir, train_style, eval_style)
    labels = classes(corpus)
    items = [(e.eval, e.label) for e in corpus]
    prepared = prepare(corpus, root, f"{train_style} -> {eval_style}")
    title = (
        f"train on {train_style}, zero-shot on {eval_style}: {MODEL}, {recipe.samples} samples "
        f"seen per run, batch {recipe.batch}, {args.seeds} seed(s)"
    )
    summary = three_ways(args, prepared, root, recipe, items, labels, title)
    table = {
        "train_style": train_style,
        "eval_style": eval_style,
        "classes": len(labels),
        "emoji": len(corpus),
        "samples": recipe.samples,
        "raw": prepared["raw"],
        "build": prepared["build"],
        **summary,
    }
    if lever:
        table["lever"] = measure_lever(args, corpus, root, recipe, prepared, items, labels)
    return table


def recipe_name(r: Recipe, default: Recipe) -> str:
    """'(c) 40960 crop_scale=0.5 ...': samples, then each lever that differs from the bench's."""
    changed = [f"{k}={getattr(r, k)}" for k in LEVER_TYPES if getattr(r, k) != getattr(default, k)]
    return " ".join([f"(c) {r.samples}", *changed])


def measure_lever(args, corpus, root: Path, recipe: Recipe, prepared, items, labels) -> dict:
    """The recipe levers, chosen on a validation split that never touches the reported style:
    (c) trained on the training style's images of four fifths of the concepts (held_out),
    zero-shot on the training style's images of the other fifth over their labels.
    1. --lever-samples: more samples seen; adopted when (c)'s mean top-1 there rises.
    2. each of --levers on top of what step 1 chose, against the same base; adopted when it
       raises the mean top-1; two or more adopted are also measured together, and the set kept
       is whichever of the combination and the best single lever scores higher.
    Where the chosen recipe differs from the bench's, (a), (b), (c) run again with it on the
    reported style (every way alike; (a) has no --ema): a separate table, marked as the lever's."""
    train = [e for e in corpus if not held_out(e)]
    val = [e for e in corpus if held_out(e)]
    val_items, val_labels = [(e.train, e.label) for e in val], classes(val)
    vroot = root / "validation"
    vprepared = prepare(train, vroot, f"validation: {len(val)} held-out concepts")
    results: dict = {}

    def trial(candidates: list[Recipe]) -> dict:
        runs = [
            (recipe_name(r, recipe), "c", seed, r, vroot / _slug(r, recipe, seed))
            for seed in range(args.seeds)
            for r in candidates
            if recipe_name(r, recipe) not in results
        ]
        results.update(measure(args, runs, vprepared, val_items, val_labels))
        return summarise(results, len(val_labels))["ways"]

    def top1(r: Recipe, ways: dict) -> float:
        return ways[recipe_name(r, recipe)]["top1"]["mean"]

    base, out = recipe, {"levers": []}
    if args.lever_samples:
        more = replace(recipe, samples=-(-args.lever_samples // recipe.batch) * recipe.batch)
        more.warmup = max(1, more.samples // recipe.batch // 20) if args.warmup < 0 else args.warmup
        ways = trial([recipe, more])
        out.update(samples=more.samples, adopted=gain(top1(more, ways), top1(recipe, ways)))
        base = more if out["adopted"] else recipe
    chosen, out["levers"] = pick_levers(parse_levers(args.levers), base, trial, top1)
    val_summary = summarise(results, len(val_labels))
    print(
        f"\nvalidation (training style, {len(val)} held-out concepts, zero-shot over their "
        f"{len(val_labels)} labels; never the reported style): (c) with each recipe lever"
    )
    sizes, names = dict.fromkeys(results, vprepared["build"]), {k: k for k in results}
    print_table("", val_summary, sizes, len(val_labels), names)
    for lever in out["levers"]:
        print(
            f"lever {lever['lever']}: top-1 {pct(lever['top1_change'])} points -> "
            f"{'adopted' if lever['adopted'] else 'not adopted'}"
        )
    out.update(validation=val_summary, recipe=vars(chosen), chosen=recipe_name(chosen, recipe))
    if chosen == recipe:
        print("no lever adopted: the reported table stands as it is")
        return out
    print(f"chosen on validation: {out['chosen']}")
    title = (
        f"LEVER (chosen on the validation split, not on {corpus[0].eval.parent.name}): "
        f"{out['chosen']}, every way alike"
        + (" ((a) has no --ema)" if chosen.ema else "")
        + (" (caption weights: ours only)" if chosen.caption_weights != "distinct" else "")
    )
    folder = root / ("lever-" + _slug(chosen, recipe, None))
    out["reported"] = three_ways(args, prepared, folder, chosen, items, labels, title)
    return out


def gain(new: float, old: float) -> bool:
    """Whether a mean top-1 beats another: a share of whole images, stored as float32, so two
    runs that classify the same images right differ by rounding only; a tie is no gain."""
    return new - old > 1e-6


def pick_levers(levers: list, base: Recipe, trial, top1) -> tuple[Recipe, list[dict]]:
    """Each lever on top of `base`, against it (`trial` runs recipes, `top1` reads their mean);
    the recipe chosen and a record per lever. Two or more that help are also run together, and
    the better of that and the best single one is chosen."""
    if not levers:
        return base, []
    singles = [replace(base, **{k: v}) for k, v in levers]
    ways = trial([base, *singles])
    records = []
    for (k, v), r in zip(levers, singles, strict=True):
        delta = top1(r, ways) - top1(base, ways)
        records.append({"lever": f"{k}={v}", "top1_change": delta, "adopted": gain(delta, 0.0)})
    good = [r for r, record in zip(singles, records, strict=True) if record["adopted"]]
    chosen = max(good, key=lambda r: top1(r, ways)) if good else base
    if len(good) > 1:
        adopted = [
            lever for lever, record in zip(levers, records, strict=True) if record["adopted"]
        ]
        together = replace(base, **dict(adopted))
        ways = trial([together])
        if gain(top1(together, ways), top1(chosen, ways)):
            chosen = together
    return chosen, records


def _slug(r: Recipe, default: Recipe, seed: int | None) -> str:
    parts = recipe_name(r, default).split()[1:]
    name = "-".join(["c", *parts]).replace("=", "")
    return name if seed is None else f"{name}-seed{seed}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emoji-dir", required=True, type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-outcome"))
    parser.add_argument("--train-style", default="google")
    parser.add_argument("--eval-style", default="twitter")
    parser.add_argument("--reverse", action="store_true", help="also train on the eval style")
    parser.add_argument("--samples", type=int, default=20_480, help="samples seen by every run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--wd", type=float, default=0.2, help="AdamW weight decay")
    parser.add_argument("--warmup", type=int, default=-1, help="steps; -1: 5%% of the steps")
    parser.add_argument("--parallel", type=int, default=2, help="training processes at once")
    parser.add_argument(
        "--ways", default="abc", help="which of a, b, c (and the diagnostic d) to run"
    )
    parser.add_argument(
        "--lever-samples",
        type=int,
        help="the first recipe lever: more samples seen, measured for (c) on a validation split "
        "of held-out concepts of the training style (first direction only); adopted if it helps "
        "there, and --levers are measured on top of it",
    )
    parser.add_argument(
        "--levers",
        default="",
        help="recipe levers (FIELD=VALUE, comma-separated; fields: "
        f"{', '.join(LEVER_TYPES)}), each measured for (c) on the validation split on top of "
        f"what --lever-samples chose, e.g. {DEFAULT_LEVERS}",
    )
    parser.add_argument("--keep-checkpoints", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if set(args.ways) - set(WAYS) or not args.ways:
        parser.error("--ways takes letters of abcd")
    if min(args.samples, args.seeds, args.batch_size, args.parallel) < 1:
        parser.error("--samples, --seeds, --batch-size and --parallel must be >= 1")
    if args.lever_samples is not None and args.lever_samples < 1:
        parser.error("--lever-samples must be >= 1")
    try:
        parse_levers(args.levers)
    except ValueError as exc:
        parser.error(str(exc))
    args.ways = [w for w in WAYS if w in args.ways]
    steps = -(-args.samples // args.batch_size)
    warmup = args.warmup if args.warmup >= 0 else max(1, steps // 20)
    recipe = Recipe(steps * args.batch_size, args.batch_size, args.lr, args.wd, warmup)
    import torch

    torch.set_num_threads(1)  # the evaluations, beside two training processes
    started = time.perf_counter()
    directions = [(args.train_style, args.eval_style)]
    if args.reverse:
        directions.append((args.eval_style, args.train_style))
    tables = [
        direction(args, t, e, recipe, lever=i == 0 and bool(args.lever_samples or args.levers))
        for i, (t, e) in enumerate(directions)
    ]
    minutes = (time.perf_counter() - started) / 60
    result = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "recipe": vars(recipe),
        "tables": tables,
        "minutes": round(minutes, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "outcome.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwritten: {path} ({minutes:.1f} min in all)")
    return result


if __name__ == "__main__":
    main()
