"""The `trainer` command.

    trainer run --data DIR [--subset NAME | --where SQL] --model NAME --out RUN_DIR [...]
    trainer run ... --resume                        continue exactly where the run stopped
    torchrun --nproc-per-node 8 -m trainer run ...  DDP (NCCL on GPU, gloo on CPU)
    trainer run ... --ray-address auto --num-workers 16 --use-gpu   a Ray Train job
    trainer plot RUN_DIR                            training curves as PNG

Every option of `run` is a field of trainer.config.TrainConfig. Bad input ends with one line on
stderr and exit status 2, never a traceback.
"""

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from trainer.config import ConfigError, TrainConfig, merge_for_resume

LAUNCH_OPTIONS = ("ray_address", "num_workers", "use_gpu")


class CliError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise CliError(f"{message} (see `{self.prog} --help`)")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {f.default!r})"
        if f.name == "eval_set":  # repeatable; stored comma-joined in the config
            parser.add_argument(flag, action="append", metavar="DIR", help=help_text)
        elif f.type in (bool, "bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}.get(f.type, f.type)
            parser.add_argument(flag, type=kind, metavar=f.name.upper(), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="trainer", description="Train CLIP models on pipeline-built datasets.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser(
        "run", help="train (or resume) a model", argument_default=argparse.SUPPRESS
    )
    _add_config_options(run)
    ray = run.add_argument_group("Ray cluster job (Ray Train TorchTrainer)")
    ray.add_argument("--ray-address", help="Ray cluster address ('auto', ray://host:10001, ...)")
    ray.add_argument("--num-workers", type=int, help="training workers (ranks) on the cluster")
    ray.add_argument("--use-gpu", action="store_true", help="one GPU per Ray worker")
    plot = commands.add_parser("plot", help="write training curves of a run folder as PNG")
    plot.add_argument("run_dir")
    plot.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/curves.png)")
    commands.add_parser("eval", help="evaluate a checkpoint (see `trainer eval --help`)")
    return parser


def resolve_config(given: dict) -> TrainConfig:
    """TrainConfig from the options given on the command line; with --resume and an existing run,
    the run's stored config is the base."""
    from trainer import checkpoint
    from trainer.train import read_config

    out = given.get("out")
    if given.get("resume") and out:
        if (Path(out) / "config.json").exists():
            given = merge_for_resume(read_config(out)["config"], given)
        elif checkpoint.latest_path(out).exists():
            given = merge_for_resume(checkpoint.load(checkpoint.latest_path(out))["config"], given)
    return TrainConfig.from_dict(given)


def _check(cfg: TrainConfig) -> None:
    """Cheap checks before anything starts (and before a Ray job is submitted)."""
    import trainer.models
    from trainer.train import resume_checkpoint

    if not cfg.synthetic and not cfg.data:
        raise ConfigError("--data DIR is required (or --synthetic for generated data)")
    trainer.models.check_model_name(cfg.model)
    if not cfg.resume:
        resume_checkpoint(cfg)  # refuses to overwrite an existing run
    elif not cfg.out:
        raise ConfigError("--out RUN_DIR is required")


def cmd_run(args) -> int:
    options = vars(args)
    options.pop("command")
    if isinstance(options.get("eval_set"), list):
        options["eval_set"] = ",".join(options["eval_set"])
    launch = {k: options.pop(k) for k in LAUNCH_OPTIONS if k in options}
    cfg = resolve_config(options)
    _check(cfg)
    if launch.get("ray_address") or launch.get("num_workers"):
        from trainer.ray_job import run_on_ray

        summary = run_on_ray(
            cfg,
            address=launch.get("ray_address"),
            num_workers=launch.get("num_workers", 1),
            use_gpu=launch.get("use_gpu", False),
        )
    else:
        from trainer.train import train

        summary = train(cfg)
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


def _eval(argv: list[str]) -> int:
    """`trainer eval ...`: zero-shot, linear probes, retrieval, clean vs overlap."""
    from trainer.evaluation.cli import eval_main  # its own parser and errors (exit 2)

    return eval_main(argv)


def main(argv=None) -> int:
    from trainer.data import DataError
    from trainer.models import UnknownModelError

    argv = sys.argv[1:] if argv is None else list(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if argv[:1] == ["eval"]:
            return _eval(argv[1:])
        args = build_parser().parse_args(argv)
        return {"run": cmd_run, "plot": cmd_plot}[args.command](args)
    except (CliError, ConfigError, DataError, UnknownModelError, FileNotFoundError) as exc:
        print(f"trainer: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
