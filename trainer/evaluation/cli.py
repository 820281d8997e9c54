"""`trainer eval`: zero-shot, linear probes, clean vs overlap and retrieval for one checkpoint.

    trainer eval --checkpoint RUN/latest.pt --eval-set evals/pets --eval-set evals/flowers
    trainer eval --checkpoint ... --eval-set evals/pets --data DIR --out results.json

`add_eval_arguments(parser)` adds the options to any argparse parser (the `trainer` CLI's `eval`
subcommand), `run_eval(args)` runs them, `eval_main(argv)` is a standalone entry point
(`python -m trainer.evaluation.cli ...`). Bad input ends with one line on stderr and status 2.
"""

import argparse
import dataclasses
import logging
import sys
import time
import typing
from dataclasses import dataclass, field

from trainer.evaluation.errors import EvalError

log = logging.getLogger(__name__)


@dataclass
class EvalOptions:
    checkpoint: str
    eval_set: list[str] = field(default_factory=list)
    data: str = ""
    subset: str = ""
    out: str = ""
    model: str = ""
    templates: str = "imagenet80"
    device: str = "auto"
    batch_size: int = 64
    workers: int = 2
    threads: int = 0
    probe: bool = True
    probe_shots: str = "1,2,4,8,16"
    probe_seeds: int = 3
    probe_test_fraction: float = 0.5
    probe_val_fraction: float = 0.2
    probe_c: float = 0.0
    probe_train: list[str] = field(default_factory=list)
    split_seed: int = 0
    retrieval: bool = True
    heldout_permille: int = 10
    retrieval_max: int = 1000

    def __post_init__(self):
        self._check_types()
        if not self.checkpoint:
            raise EvalError("--checkpoint PATH is required")
        if not self.eval_set and not self.data:
            raise EvalError("give at least one --eval-set DIR (or --data DIR for retrieval)")
        for name in ("batch_size", "probe_seeds", "retrieval_max"):
            if getattr(self, name) < 1:
                raise EvalError(f"--{_flag(name)} must be at least 1")
        for name in ("workers", "threads", "probe_c"):
            if getattr(self, name) < 0:
                raise EvalError(f"--{_flag(name)} must not be negative")
        if not 0 <= self.heldout_permille <= 1000:
            raise EvalError("--heldout-permille must be in 0..1000")

    def _check_types(self) -> None:
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), typing.get_origin(f.type) or f.type
            accepted = (int, float) if kind is float else kind
            if not isinstance(value, accepted) or (kind is int and isinstance(value, bool)):
                raise EvalError(f"--{_flag(f.name)} must be {kind.__name__}, not {value!r}")
            if kind is list and not all(isinstance(v, str) for v in value):
                raise EvalError(f"--{_flag(f.name)} must be a list of strings, not {value!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "EvalOptions":
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise EvalError(f"unknown eval option(s): {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_args(cls, args) -> "EvalOptions":
        """From an argparse namespace; keys that are not eval options (`command`) are skipped."""
        given = vars(args)
        return cls(**{f.name: given[f.name] for f in dataclasses.fields(cls) if f.name in given})

    def probe_config(self):
        from trainer.evaluation.linear_probe import ProbeConfig

        try:
            shots = tuple(int(k) for k in self.probe_shots.split(",") if k.strip())
        except ValueError:
            raise EvalError(
                f"--probe-shots must be a comma list of integers, not {self.probe_shots!r}"
            ) from None
        return ProbeConfig(
            shots=shots,
            seeds=self.probe_seeds,
            test_fraction=self.probe_test_fraction,
            val_fraction=self.probe_val_fraction,
            fixed_c=self.probe_c or None,
            split_seed=self.split_seed,
        )


def _flag(name: str) -> str:
    return name.replace("_", "-")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Every `trainer eval` option, with its default (so any parser can carry them)."""
    _add_main_arguments(parser)
    _add_probe_arguments(parser.add_argument_group("linear probes"))
    _add_retrieval_arguments(parser.add_argument_group("retrieval (with --data)"))


def _add_main_arguments(parser) -> None:
    a = parser.add_argument
    a("--checkpoint", required=True, help="checkpoint written by `trainer run` (or open_clip)")
    a(
        "--eval-set",
        action="append",
        default=[],
        metavar="DIR",
        help="ImageFolder eval set DIR/<class name>/<image> (repeatable)",
    )
    a(
        "--data",
        default="",
        metavar="DIR",
        help="dataset folder: clean vs overlap from DIR/overlap.parquet, retrieval on held-out rows",
    )
    a("--subset", default="", help="named subset for retrieval (default: kept)")
    a(
        "--out",
        default="",
        metavar="FILE.json",
        help="results (+ .meta.json, .md, .html, .kshot.png)",
    )
    a("--model", default="", help="open_clip model name when the checkpoint does not record it")
    a(
        "--templates",
        default="imagenet80",
        help="imagenet80 | imagenet7 | generic | plain | FILE (one template a line with {})",
    )
    a("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    a("--batch-size", type=int, default=64, help="images per forward pass")
    a("--workers", type=int, default=2, help="image decoding processes (0: in this process)")
    a("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


def _add_probe_arguments(p) -> None:
    p.add_argument(
        "--probe",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fit linear probes (full and k-shot)",
    )
    p.add_argument("--probe-shots", default="1,2,4,8,16", help="k values, comma separated")
    p.add_argument("--probe-seeds", type=int, default=3, help="k-shot draws per k")
    p.add_argument(
        "--probe-test-fraction",
        type=float,
        default=0.5,
        help="per class, the share of an eval set the probe is tested on",
    )
    p.add_argument(
        "--probe-val-fraction",
        type=float,
        default=0.2,
        help="per class, the share of the probe's train pool used to choose C",
    )
    p.add_argument("--probe-c", type=float, default=0.0, help="fixed C instead of the sweep")
    p.add_argument(
        "--probe-train",
        action="append",
        default=[],
        metavar="[EVALSET=]DIR",
        help="train the probe on DIR (same class folders) and test on all of the eval set",
    )
    p.add_argument("--split-seed", type=int, default=0, help="seed of the probe's splits")


def _add_retrieval_arguments(r) -> None:
    r.add_argument(
        "--retrieval",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="image<->text recall@1/5/10 on the held-out rows of --data",
    )
    r.add_argument(
        "--heldout-permille",
        type=int,
        default=10,
        help="held-out share: md5 bucket of the uid below this, per 1000",
    )
    r.add_argument("--retrieval-max", type=int, default=1000, help="held-out rows used at most")


def _probe_train_dirs(opts: EvalOptions, names: list[str]) -> dict[str, str]:
    out = {}
    for spec in opts.probe_train:
        name, sep, directory = spec.partition("=")
        if not sep:
            if len(names) != 1:
                raise EvalError("with several eval sets, write --probe-train EVALSET=DIR")
            name, directory = names[0], spec
        if name not in names:
            raise EvalError(f"--probe-train {spec}: no eval set named {name!r}")
        out[name] = directory
    return out


def _probe(opts, loaded, eval_set, zs, cfg, train_dir) -> dict:
    from trainer.evaluation.evalsets import load_eval_set, restrict_to_classes
    from trainer.evaluation.features import encode_images
    from trainer.evaluation.linear_probe import make_split, run_probe

    if not opts.probe:
        return {"available": False, "reason": "--no-probe"}
    ids = [eval_set.item_id(i) for i in zs.ok]
    train = None
    if train_dir:
        tset = restrict_to_classes(load_eval_set(train_dir, min_classes=1), eval_set)
        feats, ok, _ = encode_images(
            loaded.model,
            loaded.preprocess,
            [it.path for it in tset.items],
            loaded.device,
            opts.batch_size,
            opts.workers,
        )
        train = (feats.numpy(), [tset.items[i].target for i in ok], [tset.item_id(i) for i in ok])
    try:
        split = make_split(zs.features.numpy(), zs.targets.numpy(), ids, cfg, train)
    except EvalError as exc:
        return {"available": False, "reason": str(exc)}
    zero_shot_test = zs.top1_hits[split.test_index].float().mean().item()
    return {"available": True, **run_probe(split, cfg, len(eval_set.classes), zero_shot_test)}


def evaluate(opts: EvalOptions) -> tuple[dict, dict]:
    """(results per eval set name, meta with run info and retrieval)."""
    import torch

    from manifests.layout import DatasetLayout
    from trainer.evaluation.evalsets import load_eval_sets
    from trainer.evaluation.features import load_checkpoint, pick_device
    from trainer.evaluation.overlap import overlap_section, read_overlap
    from trainer.evaluation.retrieval import run_retrieval
    from trainer.evaluation.templates import load_templates, template_name
    from trainer.evaluation.zeroshot import CONTRACT_KEYS, run_zero_shot

    started = time.perf_counter()
    if opts.data and not DatasetLayout(opts.data).is_dataset():
        raise EvalError(f"--data {opts.data} is not a dataset folder (no run.json or manifests/)")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    templates = load_templates(opts.templates)
    cfg = opts.probe_config()
    eval_sets = load_eval_sets(opts.eval_set)
    train_dirs = _probe_train_dirs(opts, [s.name for s in eval_sets])
    overlap_table = read_overlap(opts.data) if opts.data else None
    loaded = load_checkpoint(opts.checkpoint, pick_device(opts.device), opts.model or None)
    results = {}
    for eval_set in eval_sets:
        log.info(
            "eval set %s: %d images, %d classes",
            eval_set.name,
            len(eval_set),
            len(eval_set.classes),
        )
        zs = run_zero_shot(
            loaded.model,
            loaded.tokenizer,
            loaded.preprocess,
            eval_set,
            templates,
            loaded.device,
            opts.batch_size,
            opts.workers,
        )
        ids = [eval_set.item_id(i) for i in zs.ok]
        results[eval_set.name] = {
            "zero_shot": {k: zs.metrics[k] for k in CONTRACT_KEYS},
            "linear_probe": _probe(opts, loaded, eval_set, zs, cfg, train_dirs.get(eval_set.name)),
            "overlap": overlap_section(
                overlap_table, eval_set.name, ids, zs.top1_hits.tolist(), opts.data or None
            ),
            "info": {
                "root": str(eval_set.root),
                "n_images": zs.metrics["n_images"],
                "n_classes": zs.metrics["n_classes"],
                "n_unreadable": zs.metrics["n_unreadable"],
                "unreadable": [str(eval_set.items[i].path) for i in zs.unreadable][:20],
                "ignored_files": len(eval_set.ignored),
            },
        }
    meta = {
        "checkpoint": opts.checkpoint,
        "model": loaded.name,
        "step": loaded.info.get("step"),
        "samples_seen": loaded.info.get("samples_seen"),
        "templates": template_name(opts.templates),
        "n_templates": len(templates),
        "device": loaded.device,
        "data": opts.data or None,
        "options": dataclasses.asdict(opts),
    }
    if opts.data and opts.retrieval:
        meta["retrieval"] = run_retrieval(
            loaded,
            opts.data,
            opts.subset,
            opts.heldout_permille,
            opts.retrieval_max,
            opts.batch_size,
            opts.workers,
        )
    meta["seconds"] = round(time.perf_counter() - started, 2)
    return results, meta


def run_eval(args) -> int:
    """Run `trainer eval` from parsed arguments; prints the Markdown tables, writes --out files.
    Raises EvalError (and trainer.data.DataError for a bad --data) on bad input."""
    from trainer.evaluation.report import markdown, write_all

    opts = EvalOptions.from_args(args)
    results, meta = evaluate(opts)
    print(markdown(results, meta), end="")
    if opts.out:
        for kind, path in write_all(opts.out, results, meta).items():
            log.info("wrote %s: %s", kind, path)
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise EvalError(f"{message} (see `{self.prog} --help`)")


def eval_main(argv=None) -> int:
    from trainer.data import DataError

    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = _Parser(
        prog="trainer eval", description="Evaluate a CLIP checkpoint as in the CLIP paper."
    )
    add_eval_arguments(parser)
    try:
        return run_eval(parser.parse_args(argv))
    except (EvalError, DataError) as exc:
        print(f"trainer eval: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(eval_main())
