"""Benchmark: what each lever of the training step does on this machine (issue 17).

Each variant runs `trainer.step.train_step` on synthetic batches in a fresh process (so compile
caches and allocator state do not leak between them), warm-up steps first (torch.compile compiles
there), then --steps timed steps. Variants run in rounds, A B C ... A B C ..., so load from other
processes on a shared machine spreads over all of them; the table gives the median over rounds of
samples/s (wall) and samples per CPU-second of the process, with the spread of the CPU figure.
Every variant but `no-trim-text` cuts the text tokens as the trainer does by default
(--trim-text); synthetic captions are 3 tokens, cut to 8 of clip-tiny's 32: more than the cut
real captions allow (their batch's longest caption sets it).

    .venv/bin/python bench/bench_levers.py [--model clip-tiny] [--batch-size 128] [--rounds 2]
        [--variants eager,chunk,...] [--threads 1]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

VARIANTS = {
    "eager": [],
    "no-trim-text": ["--no-trim-text"],
    "loss-chunk 32": ["--loss-chunk", "32"],
    "channels-last": ["--channels-last"],
    "grad-checkpointing": ["--grad-checkpointing"],
    "accum-steps 2 (half batch)": ["--accum-steps", "2"],
    "compile": ["--compile"],
    "compile forward+loss": ["--compile", "--whole"],
}


def child(argv: list[str]) -> None:
    import contextlib

    import torch

    import trainer.models as models
    from trainer import levers
    from trainer.config import TrainConfig
    from trainer.data.synthetic import SyntheticStream
    from trainer.loss import build
    from trainer.models.text import for_training
    from trainer.optim import make_optimizer
    from trainer.step import _forward, train_step

    p = argparse.ArgumentParser()
    p.add_argument("--whole", action="store_true")
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    args, rest = p.parse_known_args(argv)
    cfg = TrainConfig(**_config(rest))
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    model = models.create(cfg.model, cfg.loss, cfg.seed)
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    model = levers.prepare(model, cfg)
    optimizer = make_optimizer(model, cfg)
    loss_fn = build(cfg.loss, 0, 1, chunk=cfg.loss_chunk)
    mean, std = models.mean_std(model)
    micro_size = cfg.batch_size // cfg.accum_steps
    stream = SyntheticStream(
        batch_size=micro_size,
        image_size=models.image_size(model),
        context_length=model.context_length,
        seed=0,
        rank=0,
        world_size=1,
    )
    trimmed, cut = for_training(model, cfg.trim_text)  # as trainer.train calls the model
    call = model if args.whole else levers.compile_model(trimmed, cfg)
    if args.whole:  # forward and loss as one graph: the loss's tiles fuse with the projections

        class Whole(torch.nn.Module):
            def forward(self, images, tokens):
                return loss_fn(*_forward(model, images, tokens, mean, std, cfg.channels_last))

        whole = torch.compile(Whole())
    batches = iter(stream)

    def step():
        micro = [next(batches)[:2] for _ in range(cfg.accum_steps)]
        if not args.whole:
            kw = dict(mean=mean, std=std, autocast=contextlib.nullcontext, grad_clip=1.0)
            return train_step(
                call,
                model,
                loss_fn,
                optimizer,
                micro,
                **kw,
                channels_last=cfg.channels_last,
                cut_tokens=cut,
            )
        optimizer.zero_grad(set_to_none=True)
        loss = whole(*micro[0])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.detach()

    t0 = time.perf_counter()
    for _ in range(args.warmup_steps):
        step()
    warm = time.perf_counter() - t0
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    samples = args.steps * cfg.batch_size
    out = {"per_s": samples / wall, "per_cpu_s": samples / cpu, "warmup_s": warm}
    print(json.dumps({**out, "loss": loss.item()}))


def _config(rest: list[str]) -> dict:
    """--flag value pairs (and bare --flags) as TrainConfig keywords."""
    values, i = {}, 0
    while i < len(rest):
        key = rest[i].lstrip("-").replace("-", "_")
        if key.startswith("no_"):  # --no-x: a boolean turned off
            values[key[3:]], i = False, i + 1
        elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            values[key], i = rest[i + 1], i + 2
        else:
            values[key], i = True, i + 1
    ints = {"batch_size", "accum_steps", "loss_chunk", "threads"}
    return {k: int(v) if k in ints else v for k, v in values.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="clip-tiny")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    args = p.parse_args()
    names = args.variants.split(",")
    base = ["--model", args.model, "--batch-size", str(args.batch_size)]
    base += ["--threads", str(args.threads), "--steps", str(args.steps)]
    runs = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            cmd = [sys.executable, __file__, "--child", *base, *VARIANTS[name]]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{args.model}, batch {args.batch_size}, {args.threads} thread(s), fp32, CPU")
    print(f"{'variant':30} {'samples/s':>10} {'per CPU-s':>10} {'spread':>7} {'warm-up s':>9}")
    for name, rows in runs.items():
        cpu = [r["per_cpu_s"] for r in rows]
        spread = (max(cpu) - min(cpu)) / statistics.median(cpu)
        print(
            f"{name:30} {statistics.median(r['per_s'] for r in rows):10.1f} "
            f"{statistics.median(cpu):10.1f} {spread:7.1%} "
            f"{statistics.median(r['warmup_s'] for r in rows):9.1f}"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
