"""Process-group setup shared by every launcher: plain `python`, torchrun and Ray Train.

torchrun sets RANK/WORLD_SIZE/LOCAL_RANK and we create the group (NCCL on GPU, gloo on CPU);
Ray Train's TorchTrainer creates the group itself before calling the loop, and we only read it.
"""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: str  # "cpu" or "cuda:N"
    owns_group: bool = False  # this process created the group (and destroys it at the end)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _pick_device(requested: str, local_rank: int) -> str:
    import torch

    from manifests.config import ConfigError

    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {requested}: no CUDA device is visible to this process")
    if requested == "cpu" or not torch.cuda.is_available():
        return "cpu"
    if requested.startswith("cuda:"):  # one named GPU: the whole (one-process) run uses it
        return requested
    return f"cuda:{local_rank % torch.cuda.device_count()}"


def setup(requested_device: str = "auto", device: str | None = None) -> DistContext:
    """Join (or create) the process group this process belongs to; `device` overrides the pick
    (Ray Train hands each worker its GPU)."""
    import torch
    import torch.distributed as dist

    owns = False
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = device or _pick_device(requested_device, local_rank)
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        owns = True
    else:
        rank, world, local_rank = 0, 1, 0
    device = device or _pick_device(requested_device, local_rank)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    return DistContext(rank, world, local_rank, device, owns_group=owns)


def cleanup(ctx: DistContext) -> None:
    import torch.distributed as dist

    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(obj, world_size: int) -> list:
    if world_size == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(value: float, world_size: int, device: str) -> float:
    if world_size == 1:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world_size
