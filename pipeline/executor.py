"""Interchangeable executors for per-part work: in-process (`local`), Ray tasks (`ray`), or
`auto`: in-process where Ray could not run two tasks at once, Ray otherwise.

A task gets small arguments (paths, configs) and returns small results (counts); data moves
through files, so a task's output survives the driver and a rerun can skip it."""

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from manifests.config import ConfigError, check_fields, option
from manifests.cpus import usable_cpus

log = logging.getLogger(__name__)

EXECUTOR_KINDS = ("auto", "ray", "local")


@dataclass
class ExecutorConfig:
    kind: str = option(
        "auto",
        flag="executor",
        choices=EXECUTOR_KINDS,
        runtime=True,
        help="auto: in-process when this process may use 1 CPU or a stage has 1 part, else Ray; "
        "ray: Ray tasks (a local ray.init(), or --ray-address); local: in-process",
    )
    ray_address: str | None = option(
        None, metavar="ADDR", runtime=True, help="a Ray cluster, e.g. auto or ray://head:10001"
    )
    max_tasks_in_flight: int = option(
        0, runtime=True, help="Ray tasks submitted at once; 0: twice the cluster's CPUs"
    )
    urls_per_fetch_part: int = option(
        10_000,
        help="image URLs per fetch part (a host with more is split into lanes sharing its budget)",
    )
    driver_memory_mb: int = option(
        2048,
        runtime=True,
        help="memory the driver's planning queries (DuckDB) may use; past it they spill to disk",
    )

    def __post_init__(self):
        check_fields(self)
        if self.max_tasks_in_flight < 0:
            raise ConfigError("--max-tasks-in-flight must not be negative")
        if self.urls_per_fetch_part < 1:
            raise ConfigError("--urls-per-fetch-part must be at least 1")
        if self.driver_memory_mb < 64:
            raise ConfigError("--driver-memory-mb must be at least 64")


class LocalExecutor:
    def map(
        self,
        fn: Callable,
        items: Iterable,
        name: Callable | None = None,
        resources=None,
        pool: bool = False,
    ) -> Iterator:
        for item in items:
            yield fn(item)

    def shutdown(self) -> None:
        pass

    def parallelism(self) -> int:
        """Tasks that run at once: what a plan may split work into to go faster."""
        return 1


class RayExecutor:
    def __init__(self, config: ExecutorConfig, num_cpus: int | None = None):
        """num_cpus: CPUs of a runtime started here (None: Ray counts them); ignored when Ray
        is running already or ray_address names a cluster."""
        import sys

        if config.ray_address is None and "ray" not in sys.modules:
            # A runtime of this process alone: on loopback, not on the machine's network
            # address, where any host that reaches it could join it or talk to it. (Ray reads
            # this when it is imported.)
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray

        self._ray = ray
        self._owns_runtime = not ray.is_initialized()
        if self._owns_runtime:
            # The driver's environment (PYTHONPATH, venv) carries over to local workers; on a
            # cluster the package must be installed on every node (see docs/scaling.md).
            local = config.ray_address is None
            ray.init(
                address=config.ray_address,
                num_cpus=num_cpus if local else None,
                include_dashboard=False,
                log_to_driver=True,
                logging_level=logging.WARNING,
                runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}}
                if local
                else None,
            )
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.max_in_flight = config.max_tasks_in_flight or max(2, 2 * self.cpus)

    def parallelism(self) -> int:
        return self.cpus

    def _gpu_options(self, resources) -> dict:
        """A GPU per task only where the cluster has GPUs (CPU workers otherwise). Ray ends a
        GPU task's worker process after each task by default (max_calls=1); 0 keeps it, so a
        model the worker loaded serves its later parts too."""
        wants = (resources or {}).get("num_gpus", 0)
        if not wants or self._ray.cluster_resources().get("GPU", 0) < wants:
            return {}
        return {"num_gpus": wants, "max_calls": 0}

    def _nodes(self) -> list[str]:
        """The alive nodes that run tasks (have CPUs), in a fixed order."""
        found = [
            n["NodeID"]
            for n in self._ray.nodes()
            if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0
        ]
        return sorted(found)

    def _affinity(self, nodes: list[str], index: int):
        """Parts go round robin to the nodes (their disks, network links and CPUs), not to
        whichever node freed a CPU first; soft: a node that is gone hands its share on."""
        if len(nodes) < 2:
            return "DEFAULT"
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return NodeAffinitySchedulingStrategy(node_id=nodes[index % len(nodes)], soft=True)

    def map(
        self,
        fn: Callable,
        items: Iterable,
        name: Callable | None = None,
        resources=None,
        pool: bool = False,
    ) -> Iterator:
        """Yield fn(item) for every item, as tasks finish (not in input order). `name(item)`:
        the task's name on the cluster's dashboard (default: the function's); `resources`:
        {"num_gpus": 1} for a task that uses a GPU where the cluster has any; `pool`: run the
        items on a pool of actors (one per GPU, or per CPU), whose state (a loaded model)
        serves every item an actor runs."""
        if pool:
            yield from self._pool_map(fn, list(items), name, resources)
            return
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=2, **self._gpu_options(resources))(fn)
        nodes = self._nodes()
        pending = []
        for index, item in enumerate(items):
            if len(pending) >= self.max_in_flight:
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])
            options = {"scheduling_strategy": self._affinity(nodes, index)}
            if name:
                options["name"] = name(item)
            pending.append(remote.options(**options).remote(item))
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])

    def _pool_map(self, fn: Callable, items: list, name, resources) -> Iterator:
        """Items go to actors as they become ready and free. An actor that never starts (its
        node's CPUs are gone) gets no item; one that dies hands its item to another."""
        from collections import deque

        ray = self._ray
        gpu = self._gpu_options(resources).get("num_gpus", 0)
        size = int(ray.cluster_resources().get("GPU", 0)) // gpu if gpu else self.cpus
        worker = ray.remote(num_cpus=1, **({"num_gpus": gpu} if gpu else {}))(PoolWorker)
        nodes = self._nodes()
        actors = [
            worker.options(scheduling_strategy=self._affinity(nodes, i)).remote()
            for i in range(max(1, min(size, len(items))))
        ]
        starting = {actor.ready.remote(): actor for actor in actors}
        queue, idle, running = deque(items), [], {}
        try:
            while queue or running:
                if not running and not starting and not idle:
                    raise RuntimeError(f"every actor of the pool died; {len(queue)} items left")
                if running or starting:
                    (ref,), _ = ray.wait([*running, *starting], num_returns=1)
                    actor, item = starting.pop(ref, None), None
                    if actor is None:
                        actor, item = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayActorError:  # its node died: the item goes on
                        queue.extendleft([] if item is None else [item])
                    else:
                        idle.append(actor)
                        if item is not None:
                            yield result
                while idle and queue:
                    actor, item = idle.pop(), queue.popleft()
                    call = actor.run.options(name=name(item)) if name else actor.run
                    running[call.remote(fn, item)] = (actor, item)
        finally:
            for actor in actors:
                ray.kill(actor)

    def shutdown(self) -> None:
        if self._owns_runtime:
            self._ray.shutdown()


class PoolWorker:
    """A Ray actor that runs the functions it is given; what they cache in the process (a loaded
    model) stays for the next item, so each actor loads a model once."""

    def ready(self) -> bool:
        return True

    def run(self, fn: Callable, item):
        return fn(item)


def _ray_running() -> bool:
    import sys

    ray = sys.modules.get("ray")  # not imported: not running, and no import to pay for
    return ray is not None and ray.is_initialized()


class AutoExecutor:
    """Ray where it can run tasks side by side, in-process where it cannot.

    A Ray runtime costs seconds to start and stop and a worker import per task; it pays off
    when tasks run in parallel. So: a cluster address, or a runtime someone started already,
    means Ray for every stage; otherwise a process allowed one CPU runs every stage in-process,
    and one with more starts Ray (with that many CPUs) at the first stage that has two or more
    parts, and keeps it for the later stages. A stage with a single part runs in-process."""

    def __init__(self, config: ExecutorConfig):
        self.config = config
        self.cpus = usable_cpus()
        self._local = LocalExecutor()
        self._ray: RayExecutor | None = None
        self._always_ray = config.ray_address is not None or _ray_running()
        if self._always_ray:
            self._ray = RayExecutor(config)
        elif self.cpus < 2:
            log.info("executor auto: in-process (this process may use %d CPU)", self.cpus)

    @property
    def uses_ray(self) -> bool:
        return self._ray is not None

    def map(
        self,
        fn: Callable,
        items: Iterable,
        name: Callable | None = None,
        resources=None,
        pool: bool = False,
    ) -> Iterator:
        items = list(items)  # small task descriptions: their count picks the executor
        if self._ray is None and self.cpus >= 2 and len(items) >= 2:
            log.info("executor auto: starting Ray with %d CPUs", self.cpus)
            self._ray = RayExecutor(self.config, num_cpus=self.cpus)
        if self._ray is not None and (self._always_ray or len(items) >= 2):
            return self._ray.map(fn, items, name, resources, pool)
        return self._local.map(fn, items)

    def shutdown(self) -> None:
        if self._ray is not None:
            self._ray.shutdown()

    def parallelism(self) -> int:
        return self._ray.parallelism() if self._ray is not None else max(1, self.cpus)


def make_executor(config: ExecutorConfig):
    if config.kind == "local":
        return LocalExecutor()
    if config.kind == "auto":
        return AutoExecutor(config)
    return RayExecutor(config)
