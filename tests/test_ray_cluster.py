"""`pipeline build` against a running Ray cluster: a one-node cluster started with
`ray start --head` on loopback, a build submitted with `ray job submit -- pipeline build ...
--ray-address auto`, and a build run from this machine with `--ray-address HOST:PORT`.

The cluster is this test's own: every port is a free one picked here, its session files live in
a fresh temp dir, and it is stopped by signalling the `ray start --block` process (which takes
its Ray processes down with it) and then that process group; `ray stop` is not used because it
kills every Ray process of the user on the machine, other tests' included.
"""

import csv
import subprocess
from pathlib import Path

import pytest

import manifests
from manifests.layout import DatasetLayout
from pipeline.testing.raycluster import VENV_BIN, RayHead, http_json, ray_env
from pipeline.testing.site import IMAGE_CASES, expected_pairs


@pytest.fixture(scope="module")
def ray_head():
    head = RayHead()
    try:
        head.wait_ready()
        yield head
    finally:
        head.stop()


def build_argv(url_list: Path, out: Path, ray_address: str) -> list[str]:
    return [
        "pipeline",
        "build",
        "--url-list",
        str(url_list),
        "--out",
        str(out),
        "--allow-network",
        "127.0.0.1/32",
        "--ray-address",
        ray_address,
        "--rows-per-part",
        "4",
        "--image-size",
        "64",
        "--shard-size",
        "5",
        "--timeout",
        "5",
    ]


def url_list(tmp_path: Path, site) -> tuple[Path, dict[str, str]]:
    """The test site's images as a URL list, and the status each should end with (the cases
    that need the language or size filters are left out: this build does not set them)."""
    special = {
        site.base + path[1:]: (caption, status) for path, caption, _, _, status in IMAGE_CASES
    }
    pairs = {
        url: (caption, special.get(url, (caption, "kept"))[1])
        for url, caption, _ in expected_pairs(site.base)
    }
    pairs = {url: cs for url, cs in pairs.items() if cs[1] not in ("language", "too_small")}
    path = tmp_path / "urls.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["url", "caption"])
        writer.writerows((url, caption) for url, (caption, _) in sorted(pairs.items()))
    return path, {url: status for url, (_, status) in pairs.items()}


def check_dataset(out: Path, expected: dict[str, str]) -> None:
    con = manifests.open(out)
    assert dict(con.execute("SELECT url, status FROM samples").fetchall()) == expected
    # copy-of-cat.png has cat.png's bytes: one image with two captions
    (images,) = con.execute("SELECT count(*) FROM images").fetchone()
    assert images == sum(status == "kept" for status in expected.values()) - 1
    shards = sorted(DatasetLayout(out).shards.glob("*.parquet"))
    assert len(shards) == -(-images // 5)
    assert con.execute("SELECT sum(rows) FROM shards").fetchone() == (images,)


def cluster_task_names(head: RayHead) -> dict[str, set[str]]:
    """Task names per job id, from the cluster's state API."""
    answer = http_json(f"{head.dashboard}/api/v0/tasks?limit=10000&detail=false", timeout=30)
    names: dict[str, set[str]] = {}
    for task in answer["data"]["result"]["result"]:
        names.setdefault(task["job_id"], set()).add(task["name"])
    return names


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_pipeline_build_runs_on_a_ray_cluster(ray_head, test_site, tmp_path):
    site, _ = test_site
    urls_csv, urls = url_list(tmp_path, site)
    submitted = tmp_path / "submitted"
    job = subprocess.run(
        [
            f"{VENV_BIN}/ray",
            "job",
            "submit",
            "--address",
            ray_head.dashboard,
            "--submission-id",
            "clipengine-build",
            "--",
            *build_argv(urls_csv, submitted, "auto"),
        ],
        env=ray_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
    status = http_json(f"{ray_head.dashboard}/api/jobs/clipengine-build")
    assert status["status"] == "SUCCEEDED"
    check_dataset(submitted, urls)

    direct = tmp_path / "direct"
    argv = build_argv(urls_csv, direct, ray_head.gcs)
    done = subprocess.run(
        [f"{VENV_BIN}/{argv[0]}", *argv[1:]],
        env=ray_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    check_dataset(direct, urls)

    # Both drivers ran their per-part work as tasks of this cluster.
    def stages(names: set[str]) -> set[str]:  # tasks are named "<stage>:<part>"
        return {n.split(":")[0] for n in names}

    jobs = [
        stages(names)
        for names in cluster_task_names(ray_head).values()
        if "images" in stages(names)
    ]
    assert len(jobs) == 2
    assert all({"match", "text", "images", "shards", "publish"} <= names for names in jobs)
