"""Checkpoints in open_clip's format, written atomically.

A checkpoint is a dict whose `state_dict` holds the bare model weights (no `module.` or
`_orig_mod.` prefixes), so `open_clip.create_model(name, pretrained=path)` loads it, next to what
an exact resume needs: `optimizer`, `step`, `samples_seen`, `config` (the resolved TrainConfig),
`data` (loader positions), `rng` and `world_size`, and the counts of skipped rows `corrupt` and
`withdrawn` (absent from older checkpoints: 0), and with --ema the average of the weights
`ema_state_dict` (trainer.ema). Everything is a tensor or a plain Python value,
so `torch.load(..., weights_only=True)` (open_clip's default) reads it. The rows the positions
count through are the run's frozen selection (trainer.data.frozen), written once at its start.

RUN_DIR/checkpoints/step_00001000.pt  periodic, the last `keep` kept
RUN_DIR/latest.pt                     the newest checkpoint (a hard link when the filesystem allows;
                                      in an object store a server-side copy)
RUN_DIR/selection.parquet             the rows the run trains on, resolved at its start
RUN_DIR may be a local folder or an s3:// / gs:// prefix (manifests.storage); every checkpoint
is one whole-object put, so a reader never loads half of one.
"""

import logging
import os

from manifests.layout import atomic_path
from manifests.storage import Location, local_copy, location

log = logging.getLogger(__name__)


def checkpoint_dir(run_dir) -> Location:
    return location(run_dir) / "checkpoints"


def latest_path(run_dir) -> Location:
    return location(run_dir) / "latest.pt"


def _atomic_save(obj, path: Location, also: Location | None = None) -> None:
    """Write `obj` to `path`, put whole; in an object store the same local file is put at
    `also` too (a server-side copy would fail past S3's 5 GiB CopyObject limit)."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if also is not None and not also.is_local:
            also.upload(tmp)  # before `path`: latest.pt is never older than the newest step


def _link_latest(source: Location, latest: Location) -> None:
    if not latest.is_local:  # put by _atomic_save already
        return
    with atomic_path(latest) as tmp:
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (some network filesystems): copy instead
            import shutil

            shutil.copyfile(source, tmp)


def save(run_dir, payload: dict, keep: int) -> Location:
    """Write step checkpoint and latest.pt; delete periodic checkpoints beyond the newest `keep`."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{payload['step']:08d}.pt"
    _atomic_save(payload, path, also=latest_path(run_dir))
    _link_latest(path, latest_path(run_dir))
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
    log.info("saved %s", path)
    return path


def load(path, map_location="cpu") -> dict:
    """A checkpoint from a local path or a URI (downloaded to a scratch file first)."""
    import torch

    with local_copy(path) as local:
        return torch.load(local, map_location=map_location, weights_only=True)


def rng_state() -> dict:
    import random

    import torch

    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict) -> None:
    import random

    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
