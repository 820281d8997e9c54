"""Interchangeable executors for per-part work: in-process (`local`) or Ray tasks (`ray`).

A task gets small arguments (paths, configs) and returns small results (counts); data moves
through files, so a task's output survives the driver and a rerun can skip it."""

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class ExecutorConfig:
    kind: str = "ray"  # 'ray' (a local ray.init() unless ray_address is set) or 'local'
    ray_address: str | None = None  # e.g. 'auto' or 'ray://head:10001'
    max_in_flight: int = 0  # Ray tasks submitted at once; 0 = twice the cluster's CPUs

    def __post_init__(self):
        if self.kind not in ("ray", "local"):
            raise ValueError(f"executor must be 'ray' or 'local', not {self.kind!r}")


class LocalExecutor:
    def map(self, fn: Callable, items: Iterable) -> Iterator:
        for item in items:
            yield fn(item)

    def shutdown(self) -> None:
        pass


class RayExecutor:
    def __init__(self, config: ExecutorConfig):
        import ray

        self._ray = ray
        self._owns_runtime = not ray.is_initialized()
        if self._owns_runtime:
            # The driver's environment (PYTHONPATH, venv) carries over to local workers; on a
            # cluster the package must be installed on every node (see docs/scaling.md).
            ray.init(
                address=config.ray_address,
                include_dashboard=False,
                log_to_driver=True,
                logging_level=logging.WARNING,
                runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}}
                if config.ray_address is None
                else None,
            )
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.max_in_flight = config.max_in_flight or max(2, 2 * cpus)

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        """Yield fn(item) for every item, as tasks finish (not in input order)."""
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=2)(fn)
        pending = []
        for item in items:
            if len(pending) >= self.max_in_flight:
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])
            pending.append(remote.remote(item))
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])

    def shutdown(self) -> None:
        if self._owns_runtime:
            self._ray.shutdown()


def make_executor(config: ExecutorConfig):
    if config.kind == "local":
        return LocalExecutor()
    return RayExecutor(config)
