"""Stage `dedup`: exact duplicates, eval-set leaks and near-duplicate clusters, across the run.

Over every row still `pending` that has an image: copies of an `--eval-set` image become
`eval_leak` with `leak_of` = "<set>/<class>/<file>" (DIR/overlap.parquet marks every eval image
that has a copy); exact duplicates by sha256 of the fetched bytes (the first in source order is
kept; a later row with another caption stays pending beside it, with `image_of`, and one with
a caption the image already has becomes `duplicate` with `dup_of`); with `--near-dup-radius
N`, clusters of phashes within N bits keep their largest image and the other images' captions
join it the same way (a repeated caption becomes `duplicate`, or `--near-dup-status`). Leaks
win over everything (pipeline.dedup.captions).

All of it runs as phases of tasks that shuffle through bucketed files (pipeline/stages/phases.py;
dedupexact.py, dedupnear.py): the driver hashes the eval sets, lists tasks and waits, so its
memory does not grow with the rows. The decisions equal pipeline.dedup.decide's single-process
ones on the same rows (a test keeps that code as the oracle)."""

from __future__ import annotations

import math

from manifests import storage
from pipeline.stages.base import PartOutput, PartStats, Stage, StageRun

ROWS_PER_BUCKET = 1_000_000  # rows one reduce task holds (strings and hashes: ~300 MB)
MAX_BUCKETS = 4096  # each reduce task reads a footer of every part's file


class DedupStage(Stage):
    name, inputs = "dedup", ("images",)

    def enabled(self, config) -> bool:
        return config.fetch

    def check_config(self, run: StageRun) -> None:
        from manifests.config import ConfigError
        from pipeline.dedup.decide import leak_config
        from pipeline.dedup.neardup import SORTJOIN_MAX_RADIUS

        settings = leak_config(run.config.dedup) if run.config.dedup.eval_set else None
        finished = (run.layout.stats / f"{self.name}.json").exists()
        if settings is not None and settings.embed is not None and not finished:
            from pipeline.dedup.leakembed import cached_model

            cached_model(settings.embed)  # a checkpoint that does not load fails now
        radius = run.config.dedup.near_dup_radius
        if radius is not None and radius > SORTJOIN_MAX_RADIUS:
            # Past 12 bits PartEnum needs keys so short that a key value is shared by a
            # sixteenth of all rows: the shuffle would compare nearly every pair.
            raise ConfigError(
                f"--near-dup-radius {radius}: a build's near-duplicate search (sortjoin, across "
                f"tasks) handles at most {SORTJOIN_MAX_RADIUS} bits"
            )

    def plan(self, run: StageRun) -> None:
        from pipeline.dedup.decide import leak_config
        from pipeline.dedup.evalsets import hash_eval_sets_cached
        from pipeline.dedup.leakverify import write_eval_verification
        from pipeline.stages.phases import fixed_figures, run_phases

        config = run.config.dedup
        settings = leak_config(config) if config.eval_set else None
        if settings is not None:
            eval_table = hash_eval_sets_cached(config.eval_set, run.dir / "eval_hashes.parquet")
            if settings.verify is not None:  # the eval side's features, once, for every task
                write_eval_verification(eval_table, run.dir, settings.verify)
            if settings.embed is not None:  # and its embeddings
                from pipeline.dedup.leakembed import write_eval_embeddings

                write_eval_embeddings(eval_table, run.dir, settings.embed)

        # Rows from the parts' footers (an upper bound on the pending rows: enough for sizing).
        pending = sum(
            storage.parquet_file(p).metadata.num_rows for p in run.input_rows_paths("images")
        )
        wanted = max(run.parallelism, math.ceil(pending / ROWS_PER_BUCKET))
        figures = {
            "buckets": max(1, min(MAX_BUCKETS, wanted)),
            "pending": pending,
            "eval": bool(config.eval_set),
            "radius": config.near_dup_radius,
        }
        figures = fixed_figures(run, figures)
        parts, buckets = run.parts, range(figures["buckets"])
        phases = [[f"hash-{p}" for p in parts], [f"exact-{b}" for b in buckets]]
        if figures["radius"] is not None:
            phases += [
                [f"keys-{p}" for p in parts],
                [f"pairs-{b}" for b in buckets],
                ["components-all"],
                [f"label-{p}" for p in parts],
                [f"near-{b}" for b in buckets],
            ]
            if config.near_dup_verify != "off":
                phases += [[f"feats-{p}" for p in parts], [f"verify-{b}" for b in buckets]]
        phases.append([f"final-{b}" for b in buckets])
        if figures["radius"] is not None:
            phases.append([f"merge-{b}" for b in buckets])
        embed = settings.embed if settings is not None else None
        gpu = {"hash": {"num_gpus": 1}} if embed is not None and embed.device != "cpu" else None
        run_phases(run, run.executor, phases, figures, resources=gpu)  # hash tasks embed
        if config.eval_set:
            _write_overlap(run)

    def run_phase(self, task) -> PartStats:
        from pipeline.stages import dedupexact, dedupnear, dedupverify

        exact = {"hash": dedupexact.hash_part, "exact": dedupexact.exact_bucket}
        exact |= {"final": dedupexact.final_bucket, "merge": dedupexact.merge_bucket}
        return {**exact, **dedupnear.PHASES, **dedupverify.PHASES}[task.phase](task)

    def process(self, task, rows) -> PartOutput:
        from pipeline.dedup.leaks import Leak, leak_reason
        from pipeline.stages.decisions import apply_decisions, decisions_table
        from pipeline.stages.phases import phase_dir, read_part

        figures = _figures(task.layout)
        index = StageRun(task.layout, self, task.inputs).parts.index(task.part)
        updates = {}
        kinds = ["final"] + (["merge"] if figures["radius"] is not None else [])
        for kind in kinds:
            for d in read_part(task.layout, self.name, kind, figures["buckets"], index).to_pylist():
                updates[d["uid"]] = {k: d[k] for k in ("status", "dup_of", "image_of", "error")}
        if figures["eval"]:
            leaks = storage.read_table(
                phase_dir(task.layout, self.name) / "leaks" / f"{task.part}.parquet"
            )
            for record in leaks.to_pylist():  # a leak leaves the dataset whatever else it is
                leak = Leak(**record)
                updates[leak.uid] = {
                    "status": "eval_leak",
                    "leak_of": leak.eval_id,
                    "error": leak_reason(leak),
                }
        decisions = decisions_table(updates, dict.fromkeys(updates, task.part))
        return PartOutput(apply_decisions(rows, decisions))

    def summarise(self, run: StageRun, parts) -> dict:
        from pipeline.stages.phases import phase_stats

        figures = _figures(run.layout)
        kinds = ["final"] + (["merge"] if figures["radius"] is not None else [])
        found = [
            phase_stats(run, f"{kind}-{b}").extra
            for kind in kinds
            for b in range(figures["buckets"])
        ]
        counts = ("exact_duplicates", "near_duplicates", "captions_joined")
        return {"buckets": figures["buckets"], **{c: sum(f[c] for f in found) for c in counts}}


def _figures(layout) -> dict:
    import json

    from pipeline.stages.phases import phase_dir

    return json.loads((phase_dir(layout, "dedup") / "plan.json").read_text())


def _write_overlap(run: StageRun) -> None:
    """DIR/overlap.parquet from every part's leaks (few: copies of the eval sets), and the
    thumbnails of the eval images they copy (DIR/eval_thumbs.parquet, for `pipeline serve`)."""
    import pyarrow as pa

    from pipeline.dedup.leaks import Leak, write_eval_thumbnails, write_overlap
    from pipeline.stages.phases import phase_dir

    folder = phase_dir(run.layout, run.name) / "leaks"
    # promote: parts written before the `structure` column read back with it null.
    tables = [storage.read_table(folder / f"{p}.parquet") for p in run.parts]
    leaks = pa.concat_tables(tables, promote_options="default")
    found = [Leak(**row) for row in leaks.to_pylist()]
    eval_table = storage.read_table(run.dir / "eval_hashes.parquet")
    write_overlap(run.layout.root / "overlap.parquet", eval_table, found)
    write_eval_thumbnails(run.layout.root / "eval_thumbs.parquet", eval_table, found)
