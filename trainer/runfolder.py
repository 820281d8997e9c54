"""The run folder, and how it works when `--out` is in an object store.

RUN_DIR holds config.json (the resolved config), selection.parquet (the dataset rows the run
trains on, resolved and frozen at its start: trainer.data.frozen), latest.pt and checkpoints/
(trainer.checkpoint), metrics.csv, eval.csv and tensorboard/ (trainer.metrics).

Checkpoints and selection.parquet go straight to the store (trainer.checkpoint). The files a run appends to as it goes
(metrics.csv, eval.csv, TensorBoard events) cannot be appended to in an object store, so they
live in a local mirror while the run goes and are put in the store at every checkpoint and at
the end, as open_clip's --remote-sync does. A run killed between two checkpoints resumes from
the last one, whose metrics the store holds: the rows after it are dropped on resume anyway.
For a local --out the mirror is the folder itself and sync does nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

from manifests.storage import Location, local_scratch, location, upload_tree

SYNCED = ("metrics.csv", "eval.csv")


class RunFolder:
    def __init__(self, out):
        self.out: Location = location(out)
        if self.out.is_local:
            self.local = Path(self.out.path)
        else:
            key = hashlib.sha256(self.out.uri.encode()).hexdigest()[:16]
            self.local = local_scratch("runs") / key
        self.local.mkdir(parents=True, exist_ok=True)

    @property
    def remote(self) -> bool:
        return not self.out.is_local

    def pull(self) -> None:
        """Bring the store's copies of the appended files into the mirror (before a resume)."""
        if not self.remote:
            return
        for name in SYNCED:
            source = self.out / name
            target = self.local / name
            if source.exists():
                target.write_bytes(source.read_bytes())
            else:
                target.unlink(missing_ok=True)

    def sync(self) -> None:
        """Put the mirror's appended files (and TensorBoard events) in the store."""
        if not self.remote:
            return
        for name in SYNCED:
            if (self.local / name).exists():
                (self.out / name).upload(self.local / name)
        if (self.local / "tensorboard").is_dir():
            upload_tree(self.local / "tensorboard", self.out / "tensorboard")
