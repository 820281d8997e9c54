"""The Airflow DAGs: dags/ parses with no import errors and no heavy imports, `clip_dataset`
builds the loopback test site end to end under `dag.test()` (SQLite metadata database in
tmp), a second run resumes and fetches nothing, and `clip_train` trains on that dataset and
evaluates the checkpoint. Airflow runs in a subprocess (tests/dags/airflow_run.py) whose
environment points it at tmp, so this process's configuration is untouched."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import manifests
from manifests.layout import DatasetLayout
from pipeline.stages.registry import STAGE_NAMES
from pipeline.testing.site import picture, start_site
from tests.dags.airflow_run import RESULT_PREFIX

REPO = Path(__file__).resolve().parents[2]
QUERIES = ["cat", "dog", "bird", "fish", "owl", "horse"]


def airflow_env(home: Path) -> dict[str, str]:
    """This process's environment without any Airflow settings, plus a private Airflow."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        # Airflow's default (getfqdn) asks the resolver for this host's name: no DNS here.
        AIRFLOW__CORE__HOSTNAME_CALLABLE="socket.gethostname",
        NO_ALBUMENTATIONS_UPDATE="1",
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


def run_airflow(home: Path, runs: list[dict], timeout: float) -> tuple[dict, str]:
    home.mkdir(parents=True, exist_ok=True)
    spec = home / "spec.json"
    spec.write_text(json.dumps({"runs": runs}))
    done = subprocess.run(
        [sys.executable, "-m", "tests.dags.airflow_run", str(spec)],
        cwd=REPO,
        env=airflow_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = done.stdout + done.stderr
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    assert done.returncode == 0 and lines, output[-6000:]
    return json.loads(lines[-1][len(RESULT_PREFIX) :]), output


def eval_set(root: Path) -> Path:
    """An ImageFolder eval set: two classes of three distinct pictures each."""
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"{i}.png").write_bytes(picture(f"{cls}{i}", "PNG", 64))
    return root


@pytest.fixture(scope="module")
def dag_runs(tmp_path_factory):
    """Three DAG runs in one Airflow session: clip_dataset, the same again, clip_train."""
    tmp = tmp_path_factory.mktemp("dags")
    site, external = start_site()
    try:
        (tmp / "queries.txt").write_text("\n".join(QUERIES) + "\n")
        dataset = dict(
            out=str(tmp / "ds"),
            query_list=str(tmp / "queries.txt"),
            seeds=[site.base],
            allow_network=["127.0.0.1/32"],
            executor="local",
            build_options=dict(
                timeout=3.0,
                languages=["en"],
                min_size=16,
                image_size=64,
                shard_size=4,
                max_image_bytes=2 * 1024 * 1024,
            ),
        )
        training = dict(
            data=str(tmp / "ds"),
            run_dir=str(tmp / "run"),
            model="clip-tiny",
            samples=8,
            batch_size=4,
            eval_sets=[str(eval_set(tmp / "evals" / "pets"))],
            train_options=dict(workers=0, threads=1, log_every=1, shuffle_buffer=8),
            eval_options=dict(probe=False, retrieval=False, workers=0, templates="plain"),
        )
        runs = [
            {"dag_id": "clip_dataset", "conf": dataset, "mark": site.base + "__run1__"},
            {"dag_id": "clip_dataset", "conf": dataset, "mark": site.base + "__run2__"},
            {"dag_id": "clip_train", "conf": training, "mark": site.base + "__run3__"},
            {
                "dag_id": "clip_dataset",
                "conf": {**dataset, "out": str(tmp / "bad"), "build_options": {"max_pagez": 3}},
            },
        ]
        result, output = run_airflow(tmp / "airflow", runs, timeout=280)
        yield result, output, tmp, site
    finally:
        site.close()
        external.close()


def _hits_between(site, start: str, end: str) -> list[str]:
    hits = list(site.hits)
    return hits[hits.index(start) + 1 : hits.index(end)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dagbag_has_both_dags_no_import_errors_and_no_heavy_imports(dag_runs):
    result, _, _, _ = dag_runs
    assert result["import_errors"] == {}
    assert result["dags"]["clip_dataset"] == [*STAGE_NAMES, "report"]  # the registry's stages
    assert result["upstream"]["clip_train"] == {"train": [], "evaluate": ["train"]}
    # Parsing the DAG files imported none of the project or its heavy dependencies.
    assert result["heavy_after_parse"] == []
    assert result["refused"] == []  # nothing tried to leave loopback


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_clip_dataset_builds_the_test_site_end_to_end(dag_runs):
    result, output, tmp, site = dag_runs
    first = result["runs"][0]
    assert first["state"] == "success", output[-6000:]
    assert set(first["tasks"].values()) == {"success"}
    out = tmp / "ds"
    # Tasks pass the dataset folder along, never data.
    assert set(first["returned"].values()) == {str(out), str(out / "report.html")}
    layout = DatasetLayout(out)
    # `score` and `clip` ran as no-ops (no clip_model) and leave no stats; `publish` never has any
    assert all(
        (layout.stats / f"{s}.json").exists()
        for s in STAGE_NAMES
        if s not in ("score", "clip", "publish")
    )
    shards = sorted(layout.shards.glob("*.parquet"))
    assert shards and (out / "report.html").stat().st_size > 10_000
    con = manifests.open(out)
    status = dict(con.execute("SELECT url, status FROM samples").fetchall())
    assert status[site.base + "img/cat.png"] == "kept"
    assert status[site.base + "img/copy-of-cat.png"] == "kept"  # beside cat.png's image
    assert status[site.base + "private/cat.png"] == "robots_disallowed"
    kept = con.execute("SELECT count(*) FROM samples WHERE status = 'kept'").fetchone()[0]
    images = con.execute("SELECT count(*) FROM images").fetchone()[0]
    assert con.execute("SELECT sum(rows) FROM shards").fetchone()[0] == images == kept - 1 >= 8
    assert not [h for h in site.hits if h.startswith("/private/")]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_second_clip_dataset_run_resumes_and_fetches_nothing(dag_runs):
    result, output, tmp, site = dag_runs
    second = result["runs"][1]
    assert second["state"] == "success", output[-6000:]
    assert _hits_between(site, "/__run1__", "/__run2__")  # the first run crawled
    assert _hits_between(site, "/__run2__", "/__run3__") == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_clip_train_trains_on_the_built_dataset_and_evaluates(dag_runs):
    result, output, tmp, _ = dag_runs
    run = result["runs"][2]
    assert run["state"] == "success", output[-6000:]
    checkpoint = tmp / "run" / "latest.pt"
    assert run["returned"] == {"train": str(checkpoint), "evaluate": str(tmp / "run/eval.json")}
    metrics = (tmp / "run" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 3 and metrics[0].startswith("step,")  # header + 2 steps of 4
    results = json.loads((tmp / "run" / "eval.json").read_text())
    zero_shot = results["pets"]["zero_shot"]
    assert zero_shot.keys() >= {"top1", "top5", "mean_per_class_recall"}
    assert 0.0 <= zero_shot["top1"] <= zero_shot["top5"] <= 1.0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bad_build_options_fail_the_first_task_with_the_reason(dag_runs):
    result, output, tmp, _ = dag_runs
    run = result["runs"][3]
    assert run["state"] == "failed"
    assert run["tasks"]["sources"] == "failed"
    assert {run["tasks"][t] for t in run["tasks"] if t != "sources"} == {"upstream_failed"}
    assert "unknown option(s) max_pagez; allowed:" in output
    assert not (tmp / "bad").exists()  # refused before anything was written
