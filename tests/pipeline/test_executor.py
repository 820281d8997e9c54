"""pipeline.executor: `auto` runs in-process where Ray could not run tasks side by side."""

import contextlib
import os
import time

import pytest

from pipeline.executor import (
    AutoExecutor,
    ExecutorConfig,
    LocalExecutor,
    RayExecutor,
    make_executor,
    usable_cpus,
)

# A lambda, so that Ray pickles it by value (test modules are not importable in its workers).
where = lambda item: (item, os.getpid())  # noqa: E731

many_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")


@contextlib.contextmanager
def affinity(cpus: set[int]):
    """This thread may run on `cpus` only (as under taskset), restored afterwards."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@pytest.fixture
def no_ray_running():
    import ray

    if ray.is_initialized():  # auto would join it: what these tests check would not happen
        pytest.skip("a Ray runtime is running already")


def test_kinds():
    assert isinstance(make_executor(ExecutorConfig("local")), LocalExecutor)
    assert isinstance(make_executor(ExecutorConfig("auto")), AutoExecutor)
    with pytest.raises(ValueError, match="--executor must be one of auto, ray, local"):
        ExecutorConfig("threads")


def test_auto_on_one_cpu_runs_every_stage_in_process(no_ray_running):
    with affinity({min(os.sched_getaffinity(0))}):
        assert usable_cpus() == 1
        executor = make_executor(ExecutorConfig("auto"))
        results = list(executor.map(where, range(5)))
        executor.shutdown()
    assert results == [(i, os.getpid()) for i in range(5)]
    assert not executor.uses_ray


@many_cpus
def test_auto_runs_a_single_part_in_process(no_ray_running):
    executor = AutoExecutor(ExecutorConfig("auto"))
    assert list(executor.map(where, [7])) == [(7, os.getpid())]
    assert list(executor.map(where, [])) == []
    assert not executor.uses_ray
    executor.shutdown()


@pytest.mark.ray
@pytest.mark.timeout(180)
@many_cpus
def test_auto_starts_ray_for_parts_that_can_run_side_by_side(no_ray_running):
    import ray

    with affinity(set(sorted(os.sched_getaffinity(0))[:2])):
        executor = AutoExecutor(ExecutorConfig("auto"))
    try:
        results = sorted(executor.map(where, range(4)))
        assert executor.uses_ray and isinstance(executor._ray, RayExecutor)
        assert [item for item, _ in results] == [0, 1, 2, 3]
        assert all(pid != os.getpid() for _, pid in results)  # Ray workers did them
        assert ray.cluster_resources()["CPU"] == 2  # the CPUs the process may use, not more
        # Ray stays up for later stages; a stage with one part still runs here.
        assert list(executor.map(where, [9])) == [(9, os.getpid())]
    finally:
        executor.shutdown()
    assert not ray.is_initialized()


@pytest.mark.ray
@pytest.mark.timeout(180)
@many_cpus
def test_a_pooled_map_runs_every_item_on_a_pool_of_one_actor_per_cpu(no_ray_running):
    import ray

    executor = RayExecutor(ExecutorConfig("ray"), num_cpus=2)
    try:
        results = sorted(executor.map(where, range(7), name=lambda i: f"pooled:{i}", pool=True))
        assert [item for item, _ in results] == list(range(7))
        pids = {pid for _, pid in results}
        assert 1 <= len(pids) <= 2 and os.getpid() not in pids  # two actors at most
        # The pool is gone once the map is: its actors hold no CPUs for the next stage.
        deadline = time.monotonic() + 20
        while ray.available_resources().get("CPU", 0) < 2:
            assert time.monotonic() < deadline, ray.available_resources()
            time.sleep(0.1)
        # A GPU is asked for only where the cluster has one: on this CPU cluster, CPU actors.
        gpu = executor.map(where, [1, 2], resources={"num_gpus": 1}, pool=True)
        assert sorted(item for item, _ in gpu) == [1, 2]
    finally:
        executor.shutdown()


@pytest.mark.ray
@pytest.mark.timeout(180)
@many_cpus
def test_a_pooled_item_whose_actor_dies_goes_to_another_actor(no_ray_running, tmp_path):
    marker = str(tmp_path / "died")

    def die_once(item):  # defined here: Ray pickles it by value, with `marker`
        import os
        import time

        if item == "b" and not os.path.exists(marker):
            time.sleep(0.5)  # "a" is done by now: its actor waits idle, nothing else runs
            open(marker, "w").close()
            os._exit(1)  # the actor's process dies, as on a lost node
        return item

    executor = RayExecutor(ExecutorConfig("ray"), num_cpus=2)
    try:
        assert sorted(executor.map(die_once, ["a", "b"], pool=True)) == ["a", "b"]
    finally:
        executor.shutdown()
