"""`--workers -1` (the default): sized by the CPUs this process may use, stored as a number."""

import json
import os
import shutil

import pytest

import manifests.cpus
from manifests.cpus import usable_cpus
from trainer import checkpoint
from trainer.cli import main
from trainer.config import ConfigError, TrainConfig
from trainer.data import auto_threads, auto_workers
from trainer.metrics import read_rows


@pytest.mark.parametrize(
    ("cpus", "ranks", "workers"), [(2, 1, 1), (1, 1, 1), (16, 1, 15), (16, 8, 1), (32, 4, 7)]
)
def test_auto_workers_leave_a_cpu_per_rank_for_training(cpus, ranks, workers):
    assert auto_workers(cpus, ranks) == workers


@pytest.mark.parametrize(
    ("cpus", "ranks", "workers", "threads"),
    [(2, 1, 1, 1), (2, 1, 0, 2), (16, 1, 15, 1), (16, 2, 3, 5), (1, 1, 4, 1)],
)
def test_auto_threads_leave_the_workers_their_cpus(cpus, ranks, workers, threads):
    assert auto_threads(cpus, ranks, workers) == threads


def test_threads_0_follow_the_cpus_and_the_workers(monkeypatch):
    from trainer.train import training_threads

    monkeypatch.setattr(manifests.cpus, "usable_cpus", lambda: 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert training_threads(TrainConfig(workers=3)) == 5
    assert training_threads(TrainConfig(workers=3, threads=2)) == 2  # as asked
    assert training_threads(TrainConfig(synthetic=True, workers=3)) == 8  # no loader workers
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four ranks share the machine
    assert training_threads(TrainConfig(workers=1)) == 1


def test_usable_cpus_follow_affinity_and_the_container_quota(tmp_path, monkeypatch):
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        assert usable_cpus() == 1
    finally:
        os.sched_setaffinity(0, before)
    quota = tmp_path / "cpu.max"
    monkeypatch.setattr(manifests.cpus, "CGROUP_CPU_MAX", quota)
    quota.write_text("150000 100000\n")  # docker --cpus 1.5: two CPUs' worth of processes
    assert usable_cpus() == min(2, len(before))
    quota.write_text("max 100000\n")
    assert usable_cpus() == len(before)
    quota.write_text("garbage")
    assert usable_cpus() == len(before)


def test_bad_worker_counts_are_refused():
    with pytest.raises(ConfigError, match=r"-1 \(auto\), 0 or more"):
        TrainConfig(workers=-2)


@pytest.mark.timeout(180)
def test_the_chosen_count_is_stored_and_a_resume_elsewhere_keeps_it(
    shapes_dataset, tmp_path, monkeypatch
):
    common = ["--data", shapes_dataset, "--samples", 8 * 8, "--batch-size", 8]
    common += ["--shuffle-buffer", 40, "--warmup", 2, "--model", "clip-nano", "--threads", "1"]
    common += ["--log-every", "1"]
    full, cut = tmp_path / "full", tmp_path / "cut"

    def run(cpus: int, argv) -> int:
        monkeypatch.setattr(manifests.cpus, "usable_cpus", lambda: cpus)
        return main(["run", *map(str, argv)])

    assert run(3, [*common, "--out", full]) == 0
    assert json.loads((full / "config.json").read_text())["config"]["workers"] == 2
    assert run(3, [*common, "--out", cut, "--stop-after", 4, "--save-every", 4]) == 0
    os.unlink(cut / "latest.pt")  # as if it crashed after saving step 4
    shutil.copy(cut / "checkpoints" / "step_00000004.pt", cut / "latest.pt")
    # One CPU now would mean one worker; the run keeps its two, and its exact order.
    assert run(1, [*common, "--out", cut, "--resume"]) == 0
    assert checkpoint.load(cut / "latest.pt")["config"]["workers"] == 2
    assert [r["loss"] for r in read_rows(cut / "metrics.csv")] == [
        r["loss"] for r in read_rows(full / "metrics.csv")
    ]
    assert run(1, [*common, "--out", cut, "--resume", "--workers", "-1"]) == 0  # auto again: fine
    assert run(1, [*common, "--out", cut, "--resume", "--workers", "1"]) == 2  # a change: refused
