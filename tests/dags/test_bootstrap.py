"""The bootstrap loop: dags/_bootstrap.py's params -> both builds' configs, both training runs and
the comparison (no Airflow needed), and `clip_bootstrap` end to end under `dag.test()` on a
loopback site of coloured shapes with 30% mismatched captions, clip-nano, a few steps."""

import csv
import json
import random

import pytest

import manifests
from dags._bootstrap import (
    build_round,
    build_unfiltered,
    check_params,
    compare,
    filter_options,
    paths,
    train_params,
)
from dags._common import train_options
from manifests.config import ConfigError
from pipeline.testing.shapesite import CLASSES, shapes_site
from pipeline.testing.toydata import draw
from tests.dags.test_dags import run_airflow

TASKS = [
    "build_unfiltered",
    "train_first",
    "embed",
    "build_filtered",
    "train_second",
    "evaluate_both",
]


def _params(tmp_path, **overrides) -> dict:
    values = dict(
        out=str(tmp_path / "loop"),
        query_list=None,
        seeds=[],
        warc=[],
        url_list=str(tmp_path / "urls.csv"),
        allow_network=["127.0.0.1/32"],
        executor="local",
        ray_address=None,
        build_options={"image_size": 32},
        min_clip_score=None,
        clip_top_fraction=0.7,
        semdedup_eps=None,
        device="cpu",
        model="clip-nano",
        subset="",
        samples=64,
        batch_size=8,
        train_options={"workers": 0},
        eval_sets=[str(tmp_path / "evals" / "shapes")],
        eval_options={"probe": False},
    )
    values.update(overrides)
    return values


def test_both_builds_share_the_source_and_only_the_second_is_filtered(tmp_path):
    (tmp_path / "urls.csv").write_text("url,caption\n")
    checkpoint = tmp_path / "loop" / "run1" / "latest.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"a checkpoint file")  # BuildConfig checks only that it is a file
    params = _params(tmp_path, semdedup_eps=0.05)
    where = paths(params)
    assert where == {
        name: str(tmp_path / "loop" / name) for name in ("round1", "run1", "round2", "run2")
    } | {"results": str(tmp_path / "loop" / "bootstrap.json")}
    first = build_round(params, "round1").options()
    second = build_round(params, "round2", str(checkpoint)).options()
    assert (first["out"], second["out"]) == (where["round1"], where["round2"])
    assert first["url_list"] == second["url_list"] == str(tmp_path / "urls.csv")
    assert first["image_size"] == second["image_size"] == 32
    assert first["clip_model"] is None and first["clip_top_fraction"] is None
    assert (
        second["clip_model"],
        second["clip_top_fraction"],
        second["semdedup_eps"],
        second["device"],
    ) == (str(checkpoint), 0.7, 0.05, "cpu")
    assert second["min_clip_score"] is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"min_clip_score": 0.2}, "not both"),
        ({"clip_top_fraction": None}, "needs a filter"),
        ({"clip_top_fraction": ""}, "needs a filter"),
        ({"clip_top_fraction": 1.5}, r"must be in \(0, 1\]"),
        ({"clip_top_fraction": "0.3"}, "must be a number"),
        ({"semdedup_eps": True}, "must be a number"),
    ],
)
def test_bad_filter_params_are_config_errors(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        filter_options(_params(tmp_path, **overrides))


def test_min_clip_score_alone_is_a_filter(tmp_path):
    options = filter_options(_params(tmp_path, min_clip_score=0.25, clip_top_fraction=None))
    assert options == {"min_clip_score": 0.25}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"build_options": {"clip_model": "/x.pt"}}, "build_options sets clip_model"),
        ({"build_options": {"min_clip_score": 0.3}}, "build_options sets min_clip_score"),
        ({"build_options": {"max_pagez": 3}}, "unknown option"),
        ({"out": "loop"}, "must be an absolute path"),
        ({"eval_sets": []}, "at least one ImageFolder eval set"),
        ({"eval_sets": ["evals/shapes"]}, "must be an absolute path"),
        ({"clip_top_fraction": 0.0}, r"must be in \(0, 1\]"),
    ],
)
def test_the_first_task_refuses_bad_params_before_building(tmp_path, overrides, message):
    (tmp_path / "urls.csv").write_text("url,caption\n")
    params = _params(tmp_path, **overrides)
    with pytest.raises(ConfigError, match=message):
        build_unfiltered(params)
    assert not (tmp_path / "loop").exists()


def test_both_runs_train_the_same_model_for_the_same_samples(tmp_path):
    from trainer.config import TrainConfig

    params = _params(tmp_path, ray_address="auto", train_options={"workers": 0, "lr": 0.002})
    check_params(params)
    first, ray1 = train_options(train_params(params, "/d/round1", "run1"))
    second, ray2 = train_options(train_params(params, "/d/round2", "run2"))
    assert (first.pop("data"), first.pop("out")) == ("/d/round1", str(tmp_path / "loop/run1"))
    assert (second.pop("data"), second.pop("out")) == ("/d/round2", str(tmp_path / "loop/run2"))
    assert (
        first
        == second
        == dict(resume=True, model="clip-nano", samples=64, batch_size=8, workers=0, lr=0.002)
    )
    assert ray1 == ray2 == {}  # the builds' ray_address is not a Ray Train job
    TrainConfig.from_dict({**first, "data": "/d", "out": "/r"})  # options the trainer takes


def test_compare_puts_both_models_side_by_side():
    first = {
        "shapes": {"zero_shot": {"top1": 0.25, "top5": 0.5, "mean_per_class_recall": 0.2}},
        "only_first": {"zero_shot": {"top1": 0.1}},
    }
    second = {"shapes": {"zero_shot": {"top1": 0.5, "top5": 0.75, "mean_per_class_recall": 0.4}}}
    assert compare(first, second) == {
        "shapes": {
            "first": {"top1": 0.25, "top5": 0.5, "mean_per_class_recall": 0.2},
            "second": {"top1": 0.5, "top5": 0.75, "mean_per_class_recall": 0.4},
            "change": {"top1": 0.25, "top5": 0.25, "mean_per_class_recall": 0.2},
        }
    }


def _eval_set(root, per_class: int = 2):
    """Fresh shapes as an ImageFolder eval set: root/a_red_circle/0.png, ..."""
    rng = random.Random(3)
    for colour, shape in CLASSES:
        folder = root / f"a_{colour}_{shape}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            draw(colour, shape, rng).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def bootstrap_runs(tmp_path_factory):
    """Two clip_bootstrap runs with the same params (the second must redo nothing), then one with
    a bad filter param, in one Airflow session."""
    tmp = tmp_path_factory.mktemp("bootstrap")
    server, rows = shapes_site(per_class=4, mismatch=0.3, seed=5)
    try:
        with open(tmp / "urls.csv", "w", newline="") as fh:
            csv.writer(fh).writerows(
                [("url", "caption"), *((r["url"], r["caption"]) for r in rows)]
            )
        conf = _params(
            tmp,
            build_options={"timeout": 5.0, "image_size": 32, "shard_size": 50},
            samples=32 * 25,
            batch_size=32,
            eval_sets=[str(_eval_set(tmp / "shapes"))],
            train_options={
                "workers": 0,
                "threads": 1,
                "lr": 0.002,
                "warmup": 5,
                "log_every": 5,
                "shuffle_buffer": 128,
            },
            eval_options={"probe": False, "retrieval": False, "workers": 0, "templates": "plain"},
        )
        runs = [
            {"dag_id": "clip_bootstrap", "conf": conf, "mark": server.base + "__run1__"},
            {"dag_id": "clip_bootstrap", "conf": conf, "mark": server.base + "__run2__"},
            {
                "dag_id": "clip_bootstrap",
                "conf": {**conf, "out": str(tmp / "bad"), "clip_top_fraction": 1.5},
            },
        ]
        result, output = run_airflow(tmp / "airflow", runs, timeout=280)
        yield result, output, tmp, server, rows
    finally:
        server.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_clip_bootstrap_parses_and_chains_its_tasks(bootstrap_runs):
    result, _, _, _, _ = bootstrap_runs
    assert result["import_errors"] == {}
    assert result["heavy_after_parse"] == []
    assert result["dags"]["clip_bootstrap"] == TASKS
    assert result["upstream"]["clip_bootstrap"] == {
        "build_unfiltered": [],
        "train_first": ["build_unfiltered"],
        "embed": ["build_unfiltered", "train_first"],
        "build_filtered": ["embed", "train_first"],
        "train_second": ["build_filtered"],
        "evaluate_both": ["train_first", "train_second"],
    }
    assert result["refused"] == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_clip_bootstrap_runs_the_loop_end_to_end(bootstrap_runs):
    result, output, tmp, _, rows = bootstrap_runs
    run = result["runs"][0]
    assert run["state"] == "success", output[-6000:]
    loop = tmp / "loop"
    assert run["returned"] == {
        "build_unfiltered": str(loop / "round1"),
        "train_first": str(loop / "run1/latest.pt"),
        "embed": str(loop / "round1/embeddings"),
        "build_filtered": str(loop / "round2"),
        "train_second": str(loop / "run2/latest.pt"),
        "evaluate_both": str(loop / "bootstrap.json"),
    }
    # round 1 keeps every pair; round 2 scored every pair with run1's model and kept the best 70%
    statuses = manifests.open(loop / "round1").execute("SELECT status FROM samples").fetchall()
    assert statuses == [("kept",)] * len(rows)
    con = manifests.open(loop / "round2")
    kept, dropped, scored = con.execute(
        "SELECT count(*) FILTER (status = 'kept'), count(*) FILTER (status = 'low_clip_score'), "
        "count(clip_score) FROM samples"
    ).fetchone()
    assert (kept, dropped, scored) == (round(0.7 * len(rows)), len(rows) - kept, len(rows))
    assert (loop / "round1" / "embeddings" / "meta.json").exists()
    # both runs trained the same number of samples
    last = [
        (loop / r / "metrics.csv").read_text().splitlines()[-1].split(",")[1]
        for r in ("run1", "run2")
    ]
    assert last == ["800", "800"]
    summary = json.loads((loop / "bootstrap.json").read_text())
    table = summary["zero_shot"]["shapes"]
    for model in ("first", "second"):
        assert 0.0 <= table[model]["top1"] <= table[model]["top5"] <= 1.0
    assert table["change"]["top1"] == pytest.approx(
        table["second"]["top1"] - table["first"]["top1"]
    )
    assert (summary["first"]["kept"], summary["second"]["kept"]) == (len(rows), kept)
    assert summary["filter"] == {
        "clip_model": str(loop / "run1/latest.pt"),
        "clip_top_fraction": 0.7,
    }
    assert summary["second"]["clip_stage"]["rows_in"] == len(rows)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_second_run_redoes_nothing(bootstrap_runs):
    result, output, tmp, server, _ = bootstrap_runs
    assert result["runs"][1]["state"] == "success", output[-6000:]
    hits = list(server.hits)
    between = hits[hits.index("/__run2__") + 1 :]
    assert between == []  # no image fetched again: both builds resumed from their markers
    metrics = (tmp / "loop" / "run2" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + 25 // 5  # header + one row per 5 steps: no step trained twice


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_bad_filter_param_fails_the_first_task(bootstrap_runs):
    result, output, tmp, _, _ = bootstrap_runs
    run = result["runs"][2]
    assert run["state"] == "failed"
    assert run["tasks"]["build_unfiltered"] == "failed"
    assert {s for t, s in run["tasks"].items() if t != "build_unfiltered"} == {"upstream_failed"}
    assert "clip_top_fraction must be in (0, 1], not 1.5" in output
    assert not (tmp / "bad").exists()
