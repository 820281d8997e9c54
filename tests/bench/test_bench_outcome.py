"""bench/bench_outcome.py on a tiny generated emoji-like corpus: the build, the raw export, the
three ways of training (a handful of steps each), one evaluation, the table and the JSON; and the
acceptance arithmetic. Never reads ../shared (the real corpus is for the bench only)."""

import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COLOURS = ["red", "green", "blue", "orange", "purple", "black", "yellow", "pink"]
SHAPES = ["circle", "square", "triangle", "star"]


@pytest.fixture
def bench(monkeypatch):
    """The bench module (bench/ is a folder of scripts, not a package)."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import bench_outcome

    return bench_outcome


def _draw(path: Path, colour: str, shape: str, style: int) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    box = (8, 8, 56, 56) if style == 0 else (14, 12, 52, 54)  # the two "artists" differ
    outline = None if style == 0 else "white"
    if shape == "circle":
        draw.ellipse(box, fill=colour, outline=outline)
    elif shape == "square":
        draw.rectangle(box, fill=colour, outline=outline)
    elif shape == "triangle":
        draw.polygon([(box[0], box[3]), (box[2], box[3]), (32, box[1])], fill=colour)
    else:
        draw.regular_polygon((32, 32, 24 - 4 * style), 5, fill=colour, outline=outline)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _corpus(root: Path, n: int = 30) -> Path:
    """n emoji-like records in two styles; a third of them have a Unicode name equal to their
    label (a caption the build folds into a duplicate), one has no tags, and two share their
    google bytes (exact dedup across emoji)."""
    lines = []
    for i in range(n):
        colour, shape = COLOURS[i % len(COLOURS)], SHAPES[i // len(COLOURS)]
        label = f"{colour} {shape}"
        name = label.upper() if i % 3 == 0 else f"{colour.upper()} {shape.upper()} SYMBOL"
        tags = [] if i == 1 else [colour, shape, "shape"]
        image = f"{i:04x}.png"
        lines.append(
            json.dumps(
                {
                    "image": image,
                    "name": name,
                    "annotations": {"en": {"label": label, "tags": tags}},
                }
            )
        )
        for style, folder in enumerate(("google", "twitter")):
            _draw(root / folder / image, colour, shape, style)
    # the last emoji's google image is byte-identical to the first one's
    (root / "google" / f"{n - 1:04x}.png").write_bytes((root / "google" / "0000.png").read_bytes())
    (root / "emoji.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_three_ways_table_and_json(tmp_path, bench, capsys):
    emoji = _corpus(tmp_path / "emoji")
    out = tmp_path / "out"
    argv = ["--emoji-dir", str(emoji), "--out", str(out), "--samples", "48"]
    argv += ["--batch-size", "16", "--seeds", "1", "--parallel", "2"]
    result = bench.main(argv)
    printed = capsys.readouterr().out

    written = json.loads((out / "outcome.json").read_text())
    assert written["tables"][0]["ways"].keys() == {"a", "b", "c"}
    assert written["recipe"]["samples"] == 48 and written["recipe"]["batch"] == 16
    table = result["tables"][0]
    assert (table["train_style"], table["eval_style"], table["classes"]) == (
        "google",
        "twitter",
        30,
    )
    # the raw side: every pair (4 captions, 3 for the emoji without tags) of 29 distinct images
    assert table["raw"]["rows"] == 30 * 4 - 1 and table["raw"]["images"] == 29
    # the build: one image per distinct bytes, every distinct caption kept with it; a Unicode name
    # equal to the label is the same caption on the same bytes: duplicate
    build = table["build"]
    assert build["images"] == 29
    assert build["statuses"]["duplicate"] >= 10
    assert build["rows"] == 30 * 4 - 1 - sum(v for k, v in build["statuses"].items() if k != "kept")
    assert sum(build["first_caption_kinds"].values()) == 29
    assert set(build["first_caption_kinds"]) <= {"label", "tags", "name", "label emoji"}
    for way in "abc":
        (run,) = table["ways"][way]["runs"]
        assert run["seed"] == 0 and run["images"] == 30
        assert 0 <= run["top1"] <= run["top5"] <= 1
        assert table["ways"][way]["top1"] == {"mean": run["top1"], "sd": 0.0}
    assert table["chance"] == {"top1": 1 / 30, "top5": 5 / 30}
    assert set(table["checks"]) == {"top1", "top5"}

    lines = printed.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("way "))
    assert "rows/images trained on" in lines[header] and "top-1 % mean±sd" in lines[header]
    rows = lines[header + 1 : header + 4]
    assert [r[:3] for r in rows] == ["(a)", "(b)", "(c)"]
    assert "119/29" in rows[0] and f"{build['rows']}/29" in rows[1] and "s0: " in rows[2]
    assert "chance over 30 classes: top-1 3.33%, top-5 16.67%" in printed
    assert sum(ln.startswith("acceptance (") for ln in lines) == 2
    assert not list(out.rglob("*.pt"))  # checkpoints go once evaluated

    # Again into the same folder: the build and every finished run are read back, not redone.
    again = bench.main(argv)
    printed = capsys.readouterr().out
    assert printed.count("an earlier invocation's run") == 3
    assert again["tables"][0]["ways"] == table["ways"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_lever_on_the_validation_split(tmp_path, bench, capsys):
    emoji = _corpus(tmp_path / "emoji")
    out = tmp_path / "out"
    argv = ["--emoji-dir", str(emoji), "--out", str(out), "--samples", "32", "--batch-size", "16"]
    argv += ["--seeds", "1", "--ways", "c", "--lever-samples", "40"]
    argv += ["--levers", "crop_scale=0.5,ema=0.9,loss=siglip"]
    result = bench.main(argv)
    printed = capsys.readouterr().out
    lever = result["tables"][0]["lever"]
    assert lever["samples"] == 48  # whole batches
    validation = lever["validation"]["ways"]
    base = "(c) 48" if lever["adopted"] else "(c) 32"
    singles = [f"{base} crop_scale=0.5", f"{base} loss=siglip", f"{base} ema=0.9"]
    assert {"(c) 32", "(c) 48", *singles} <= validation.keys()
    assert len(validation) in (5, 6)  # and the adopted levers together, if two or more
    held = [e for e in bench.read_corpus(emoji, "google", "twitter") if bench.held_out(e)]
    for runs in validation.values():
        assert [r["images"] for r in runs["runs"]] == [len(held)]
    assert "validation (training style, " in printed and "never the reported style" in printed
    assert lever["adopted"] == (
        validation["(c) 48"]["top1"]["mean"] > validation["(c) 32"]["top1"]["mean"]
    )
    for entry in lever["levers"]:
        mean = validation[f"{base} {entry['lever']}"]["top1"]["mean"]
        assert entry["top1_change"] == pytest.approx(mean - validation[base]["top1"]["mean"])
        assert entry["adopted"] == (entry["top1_change"] > 0)
        assert f"lever {entry['lever']}: top-1 " in printed
    assert ("reported" in lever) == (lever["chosen"] != "(c) 32")
    marked = "LEVER (chosen on the validation split, not on twitter)" in printed
    assert marked == ("reported" in lever)


def test_levers_are_parsed_and_reach_both_trainers(bench):
    assert bench.parse_levers("crop_scale=0.5, loss=siglip,ema=0.99") == [
        ("crop_scale", 0.5),
        ("loss", "siglip"),
        ("ema", 0.99),
    ]
    for bad in ("dropout=0.1", "lr", "loss=focal", "caption_weights=loud"):
        with pytest.raises(ValueError, match="lever"):
            bench.parse_levers(bad)
    r = bench.Recipe(1280, 128, 1e-3, 0.2, 1, loss="siglip", crop_scale=0.5, ema=0.99)
    ours = bench.ours_cmd(Path("d"), Path("o"), 0, "random", r)
    assert ours[ours.index("--loss") + 1] == "siglip"
    assert ours[ours.index("--crop-scale") + 1] == "0.5" and "--ema" in ours
    theirs = bench.openclip_cmd("t.tar", Path("l"), 0, r)
    assert "--siglip" in theirs and theirs[theirs.index("--aug-cfg") + 1] == "scale=(0.5, 1.0)"
    plain = bench.Recipe(1280, 128, 1e-3, 0.2, 1)
    d = bench.make_job("d", 0, Path("data"), "t.tar", Path("f"), plain).cmd
    assert d[d.index("--caption-sampling") + 1] == "all"
    assert d[d.index("--caption-weights") + 1] == "occurrences"
    assert "--crop-scale" not in bench.ours_cmd(Path("d"), Path("o"), 0, "random", plain)
    assert bench.recipe_name(r, plain) == "(c) 1280 loss=siglip crop_scale=0.5 ema=0.99"
    weighted = bench.Recipe(1280, 128, 1e-3, 0.2, 1, caption_weights="occurrences")
    ours = bench.ours_cmd(Path("d"), Path("o"), 0, "random", weighted)
    assert ours[ours.index("--caption-weights") + 1] == "occurrences"
    assert "--caption-weights" not in bench.openclip_cmd("t.tar", Path("l"), 0, weighted)
    coloured = bench.Recipe(1280, 128, 1e-3, 0.2, 1, color_jitter=0.4, grayscale=0.2)
    ours = bench.ours_cmd(Path("d"), Path("o"), 0, "random", coloured)
    assert ours[ours.index("--color-jitter") + 1] == "0.4"
    assert ours[ours.index("--grayscale") + 1] == "0.2"
    theirs = bench.openclip_cmd("t.tar", Path("l"), 0, coloured)
    at = theirs.index("--aug-cfg")
    assert theirs[at + 1 : at + 4] == [
        "color_jitter=(0.4, 0.4, 0.4, 0.0)",
        "color_jitter_prob=1.0",
        "gray_scale_prob=0.2",
    ]
    assert bench.parse_levers("color_jitter=0.4,grayscale=0.2") == list(
        {"color_jitter": 0.4, "grayscale": 0.2}.items()
    )


def test_validation_split(bench, tmp_path):
    emoji = _corpus(tmp_path / "emoji", n=30)
    corpus = bench.read_corpus(emoji, "google", "twitter")
    held = [e.image for e in corpus if bench.held_out(e)]
    assert 0 < len(held) < len(corpus)
    # byte-identical training images (the first and the last emoji) fall on one side
    assert bench.held_out(corpus[0]) == bench.held_out(corpus[-1])


def test_acceptance_checks(bench):
    runs = {
        "a": [{"seed": s, "top1": v, "top5": 2 * v} for s, v in enumerate([0.01, 0.012, 0.011])],
        "b": [{"seed": s, "top1": v, "top5": 2 * v} for s, v in enumerate([0.015, 0.017, 0.016])],
        "c": [{"seed": s, "top1": v, "top5": 2 * v} for s, v in enumerate([0.024, 0.022, 0.023])],
    }
    summary = bench.summarise(runs, 100)
    assert summary["chance"] == {"top1": 0.01, "top5": 0.05}
    c = summary["ways"]["c"]["top1"]
    assert math.isclose(c["mean"], 0.023) and math.isclose(c["sd"], 0.001)
    check = summary["checks"]["top1"]
    assert check["c_beats_b_beyond_spread"] and check["c_at_least_a"] and check["goal_c_twice_a"]
    assert math.isclose(check["c_over_a"], 0.023 / 0.011)
    # a difference inside the seed spread is no win, and (c) below (a) fails both
    runs["c"] = [{"seed": s, "top1": v, "top5": v} for s, v in enumerate([0.010, 0.019, 0.028])]
    check = bench.summarise(runs, 100)["checks"]["top1"]
    assert not check["c_beats_b_beyond_spread"] and check["c_at_least_a"]
    assert not check["goal_c_twice_a"]
    top5 = bench.summarise(runs, 100)["checks"]["top5"]
    assert not top5["c_at_least_a"] and not top5["c_beats_b_beyond_spread"]


def test_a_lever_that_ties_is_not_adopted(bench):
    """The same images right in every seed, the means differing by float32 rounding only (the
    validation run of ema=0.995 at 81,920 samples: 303 of 5 x 380 either way): no gain."""
    import numpy as np

    base = bench.Recipe(81920, 128, 1e-3, 0.05, 32)
    base_runs = np.array([59, 61, 58, 60, 65], np.float32) / 380
    lever_runs = np.array([58, 61, 58, 61, 65], np.float32) / 380
    assert float(lever_runs.astype(float).mean()) != float(base_runs.astype(float).mean())

    def trial(candidates):
        means = {0.0: base_runs, 0.995: lever_runs}
        return {r.ema: float(means[r.ema].astype(float).mean()) for r in candidates}

    chosen, records = bench.pick_levers([("ema", 0.995)], base, trial, lambda r, w: w[r.ema])
    assert chosen == base and records[0]["adopted"] is False
    assert abs(records[0]["top1_change"]) < 1e-6
    better = np.array([60, 61, 58, 61, 65], np.float32) / 380  # one image more: a gain
    lever_runs[:] = better
    chosen, records = bench.pick_levers([("ema", 0.995)], base, trial, lambda r, w: w[r.ema])
    assert chosen.ema == 0.995 and records[0]["adopted"] is True
