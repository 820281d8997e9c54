"""`trainer eval`: zero-shot, linear probes, clean vs overlap and retrieval for one checkpoint.

    trainer eval --checkpoint RUN/latest.pt --eval-set evals/pets --eval-set evals/flowers
    trainer eval --checkpoint ... --eval-set evals/pets --data DIR --out results.json

The options are trainer.evaluation.options.EvalOptions; `add_eval_arguments(parser)` adds their
flags to a parser (the `trainer` CLI's `eval` subcommand), `run_eval(args)` runs them, and
`evaluate_and_write(EvalOptions(...))` is the same from Python (the demo, the DAGs).
"""

import argparse
import dataclasses
import logging
import sys
import time

from manifests.cli import add_config_options, given
from trainer.evaluation.errors import EvalError
from trainer.evaluation.options import EvalOptions

__all__ = ["EvalOptions", "add_eval_arguments", "evaluate", "evaluate_and_write", "run_eval"]

log = logging.getLogger(__name__)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Every `trainer eval` option, generated from EvalOptions."""
    add_config_options(parser, EvalOptions)


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
    from manifests.evalsets import load_eval_set, restrict_to_classes
    from trainer.evaluation.linear_probe import make_split, run_probe
    from trainer.inference import encode_images

    if not opts.probe:
        return {"available": False, "reason": "--no-probe"}
    ids = [eval_set.item_id(i) for i in zs.ok]
    train = None
    if train_dir:
        tset = restrict_to_classes(load_eval_set(train_dir, min_classes=1), eval_set)
        feats, ok, _ = encode_images(
            loaded, [it.path for it in tset.items], opts.batch_size, opts.workers
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

    from manifests.evalsets import load_eval_sets
    from manifests.layout import DatasetLayout
    from trainer import inference
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
    loaded = inference.load(opts.checkpoint, opts.device, opts.model or None)
    results = {}
    for eval_set in eval_sets:
        log.info(
            "eval set %s: %d images, %d classes",
            eval_set.name,
            len(eval_set),
            len(eval_set.classes),
        )
        zs = run_zero_shot(loaded, eval_set, templates, opts.batch_size, opts.workers)
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


def evaluate_and_write(opts: EvalOptions) -> tuple[dict, dict]:
    """Evaluate, print the Markdown tables, write the --out files; (results, meta)."""
    from trainer.evaluation.report import markdown, write_all

    results, meta = evaluate(opts)
    print(markdown(results, meta), end="")
    if opts.out:
        for kind, path in write_all(opts.out, results, meta).items():
            log.info("wrote %s: %s", kind, path)
    return results, meta


def run_eval(args) -> int:
    """`trainer eval` from parsed arguments. Raises ConfigError (EvalError and DataError are
    ConfigErrors) on bad input."""
    evaluate_and_write(EvalOptions.from_dict(given(args, EvalOptions)))
    return 0


if __name__ == "__main__":  # python -m trainer.evaluation.cli ... = trainer eval ...
    from trainer.cli import main

    sys.exit(main(["eval", *sys.argv[1:]]))
