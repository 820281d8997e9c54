"""The `trainer` command.

    trainer run --data DIR [--subset NAME | --where SQL] --model NAME --out RUN_DIR [...]
    trainer run ... --resume                        continue exactly where the run stopped
    torchrun --nproc-per-node 8 -m trainer run ...  DDP (NCCL on GPU, gloo on CPU)
    trainer run ... --ray-address auto --num-workers 16 --use-gpu   a Ray Train job
    trainer plot RUN_DIR                            training curves as PNG
    trainer eval --checkpoint RUN/latest.pt --eval-set DIR ... [--data DIR] [--out FILE.json]

Every option of `run` is a field of trainer.config.TrainConfig (its flag generated from it), as
every option of `eval` is one of trainer.evaluation.cli.EvalOptions. The conventions are those
of manifests.cli, shared with `pipeline`: bad input ends with one line on stderr and exit status
2 (a traceback too with -v).
"""

import argparse
import os
import sys

from manifests.cli import Parser, add_command, add_config_options, add_verbosity, given, run_cli
from trainer.config import TrainConfig


def build_parser() -> argparse.ArgumentParser:
    from trainer.evaluation.cli import add_eval_arguments

    parser = Parser(prog="trainer", description="Train CLIP models on pipeline-built datasets.")
    add_verbosity(parser)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    run = add_command(commands, "run", "trainer.cli:cmd_run", help="train (or resume) a model")
    add_config_options(run, TrainConfig)
    ray = run.add_argument_group("Ray cluster job (Ray Train TorchTrainer)")
    ray.add_argument("--ray-address", help="Ray cluster address ('auto', ray://host:10001, ...)")
    ray.add_argument("--num-workers", type=int, help="training workers (ranks) on the cluster")
    ray.add_argument(
        "--use-gpu",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="one GPU per Ray worker",
    )
    plot = add_command(
        commands,
        "plot",
        "trainer.cli:cmd_plot",
        help="write training curves of a run folder as PNG",
    )
    plot.add_argument("run_dir")
    plot.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/curves.png)")
    evaluate = add_command(
        commands,
        "eval",
        "trainer.evaluation.cli:run_eval",
        help="zero-shot, linear probes, retrieval, clean vs overlap",
    )
    add_eval_arguments(evaluate)
    return parser


def cmd_run(args) -> int:
    from trainer.launch import launch, resolve_config

    summary = launch(
        resolve_config(given(args, TrainConfig)),
        ray_address=args.ray_address,
        num_workers=args.num_workers,
        use_gpu=args.use_gpu,
    )
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 speaks for the run
        return 0
    if summary and summary.get("loss") is not None:
        print(
            f"{summary['run_dir']}: step {summary['steps']}, {summary['samples_seen']} samples, "
            f"loss {summary['loss']:.4f}, checkpoint {summary.get('checkpoint')}"
        )
    elif summary:
        print(f"{summary['run_dir']}: already finished at step {summary['steps']}")
    return 0


def cmd_plot(args) -> int:
    from trainer.plot import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0


def _user_errors() -> tuple:
    return (FileNotFoundError,)


def main(argv=None) -> int:
    import logging

    rank = int(os.environ.get("RANK", "0"))  # torchrun: rank 0 speaks for the run
    level = None if rank == 0 else logging.WARNING
    return run_cli("trainer", build_parser(), argv, _user_errors, log_level=level)


if __name__ == "__main__":
    sys.exit(main())
