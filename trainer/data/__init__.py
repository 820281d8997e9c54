"""Training data: manifest-selected shard rows (or synthetic tensors) as a DataLoader of batches.

`select.resolve` turns a subset into row groups (with each row's selected captions), `frozen`
keeps a run's resolved rows in RUN_DIR/selection.parquet (a resume streams them again, skipping
the ones withdrawn since), `stream.ShardStream` streams them per worker, `reader` reads them and
picks each visit's caption (--caption-sampling), `image` decodes and augments,
`synthetic.SyntheticStream` replaces all of it for tests and benches.
The loader state saved in checkpoints is a plain dict:
`{"batches": micro-batches consumed per rank, "positions": {global worker: rows emitted},
"num_workers": loader workers per rank (>= 1), "world_size": ranks}`.
"""

from trainer.data.select import DataError, RowIndex, resolve

__all__ = [
    "DataError",
    "RowIndex",
    "auto_threads",
    "auto_workers",
    "build_loader",
    "resolve",
    "worker_count",
]

AUTO = -1  # --workers -1: sized by auto_workers when the run starts, then stored as a number


def auto_workers(cpus: int, ranks_on_this_machine: int = 1) -> int:
    """Loader processes per rank for `--workers -1`: the CPUs this process may use, shared by the
    ranks of this machine, less one for each rank's training loop; at least 1. (More workers than
    CPUs only contend: PyTorch warns about it on every run.)"""
    return max(1, cpus // max(1, ranks_on_this_machine) - 1)


def auto_threads(cpus: int, ranks_on_this_machine: int, workers: int) -> int:
    """torch threads of a rank's training loop for `--threads 0`: its share of the CPUs less the
    ones its loader workers keep busy; at least 1. torch's own default (every CPU) makes the
    loop's threads fight the workers for cores: on 2 CPUs with one worker, clip-tiny trains
    ~7x slower at torch's 2 threads than at 1 (bench/bench_train_vs_openclip.py)."""
    return max(1, cpus // max(1, ranks_on_this_machine) - max(0, workers))


def worker_count(requested: int, num_rows: int, world_size: int) -> int:
    """Loader processes per rank, reduced so every global worker owns at least one row."""
    if requested == 0:
        return 0
    if requested == AUTO:  # a caller that did not go through trainer.train.resolve_workers
        from manifests.cpus import usable_cpus

        requested = auto_workers(usable_cpus())
    return max(1, min(requested, num_rows // world_size))


def check_state(state: dict, num_workers: int, world_size: int) -> None:
    if state["num_workers"] != max(1, num_workers) or state["world_size"] != world_size:
        raise DataError(
            f"--resume: the run streamed its data with {state['world_size']} rank(s) x "
            f"{state['num_workers']} loader worker(s); resume with the same ranks and --workers "
            f"(now {world_size} x {max(1, num_workers)})"
        )


def build_loader(
    cfg,
    *,
    rank: int,
    world_size: int,
    image_size: int,
    context_length: int,
    index: RowIndex | None = None,
    state: dict | None = None,
    pin_memory: bool = False,
):
    """A DataLoader yielding (uint8 images, tokens, meta) micro-batches for this rank, and the
    number of loader workers per rank it uses (>= 1; 0 workers count as 1)."""
    import torch

    import trainer.models
    from trainer.data.stream import ShardStream
    from trainer.data.synthetic import SyntheticStream

    batches = state["batches"] if state else 0
    if cfg.synthetic:
        if state:
            check_state(state, 1, world_size)
        dataset = SyntheticStream(
            batch_size=cfg.batch_size,
            image_size=image_size,
            context_length=context_length,
            seed=cfg.seed,
            rank=rank,
            world_size=world_size,
            position=batches,
        )
        return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=0), 1

    global_batch = cfg.batch_size * cfg.accum_steps * world_size
    samples = index.num_samples(per_caption=cfg.caption_sampling == "all")
    if global_batch > samples:
        raise DataError(
            f"the batch ({cfg.batch_size} x {cfg.accum_steps} accumulation x {world_size} ranks "
            f"= {global_batch}) is larger than the subset ({samples} samples); "
            "lower --batch-size"
        )
    workers = worker_count(cfg.workers, samples, world_size)
    if state:
        check_state(state, workers, world_size)
    dataset = ShardStream(
        index,
        batch_size=cfg.batch_size,
        image_size=image_size,
        tokenizer=trainer.models.tokenizer(cfg.model),
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        num_workers=workers,
        shuffle_buffer=cfg.shuffle_buffer,
        positions=state["positions"] if state else None,
        worker_offset=batches % max(1, workers),
        decode=cfg.decode,
        caption_sampling=cfg.caption_sampling,
        crop_scale=cfg.crop_scale,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    return loader, max(1, workers)
