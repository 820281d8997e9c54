"""A Ray cluster of several nodes on this machine, for tests and benches: a head started with
`ray start --head --block` on loopback (every port a free one picked here, its session files
in a fresh temp dir) and worker nodes joined to it, each with its own CPUs, ports and temp dir
(its own scratch disk), as other machines would be.

A node is stopped by signalling its `ray start --block` process (which takes its Ray processes
down with it) and then that process group; `ray stop` is not used because it kills every Ray
process of the user on the machine, other tests' included.
"""

import contextlib
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


def ray_env(multinode: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    env.update(
        PATH=VENV_BIN + os.pathsep + env.get("PATH", ""),  # `pipeline` for the job's shell
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=TOKEN,
        # One node on loopback: take 127.0.0.1 as this node's address instead of asking the
        # routing table which interface reaches the outside; nodes joining it refuse that mode
        # (they are given --node-ip-address 127.0.0.1 instead).
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1" if multinode else "0",
        NO_ALBUMENTATIONS_UPDATE="1",
    )
    return env


def http_json(url: str, timeout: float = 5.0):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


# A worker node's own ports (the cluster-wide ones are the head's).
NODE_PORT_OPTIONS = PORT_OPTIONS[4:]


class RayHead:
    """`ray start --head --block` on 127.0.0.1 with `num_cpus` CPUs and the dashboard (job
    server); `add_worker()` joins another node, with its own CPUs, ports and temp dir (its own
    scratch disk), as a second machine would."""

    def __init__(self, num_cpus: int = 2, multinode: bool = False, env: dict | None = None):
        self.multinode = multinode
        self.env = dict(env or {})  # extra variables of every node (an object store's, say)
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
            str(num_cpus),
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
        self.workers: list[tuple[subprocess.Popen, str]] = []
        self.process = self._start(argv, Path(self.temp_dir) / "ray-start.log")

    def _start(self, argv: list[str], log_path: Path) -> subprocess.Popen:
        with open(log_path, "w") as log:  # the child keeps it open
            return subprocess.Popen(
                argv,
                env={**ray_env(self.multinode), **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def add_worker(self, num_cpus: int = 1) -> subprocess.Popen:
        temp_dir = tempfile.mkdtemp(prefix="rayw", dir="/tmp")
        ports = dict(zip(NODE_PORT_OPTIONS, free_ports(len(NODE_PORT_OPTIONS)), strict=True))
        argv = [
            f"{VENV_BIN}/ray",
            "start",
            "--address",
            self.gcs,
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            str(num_cpus),
            "--disable-usage-stats",
            "--temp-dir",
            temp_dir,
        ]
        for option, port in ports.items():
            argv += [option, str(port)]
        process = self._start(argv, Path(temp_dir) / "ray-start.log")
        self.workers.append((process, temp_dir))
        return process

    def alive_nodes(self) -> int:
        answer = http_json(f"{self.dashboard}/api/v0/nodes?limit=100&detail=false", timeout=30)
        return sum(n["state"] == "ALIVE" for n in answer["data"]["result"]["result"])

    def wait_nodes(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.alive_nodes() < count:
            assert time.monotonic() < deadline, f"fewer than {count} nodes joined"
            time.sleep(1)

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
        for process, temp_dir in self.workers:
            stop_node(process)
            shutil.rmtree(temp_dir, ignore_errors=True)
        stop_node(self.process)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def stop_node(process: subprocess.Popen, kill: bool = False) -> None:
    """Stop a `ray start --block` node: SIGTERM (it shuts its node down), then whatever of its
    process group outlived it; `kill`: SIGKILL at once, as a machine that dies."""
    if process.poll() is None and not kill:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the group's id is the process's id
    process.wait(timeout=10)
