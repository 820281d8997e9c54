"""The training loop: one function, `train(cfg)`, for every launcher (python, torchrun, Ray).

It builds the model, optimizer and data stream, restores all three from OUT/latest.pt when
resuming, then steps: fetch micro-batches, set the learning rate, `step.train_step`, log, save.
"""

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field

from manifests.storage import location
from trainer import checkpoint, distributed
from trainer.config import ConfigError, TrainConfig
from trainer.runfolder import RunFolder

log = logging.getLogger(__name__)


class RunExistsError(ConfigError):
    pass


def resume_checkpoint(cfg: TrainConfig) -> dict | None:
    """The checkpoint to resume from, or None for a fresh run (an error if OUT already holds a
    run and --resume was not given: it would be overwritten)."""
    if not cfg.out:
        raise ConfigError("--out RUN_DIR is required")
    latest = checkpoint.latest_path(cfg.out)
    if not latest.exists():
        if cfg.resume:
            log.info("--resume: no %s yet, starting a fresh run", latest)
        return None
    if not cfg.resume:
        raise RunExistsError(
            f"{cfg.out} already holds a run ({latest.name}); "
            "pass --resume to continue it or choose another --out"
        )
    return checkpoint.load(latest)


def _autocast(cfg: TrainConfig, device: str):
    import torch

    on_gpu = device.startswith("cuda")
    # fp8: torchao's float8 matmuls run inside bf16 autocast, which covers the other ops
    bf16 = cfg.precision in ("bf16", "fp8") or (cfg.precision == "auto" and on_gpu)
    if not bf16:
        return contextlib.nullcontext
    device_type = "cuda" if on_gpu else "cpu"
    return lambda: torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def _write_config(cfg: TrainConfig, world_size: int, run_dir) -> None:
    import open_clip
    import torch

    from manifests.layout import write_json_atomic

    record = {
        "config": cfg.to_dict(),
        "world_size": world_size,
        "global_batch": cfg.batch_size * cfg.accum_steps * world_size,
        "steps": cfg.steps(world_size),
        "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__},
    }
    write_json_atomic(record, run_dir / "config.json")


def _build(cfg: TrainConfig, ctx, ckpt: dict | None):
    """Model (on device), optimizer, loader and the starting counters."""
    import trainer.models as models
    from trainer import levers
    from trainer.data import build_loader, frozen, gpu_decode
    from trainer.optim import make_optimizer

    levers.check(cfg, ctx.device)  # before any data is resolved
    gpu_decode.check(cfg.decode, ctx.device)
    index = None
    if not cfg.synthetic:  # every rank resolves (or loads) on its own; rank 0 writes
        index = frozen.for_run(cfg, resuming=ckpt is not None, is_main=ctx.is_main)
    model = models.create(cfg.model, cfg.loss, cfg.seed).to(ctx.device)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model = levers.prepare(model, cfg)
    optimizer = make_optimizer(model, cfg)
    start = {"step": 0, "samples_seen": 0, "corrupt": 0, "withdrawn": 0, "data": None}
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        checkpoint.restore_rng(ckpt["rng"])
        start = {k: ckpt.get(k, 0) if k == "withdrawn" else ckpt[k] for k in start}  # older: none
    loader, workers = build_loader(
        cfg,
        rank=ctx.rank,
        world_size=ctx.world_size,
        image_size=models.image_size(model),
        context_length=model.context_length,
        index=index,
        state=start["data"],
        pin_memory=ctx.device.startswith("cuda"),
    )
    return model, optimizer, loader, workers, start


def _wrap(model, cfg: TrainConfig, ctx):
    """(model to call, DDP wrapper or None)."""
    from trainer.levers import compile_model

    ddp = None
    if ctx.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.device] if ctx.device.startswith("cuda") else None
        model = ddp = DistributedDataParallel(model, device_ids=ids)
    return compile_model(model, cfg), ddp


def train(cfg: TrainConfig, ctx=None) -> dict:
    """Train (or resume) the run described by `cfg`; returns a summary dict."""
    ctx = ctx or distributed.setup(cfg.device)
    try:
        return _train(cfg, ctx)
    finally:
        distributed.cleanup(ctx)


@dataclass
class Progress:
    """Counters of the run (saved in checkpoints) and of the current logging window."""

    step: int
    seen: int  # samples, all ranks
    corrupt: int  # undecodable images skipped, all ranks, as of the last log or save
    withdrawn: int  # rows skipped as no longer served (trainer.data.frozen), likewise
    data: dict  # loader state (see trainer.data)
    started: float = field(default_factory=time.perf_counter)
    window_start: float = field(default_factory=time.perf_counter)
    window_wait: float = 0.0  # seconds spent waiting for batches
    window_samples: int = 0
    window_corrupt: int = 0  # this rank only, until the next collective sum
    window_withdrawn: int = 0  # likewise


def _fetch(batches, cfg: TrainConfig, ctx, progress: Progress, cut=None) -> list:
    """The micro-batches of one step, on the device; records loader positions and waiting.
    `cut` (--trim-text) trims each token batch while it is still on the host: its length is
    read from the tokens there, with no device sync."""
    t0 = time.perf_counter()
    micro = []
    for _ in range(cfg.accum_steps):
        images, tokens, meta = next(batches)
        progress.data["positions"][meta["worker"]] = meta["position"]
        progress.window_corrupt += meta["corrupt"]
        progress.window_withdrawn += meta.get("withdrawn", 0)  # synthetic batches have none
        if hasattr(images, "decode_on"):  # --decode gpu: JPEG bytes, decoded here on the device
            images, unreadable = images.decode_on(ctx.device)
            progress.window_corrupt += unreadable
        if cut is not None:
            tokens = cut(tokens)
        micro.append(
            (images.to(ctx.device, non_blocking=True), tokens.to(ctx.device, non_blocking=True))
        )
    progress.data["batches"] += cfg.accum_steps
    progress.window_wait += time.perf_counter() - t0
    return micro


def _metrics_row(progress: Progress, loss, lr: float, model, ctx) -> dict:
    now = time.perf_counter()
    span = max(now - progress.window_start, 1e-9)
    row = {
        "step": progress.step,
        "samples_seen": progress.seen,
        "loss": distributed.mean_across_ranks(loss.item(), ctx.world_size, ctx.device),
        "lr": lr,
        "logit_scale": model.logit_scale.exp().item(),
        "samples_per_s": progress.window_samples / span,
        "data_wait": progress.window_wait / span,
        "corrupt_images": progress.corrupt,
        "withdrawn_images": progress.withdrawn,
        "elapsed_s": now - progress.started,
    }
    progress.window_start, progress.window_wait, progress.window_samples = now, 0.0, 0
    return row


def _train(cfg: TrainConfig, ctx) -> dict:
    import torch

    import trainer.models as models
    from trainer.augment import for_run as colour_augmentation
    from trainer.loss import build as build_loss
    from trainer.metrics import MetricsLogger
    from trainer.models.text import for_training as trim_text
    from trainer.optim import lr_at
    from trainer.step import train_step

    cfg = resolve_workers(cfg, ctx)
    torch.set_num_threads(training_threads(cfg))
    folder = RunFolder(cfg.out)
    run_dir = folder.out
    ckpt = resume_checkpoint(cfg)
    model, optimizer, loader, workers, start = _build(cfg, ctx, ckpt)
    ema = _weight_average(cfg, ctx, model, ckpt)
    del ckpt  # its tensors are in the model and optimizer now
    data = start["data"] or {"batches": 0, "positions": {}}
    data.update(num_workers=workers, world_size=ctx.world_size)
    progress = Progress(
        start["step"], start["samples_seen"], start["corrupt"], start["withdrawn"], data
    )
    total = cfg.steps(ctx.world_size)
    stop = min(total, cfg.stop_after) if cfg.stop_after else total
    summary = {"run_dir": str(run_dir), "steps": progress.step, "samples_seen": progress.seen}
    if progress.step >= stop:
        log.info("%s: already at step %d of %d, nothing to do", run_dir, progress.step, stop)
        return {**summary, "loss": None}
    logger = None
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_config(cfg, ctx.world_size, run_dir)
        folder.pull()
        logger = MetricsLogger(folder.local, start_step=progress.step)
    evaluator = _evaluator(cfg) if ctx.is_main else None
    call, cut_tokens = trim_text(model, cfg.trim_text)  # before DDP: it wraps what is called
    call, ddp = _wrap(call, cfg, ctx)
    loss_fn = build_loss(cfg.loss, ctx.rank, ctx.world_size, chunk=cfg.loss_chunk)
    mean, std = models.mean_std(model)
    step_args = dict(
        mean=mean,
        std=std,
        autocast=_autocast(cfg, ctx.device),
        grad_clip=cfg.grad_clip,
        ddp=ddp,
        channels_last=cfg.channels_last,
    )
    global_batch = cfg.batch_size * cfg.accum_steps * ctx.world_size
    log.info(
        "rank %d: steps %d..%d of %d, global batch %d, device %s, %d loader worker(s)",
        ctx.rank,
        progress.step,
        stop,
        total,
        global_batch,
        ctx.device,
        workers,
    )
    augment = colour_augmentation(cfg, ctx.rank)
    batches = iter(loader)
    while progress.step < stop:
        micro = _fetch(batches, cfg, ctx, progress, cut_tokens)
        if augment is not None:  # device work, outside _fetch's data-wait clock
            micro = [(augment(im, progress.step, j), tx) for j, (im, tx) in enumerate(micro)]
        lr = lr_at(progress.step, cfg, total)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = train_step(call, model, loss_fn, optimizer, micro, **step_args)
        progress.step += 1
        if ema:
            ema.update(model, progress.step)
        progress.seen += global_batch
        progress.window_samples += global_batch
        logging_now = progress.step % cfg.log_every == 0 or progress.step == stop
        saving_now = progress.step % cfg.save_every == 0 or progress.step == stop
        if logging_now or saving_now:  # every rank takes part in these collectives
            _sum_skipped(progress, ctx)
        if logging_now:
            row = _metrics_row(progress, loss, lr, model, ctx)
            summary["loss"] = row["loss"]
            if logger:
                logger.log(row)
        if evaluator and (
            progress.step == stop or (cfg.eval_every and progress.step % cfg.eval_every == 0)
        ):
            scores = evaluator(ema.model if ema else model, ctx.device)
            logger.log_eval(progress.step, scores)
            summary["eval"] = scores
        if saving_now:
            if logger:  # metrics first: a checkpoint in the store always has its rows there
                folder.sync()
            path = _save(cfg, ctx, model, optimizer, progress, run_dir, ema)
            summary["checkpoint"] = str(path) if path else None
    if logger:
        logger.close()
        folder.sync()
    return {
        **summary,
        "steps": progress.step,
        "samples_seen": progress.seen,
        "corrupt_images": progress.corrupt,
        "withdrawn_images": progress.withdrawn,
    }


def resolve_workers(cfg: TrainConfig, ctx) -> TrainConfig:
    """`--workers -1` becomes a number before anything is stored, so config.json and every
    checkpoint hold the count the data stream was cut for, and a resume on a machine with another
    CPU count streams the same order. Ranks take the smallest count any of them chose: the stream
    gives each global worker (rank x worker) its slice, so all ranks need the same count."""
    import dataclasses
    import os

    from manifests.cpus import usable_cpus
    from trainer.data import AUTO, auto_workers

    if cfg.workers != AUTO:
        return cfg
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun and Ray Train set it
    mine = auto_workers(usable_cpus(), local_ranks)
    chosen = min(distributed.all_gather_objects(mine, ctx.world_size))
    log.debug("--workers -1: %d loader worker(s) per rank (%d CPUs usable)", chosen, usable_cpus())
    return dataclasses.replace(cfg, workers=chosen)


def training_threads(cfg: TrainConfig) -> int:
    """--threads, or for 0 the CPUs this rank's share leaves beside its loader workers."""
    import os

    from manifests.cpus import usable_cpus
    from trainer.data import auto_threads

    if cfg.threads:
        return cfg.threads
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return auto_threads(usable_cpus(), local_ranks, 0 if cfg.synthetic else cfg.workers)


def _evaluator(cfg: TrainConfig):
    """Zero-shot on --eval-set folders; built before the first step so a bad folder fails early."""
    if not cfg.eval_set:
        return None
    from trainer.evaluation.zeroshot import ZeroShotEvaluator

    return ZeroShotEvaluator(list(cfg.eval_set), cfg.model, cfg.eval_templates)


def _sum_across_ranks(count: int, ctx) -> int:
    return round(distributed.mean_across_ranks(count, ctx.world_size, ctx.device) * ctx.world_size)


def _sum_skipped(progress: Progress, ctx) -> None:
    """Fold every rank's skipped rows of the window into the run's counts (a collective)."""
    progress.corrupt += _sum_across_ranks(progress.window_corrupt, ctx)
    progress.withdrawn += _sum_across_ranks(progress.window_withdrawn, ctx)
    progress.window_corrupt = progress.window_withdrawn = 0


def _weight_average(cfg: TrainConfig, ctx, model, ckpt: dict | None):
    """--ema's average (main rank only), restored from the checkpoint on a resume."""
    if not (cfg.ema and ctx.is_main):
        return None
    from trainer.ema import WeightAverage

    ema = WeightAverage(model, cfg.ema)
    if ckpt is not None:
        if "ema_state_dict" not in ckpt:
            raise ConfigError(
                f"--resume: {cfg.out}'s checkpoint has no ema_state_dict, but its run has "
                f"--ema {cfg.ema}: it was not written by this run"
            )
        ema.load_state_dict(ckpt["ema_state_dict"])
    return ema


def _save(cfg, ctx, model, optimizer, progress: Progress, run_dir, ema=None):
    """Collect every rank's loader positions; rank 0 writes the checkpoint."""
    positions = {}
    for part in distributed.all_gather_objects(progress.data["positions"], ctx.world_size):
        positions.update(part)
    if not ctx.is_main:
        return None
    payload = {
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": progress.step,
        "samples_seen": progress.seen,
        "corrupt": progress.corrupt,
        "withdrawn": progress.withdrawn,
        "config": cfg.to_dict(),
        "model_name": cfg.model,
        "world_size": ctx.world_size,
        "data": {**progress.data, "positions": positions},
        "rng": checkpoint.rng_state(),
    }
    if ema is not None:
        payload["ema_state_dict"] = ema.state_dict()
    return checkpoint.save(run_dir, payload, keep=cfg.keep)


def read_config(run_dir) -> dict:
    return json.loads((location(run_dir) / "config.json").read_text())
