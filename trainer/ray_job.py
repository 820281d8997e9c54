"""Run the training loop as a Ray Train job (TorchTrainer): same `train()` as torchrun.

Ray Train starts `num_workers` processes, creates the torch process group (NCCL with GPUs, gloo
without) and gives each worker its device; `train()` joins that group. Rank 0 writes the run
folder, so on a multi-node cluster --out (and --data) must be paths every node sees (a shared
filesystem); they are made absolute here because Ray workers run in their own directories.
"""

import dataclasses
import logging
import os

from manifests.storage import location
from trainer.config import TrainConfig

log = logging.getLogger(__name__)


def _worker_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch

    from trainer import distributed
    from trainer.train import train

    cfg = TrainConfig.from_dict(config["train"])
    ctx = distributed.setup(cfg.device, device=str(ray.train.torch.get_device()))
    summary = train(cfg, ctx)
    ray.train.report({k: v for k, v in summary.items() if isinstance(v, int | float | str)})


def _check_data_on_driver(cfg: TrainConfig, num_workers: int) -> None:
    """Fail fast with the data errors a worker would hit, when the driver sees the data too."""
    if cfg.synthetic or not location(cfg.data).is_dir():
        return
    from trainer.data import DataError, resolve

    index = resolve(cfg.data, cfg.subset, cfg.where, cfg.caption_weights)
    rows = index.num_samples(per_caption=cfg.caption_sampling == "all")
    if cfg.batch_size * cfg.accum_steps * num_workers > rows:
        raise DataError(
            f"the batch ({cfg.batch_size} x {cfg.accum_steps} x {num_workers} workers) is larger "
            f"than the subset ({rows} samples); lower --batch-size"
        )


def _local_loopback_only() -> None:
    """A local Ray instance (no --ray-address) listens on 127.0.0.1 only (Ray otherwise binds to
    the machine's network address, exposing its ports; it reads this switch when first imported)
    and sends no usage statistics."""
    import sys

    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports to the internet


def _summary(run_dir) -> dict:
    from trainer.metrics import read_rows

    run_dir = location(run_dir)
    rows = read_rows(run_dir / "metrics.csv")
    latest = run_dir / "latest.pt"
    summary = {"run_dir": str(run_dir), "steps": 0, "samples_seen": 0, "loss": None}
    if rows:
        last = rows[-1]
        summary.update(
            steps=int(last["step"]), samples_seen=int(last["samples_seen"]), loss=last["loss"]
        )
    summary["checkpoint"] = str(latest) if latest.exists() else None
    return summary


def run_on_ray(cfg: TrainConfig, address: str | None, num_workers: int, use_gpu: bool) -> dict:
    local = not address or address == "local"
    if local:
        _local_loopback_only()
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = dataclasses.replace(
        cfg,
        out=str(location(cfg.out).resolve()),
        data=str(location(cfg.data).resolve()) if cfg.data else "",
    )
    _check_data_on_driver(cfg, num_workers)
    if not ray.is_initialized():
        if local:
            ray.init(logging_level=logging.WARNING)
        else:
            ray.init(address=address)
    threads = cfg.threads or 1  # without a limit each worker would use every core of its node
    scaling = ScalingConfig(
        num_workers=num_workers,
        use_gpu=use_gpu,
        resources_per_worker={"CPU": max(1, threads), **({"GPU": 1} if use_gpu else {})},
    )
    job = TorchTrainer(
        _worker_loop,
        train_loop_config={"train": dataclasses.replace(cfg, threads=threads).to_dict()},
        scaling_config=scaling,
        run_config=RunConfig(
            name=location(cfg.out).name, storage_path=str(location(cfg.out) / "ray")
        ),
    )
    job.fit()  # raises ray.train.TrainingFailedError if a worker failed
    return _summary(cfg.out)
