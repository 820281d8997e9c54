"""`pipeline build` against a running Ray cluster: a one-node cluster started with
`ray start --head` on loopback, a build submitted with `ray job submit -- pipeline build ...
--ray-address auto`, and a build run from this machine with `--ray-address HOST:PORT`.

The cluster is this test's own: every port is a free one picked here, its session files live in
a fresh temp dir, and it is stopped by signalling the `ray start --block` process (which takes
its Ray processes down with it) and then that process group; `ray stop` is not used because it
kills every Ray process of the user on the machine, other tests' included.
"""

import contextlib
import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import manifests
from manifests.layout import DatasetLayout
from pipeline.testing.site import IMAGE_CASES, expected_pairs

VENV_BIN = str(Path(sys.executable).parent)
# Ray 2.60 clusters require a token (token auth is on by default); this cluster's own, handed
# to every process of the test through the environment instead of ~/.ray/auth_token.
TOKEN = secrets.token_hex(32)
PORT_OPTIONS = (
    "--port",
    "--dashboard-port",
    "--ray-client-server-port",
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)


def free_ports(count: int) -> list[int]:
    """Distinct ports free on 127.0.0.1 right now (all held open while picking)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ray_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    env.update(
        PATH=VENV_BIN + os.pathsep + env.get("PATH", ""),  # `pipeline` for the job's shell
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=TOKEN,
        # One node on loopback: take 127.0.0.1 as this node's address instead of asking the
        # routing table which interface reaches the outside.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        NO_ALBUMENTATIONS_UPDATE="1",
    )
    return env


def http_json(url: str, timeout: float = 5.0):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class RayHead:
    """`ray start --head --block` on 127.0.0.1 with 2 CPUs and the dashboard (job server)."""

    def __init__(self):
        self.temp_dir = tempfile.mkdtemp(prefix="rayc", dir="/tmp")  # short: socket paths
        ports = dict(zip(PORT_OPTIONS, free_ports(len(PORT_OPTIONS)), strict=True))
        self.gcs = f"127.0.0.1:{ports['--port']}"
        self.dashboard = f"http://127.0.0.1:{ports['--dashboard-port']}"
        argv = [
            f"{VENV_BIN}/ray",
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            "2",
            "--include-dashboard",
            "true",
            "--dashboard-host",
            "127.0.0.1",
            "--disable-usage-stats",
            "--temp-dir",
            self.temp_dir,
        ]
        for option, port in ports.items():
            argv += [option, str(port)]
        with open(Path(self.temp_dir) / "ray-start.log", "w") as log:  # the child keeps it open
            self.process = subprocess.Popen(
                argv, env=ray_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                http_json(f"{self.dashboard}/api/jobs/")
                return
            except urllib.error.HTTPError as exc:
                assert exc.code not in (401, 403), f"the job server refused our token: {exc}"
                time.sleep(1)
            except OSError:  # not listening yet
                time.sleep(1)
        raise AssertionError(f"no job server at {self.dashboard}:\n{self.output()}")

    def output(self) -> str:
        return (Path(self.temp_dir) / "ray-start.log").read_text()[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # --block: shuts its node down on exit
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        # Whatever of our process group outlived it (the group's id is our process's id).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


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
    kept = sum(status == "kept" for status in expected.values())
    shards = sorted(DatasetLayout(out).shards.glob("*.parquet"))
    assert len(shards) == -(-kept // 5)
    assert con.execute("SELECT sum(rows) FROM shards").fetchone() == (kept,)


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
