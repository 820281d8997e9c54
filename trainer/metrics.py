"""Run-folder logging: metrics.csv (the contract's columns first) and TensorBoard events."""

import csv
import math
from pathlib import Path

COLUMNS = [
    "step",
    "samples_seen",
    "loss",
    "lr",
    "logit_scale",  # exp of the learned log-scale: the inverse temperature, clamped at 100
    "samples_per_s",  # all ranks together, over the steps since the previous row
    "data_wait",  # fraction of that time the training loop waited for its next batch
    "corrupt_images",  # undecodable images skipped so far (all ranks)
    "withdrawn_images",  # rows skipped as no longer in the dataset (trainer.data.frozen)
    "elapsed_s",
]


def read_rows(path) -> list[dict]:
    """metrics.csv (or eval.csv) rows as floats, from a local path or a URI."""
    import io

    from manifests.storage import location

    path = location(path)
    if not path.exists():
        return []
    with io.StringIO(path.read_text(), newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


class MetricsLogger:
    """Appends rows to RUN_DIR/metrics.csv and TensorBoard events under RUN_DIR/tensorboard.

    On a resume from step S, rows after S (logged after the checkpoint, before the stop) are
    dropped so the file reads as one uninterrupted run."""

    def __init__(self, run_dir, start_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(run_dir) / "metrics.csv"
        rows = [r for r in read_rows(self.path) if r["step"] <= start_step]
        with open(self.path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _fmt(row.get(k, math.nan)) for k in COLUMNS})
        self.fh = open(self.path, "a", newline="")  # noqa: SIM115 - kept open for the run
        self.csv = csv.DictWriter(self.fh, fieldnames=COLUMNS)
        self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=start_step + 1)

    def log(self, row: dict) -> None:
        self.csv.writerow({k: _fmt(row[k]) for k in COLUMNS})
        self.fh.flush()
        for key in COLUMNS[2:]:
            self.tb.add_scalar(f"train/{key}", row[key], int(row["step"]))

    def log_eval(self, step: int, scores: dict[str, float]) -> None:
        """Zero-shot scores at `step`: RUN_DIR/eval.csv (one row per evaluation) and TensorBoard."""
        path = self.path.with_name("eval.csv")
        columns = ["step", *sorted(scores)]
        rows = [r for r in read_rows(path) if r["step"] < step]
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in [*rows, {"step": step, **scores}]:
                writer.writerow({k: _fmt(row.get(k, math.nan)) for k in columns})
        for key, value in scores.items():
            self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        self.fh.close()
        self.tb.close()


def _fmt(value) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value)) if isinstance(value, float) else str(value)
