"""A dataset on S3: a real S3-protocol server on loopback (moto's server mode, started by the
`s3` fixture), nothing mocked in the process. A build from a URL list on S3 into S3 equals the
same build on local disk; `pipeline query` and `report` read it; a build killed between a data
put and its commit resumes to the same manifests, and no reader ever lists an uncommitted part."""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

import manifests
from manifests.storage import location
from pipeline.build import run_build
from pipeline.buildconfig import BuildConfig
from pipeline.testing.compare import SAMPLES_UNDATED_SQL
from pipeline.testing.crash import KILLED, killed_after
from pipeline.testing.site import expected_pairs

QUERIES = ["cat", "dog", "bird", "fish", "owl", "café", "horse", "chat", "katze"]
OPTIONS = (
    "--allow-network 127.0.0.1/32 --timeout 3 --executor local --languages en --min-size 16 "
    "--image-size 64 --shard-size 3 --rows-per-part 4"
)


def _inputs(folder, site) -> tuple[str, str]:
    """queries.txt and urls.csv (the site's image URLs with their alt texts) under `folder`."""
    folder = location(folder)
    (folder / "queries.txt").write_text("\n".join(QUERIES) + "\n")
    pairs = sorted(expected_pairs(site.base))
    table = pa.table({"url": [p[0] for p in pairs], "caption": [p[1] for p in pairs]})
    sink = pa.BufferOutputStream()
    pcsv.write_csv(table, sink)
    (folder / "urls.csv").write_bytes(sink.getvalue().to_pybytes())
    return str(folder / "queries.txt"), str(folder / "urls.csv")


def _argv(queries: str, urls: str, out: str) -> list[str]:
    return ["build", "--query-list", queries, "--url-list", urls, "--out", out, *OPTIONS.split()]


def _config(queries, urls, out) -> BuildConfig:
    from pipeline.cli import build_parser
    from pipeline.commands import build_config_from_args

    return build_config_from_args(build_parser().parse_args(_argv(queries, urls, out)))


def _samples(out) -> list[dict]:
    con = manifests.open(out)
    return (
        con.sql(f"SELECT * EXCLUDE (clip_score) FROM ({SAMPLES_UNDATED_SQL}) ORDER BY uid")
        .to_arrow_table()
        .to_pylist()
    )


@pytest.fixture
def local_build(tmp_path, test_site):
    site, _ = test_site
    queries, urls = _inputs(tmp_path / "in", site)
    out = str(tmp_path / "local")
    run_build(_config(queries, urls, out))
    return site, _samples(out)


@pytest.mark.timeout(240)
def test_a_build_from_s3_into_s3_equals_the_local_build(local_build, s3, capsys):
    site, local = local_build
    queries, urls = _inputs(f"{s3}/inputs", site)
    out = f"{s3}/datasets/emoji"
    run_build(_config(queries, urls, out))
    remote = _samples(out)
    assert remote == local and any(r["status"] == "kept" for r in remote)
    shards = location(out) / "shards"
    kept = {r["shard"] for r in remote if r["status"] == "kept"}
    assert kept and kept <= {p.name for p in shards.glob("*.parquet")}
    record = json.loads((location(out) / "dataset.json").read_text())
    shards_view = manifests.open(out).execute("SELECT count(*), sum(rows) FROM shards").fetchone()
    images = {(r["shard"], r["shard_row"]) for r in remote if r["status"] == "kept"}
    assert shards_view == (len(kept), len(images))  # no footer read
    parts = json.loads((location(out) / "work" / "parts.json").read_text())
    assert record["version"] == 1 and len(record["files"]["samples"]) == len(parts) > 1

    from pipeline.cli import main

    assert main(["query", out, "SELECT status, count(*) AS n FROM samples GROUP BY 1"]) == 0
    assert "kept" in capsys.readouterr().out
    assert main(["report", out]) == 0
    assert "<html" in (location(out) / "report.html").read_text()[:200].lower()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kill_after", ["put:9", "put:23", "images:1"])
def test_a_build_killed_on_s3_resumes_to_the_same_manifests(local_build, s3, kill_after):
    site, local = local_build
    queries, urls = _inputs(f"{s3}/inputs", site)
    out = f"{s3}/killed"
    argv = _argv(queries, urls, out)
    env = dict(os.environ)
    killed = subprocess.run(
        killed_after(kill_after, argv), capture_output=True, text=True, timeout=200, env=env
    )
    assert killed.returncode == KILLED, killed.stderr
    # Killed before the first commit: readers see no version, whatever objects the store holds.
    assert not (location(out) / "dataset.json").exists()
    assert manifests.open(out).execute("SELECT count(*) FROM samples").fetchone() == (0,)
    resumed = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv],
        capture_output=True,
        text=True,
        timeout=200,
        env=env,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert _samples(out) == local
    # The rerun swept what the killed attempt left: every data file is a committed one.
    root = location(out)
    for stage in ("sources", "images"):
        index = json.loads((root / "work" / stage / "committed.json").read_text())
        named = {root / rel for files in index.values() for rel in files.values()}
        assert set((root / "work" / stage).glob("*.parquet")) <= named


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "uri, env, says",
    [
        ("ftp://bucket/x", None, "unknown scheme"),
        ("s3://no-such-bucket-here/ds", None, "bucket does not exist"),
        ("s3://whatever/ds", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "does not answer"),
    ],
)
def test_bad_store_paths_get_a_clear_error(tmp_path, s3, s3_server, uri, env, says):
    queries = tmp_path / "q.txt"
    queries.write_text("cat\n")
    child_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "build",
            "--query-list",
            str(queries),
            "--seeds",
            "http://127.0.0.1:9/",
            "--out",
            uri,
            "--allow-network",
            "127.0.0.1/32",
        ],
        capture_output=True,
        text=True,
        timeout=50,
        env=child_env,
    )
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr


@pytest.mark.timeout(120)
def test_a_rerun_keeps_a_dataset_of_the_old_layout_whole(local_build, tmp_path, test_site):
    """A dataset written before dataset.json (no "layout" in run.json): a rerun commits no
    version and sweeps nothing, and readers still list its folders."""
    site, local = local_build
    out = location(tmp_path / "local")
    run = json.loads((out / "run.json").read_text())
    del run["layout"]
    (out / "run.json").write_text(json.dumps(run))
    (out / "dataset.json").unlink()
    files = sorted(p.name for p in (out / "manifests" / "samples").iterdir())
    queries, urls = str(tmp_path / "in" / "queries.txt"), str(tmp_path / "in" / "urls.csv")
    run_build(_config(queries, urls, str(out)))
    assert not (out / "dataset.json").exists()
    assert sorted(p.name for p in (out / "manifests" / "samples").iterdir()) == files
    assert _samples(str(out)) == local


@pytest.mark.timeout(120)
def test_a_run_of_some_stages_commits_nothing(tmp_path, test_site):
    site, _ = test_site
    queries, urls = _inputs(tmp_path / "in", site)
    out = str(tmp_path / "ds")
    config = _config(queries, urls, out)
    run_build(config, stages=["sources", "match"])
    assert not (location(out) / "dataset.json").exists()
    assert manifests.open(out).execute("SELECT count(*) FROM samples").fetchone() == (0,)
    run_build(config)
    assert json.loads((location(out) / "dataset.json").read_text())["version"] == 1
