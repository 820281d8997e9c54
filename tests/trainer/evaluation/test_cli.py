import json
import random

import open_clip
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import trainer.models as models
from pipeline.testing.toydata import draw, shapes, write_dataset
from tests.trainer.evaluation.helpers import save_checkpoint, write_image_folder
from trainer.cli import main
from trainer.evaluation.zeroshot import evaluate_zero_shot
from trainer.inference import make_preprocess

CLASSES = {
    "red_circle": ("red", "circle"),
    "blue_square": ("blue", "square"),
    "green_cross": ("green", "cross"),
}


def shape_folder(root, per_class: int, seed: int):
    rng = random.Random(seed)
    return write_image_folder(
        root,
        {c: [draw(col, shp, rng) for _ in range(per_class)] for c, (col, shp) in CLASSES.items()},
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalcli")
    ckpt = save_checkpoint(tmp / "latest.pt")
    shapes_set = shape_folder(tmp / "evals" / "shapes", per_class=6, seed=1)
    other = shape_folder(tmp / "evals" / "shapes2", per_class=4, seed=2)
    data = write_dataset(tmp / "data", shapes(per_class=2), shard_rows=32)
    # the leak check's table: every image of `shapes`, the first two of each class have a copy
    ids = [f"shapes/{c}/{i:03d}.png" for c in CLASSES for i in range(6)]
    flags = [int(i.split("/")[-1][:3]) < 2 for i in ids]
    pq.write_table(pa.table({"eval_id": ids, "has_copy": flags}), data / "overlap.parquet")
    return tmp, ckpt, shapes_set, other, data


@pytest.mark.timeout(180)
def test_eval_cli_writes_every_result(setup, capsys):
    tmp, ckpt, shapes_set, other, data = setup
    out = tmp / "res" / "results.json"
    rc = main(
        [
            "eval",
            "--checkpoint",
            str(ckpt),
            "--eval-set",
            str(shapes_set),
            "--eval-set",
            str(other),
            "--data",
            str(data),
            "--out",
            str(out),
            "--workers",
            "0",
            "--templates",
            "generic",
            "--probe-shots",
            "1,2",
            "--probe-seeds",
            "2",
            "--heldout-permille",
            "1000",
        ]
    )
    assert rc == 0
    results = json.loads(out.read_text())
    assert list(results) == ["shapes", "shapes2"]
    for r in results.values():
        assert set(r["zero_shot"]) == {"top1", "top5", "mean_per_class_recall"}
        assert all(0.0 <= v <= 1.0 for v in r["zero_shot"].values())
        assert r["zero_shot"]["top5"] == 1.0  # 3 classes
        assert set(r["linear_probe"]["k_shot"]) == {"1", "2"}
        assert r["linear_probe"]["split"]["n_test"] == 9 if r["info"]["n_images"] == 18 else True
    # clean vs overlap: 6 of 18 images have a copy; the table does not cover shapes2
    ov = results["shapes"]["overlap"]
    assert ov["available"] and (ov["n_overlap"], ov["n_clean"], ov["n_unchecked"]) == (6, 12, 0)
    assert ov["top1_all"] == pytest.approx(results["shapes"]["zero_shot"]["top1"])
    assert not results["shapes2"]["overlap"]["available"]
    # the numbers are the model's: open_clip loads the checkpoint, evaluate_zero_shot agrees
    model = open_clip.create_model("clip-nano", pretrained=str(ckpt)).eval()
    direct = evaluate_zero_shot(
        model,
        models.tokenizer("clip-nano"),
        make_preprocess(model),
        [shapes_set],
        "cpu",
        templates="generic",
    )
    assert direct["shapes"]["top1"] == pytest.approx(results["shapes"]["zero_shot"]["top1"])
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert (meta["model"], meta["step"], meta["n_templates"]) == ("clip-nano", 7, 7)
    ret = meta["retrieval"]
    assert ret["available"] and ret["n_images"] == 48 and ret["n_texts"] == 24
    assert ret["trainer_excluded_heldout"] is False
    assert 0.0 <= ret["image_to_text"]["R@1"] <= ret["image_to_text"]["R@10"] <= 1.0
    for suffix in (".md", ".html", ".kshot.png"):
        assert out.with_suffix(suffix).stat().st_size > 100
    printed = capsys.readouterr().out
    assert "## Zero-shot (generic, 7 templates)" in printed and "| shapes |" in printed
    assert "All − Clean" in printed and "image to text" in printed


@pytest.mark.timeout(120)
def test_eval_cli_probe_train_and_template_file(setup, tmp_path):
    _, ckpt, shapes_set, other, _ = setup
    templates = tmp_path / "t.txt"
    templates.write_text("a drawing of a {}.\n")
    out = tmp_path / "r.json"
    rc = main(
        [
            "eval",
            "--checkpoint",
            str(ckpt),
            "--eval-set",
            str(other),
            "--probe-train",
            f"shapes2={shapes_set}",
            "--templates",
            str(templates),
            "--workers",
            "0",
            "--probe-shots",
            "1",
            "--probe-seeds",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    probe = json.loads(out.read_text())["shapes2"]["linear_probe"]
    assert probe["split"]["method"] == "separate probe-train set"
    assert (
        probe["split"]["n_test"] == 12 and probe["split"]["n_train"] + probe["split"]["n_val"] == 18
    )
    assert json.loads(out.with_suffix(".meta.json").read_text())["n_templates"] == 1


def test_eval_cli_bad_input_is_one_line(setup, tmp_path, capsys):
    _, ckpt, shapes_set, _, _ = setup
    cases = [
        (
            ["--checkpoint", str(tmp_path / "nope.pt"), "--eval-set", str(shapes_set)],
            "does not exist",
        ),
        (["--checkpoint", str(ckpt), "--eval-set", str(tmp_path)], "no class folders"),
        (
            ["--checkpoint", str(ckpt), "--eval-set", str(shapes_set), "--data", str(tmp_path)],
            "not a dataset folder",
        ),
        (
            ["--checkpoint", str(ckpt), "--eval-set", str(shapes_set), "--probe-shots", "1,x"],
            "'x' is not int",
        ),
        (["--eval-set", str(shapes_set)], "--checkpoint"),
    ]
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    cases.append(
        (
            ["--checkpoint", str(tmp_path / "junk.pt"), "--eval-set", str(shapes_set)],
            "not a readable torch checkpoint",
        )
    )
    for argv, message in cases:
        assert main(["eval", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and err[0].startswith("trainer eval: error:")


def test_eval_options_reject_unknown_and_ill_typed_values():
    from manifests.config import ConfigError
    from trainer.evaluation.cli import EvalOptions

    assert EvalOptions.from_dict({"checkpoint": "c.pt", "eval_set": ["e"]}).probe_seeds == 3
    with pytest.raises(ConfigError, match="unknown option.*bogus"):
        EvalOptions.from_dict({"checkpoint": "c.pt", "bogus": 1})
    with pytest.raises(ConfigError, match="--batch-size must be int"):
        EvalOptions(checkpoint="c.pt", eval_set=["e"], batch_size="3")
    with pytest.raises(ConfigError, match="--eval-set must be a list"):
        EvalOptions(checkpoint="c.pt", eval_set="e")
    with pytest.raises(ConfigError, match="at least one --eval-set"):
        EvalOptions(checkpoint="c.pt")
    assert EvalOptions(checkpoint="c.pt", eval_set=["e"], probe_shots="1,4").probe_shots == [1, 4]
