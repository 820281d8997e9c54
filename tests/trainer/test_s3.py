"""The trainer on object storage (a moto S3 server on loopback): it streams shards from the
store, writes its run folder there, a SIGKILLed run resumes from the store to the losses of the
uninterrupted run, and `trainer eval` reads checkpoint, eval sets and dataset from it."""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from manifests.storage import location, upload_tree
from tests.trainer.evaluation.test_cli import CLASSES, shape_folder
from tests.trainer.test_train import FAST, run
from trainer import checkpoint
from trainer.cli import main
from trainer.metrics import read_rows

# The child SIGKILLs itself right after its second checkpoint is in the store (step 8): what a
# preempted node does, at an exact point.
KILL_AFTER_SECOND_SAVE = """
import os, signal, sys
from trainer import checkpoint
saved, original = [0], checkpoint.save
def save(*args, **kwargs):
    path = original(*args, **kwargs)
    saved[0] += 1
    if saved[0] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return path
checkpoint.save = save
from trainer.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.timeout(300)
def test_a_killed_run_on_s3_resumes_to_the_uninterrupted_losses(shapes_dataset, tmp_path, s3):
    data = f"{s3}/datasets/shapes"
    upload_tree(shapes_dataset, data)
    common = ["--samples", 8 * 14, "--batch-size", 8, "--workers", 2, "--shuffle-buffer", 40]
    common += ["--warmup", 3, "--save-every", 4, *FAST]
    full = tmp_path / "full"
    assert run(["--data", shapes_dataset, *common, "--out", full]) == 0
    out = f"{s3}/runs/cut"
    argv = ["run", "--data", data, *map(str, common), "--out", out]
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_SECOND_SAVE, *argv],
        capture_output=True,
        text=True,
        timeout=200,
        env=dict(os.environ),
    )
    assert killed.returncode == -9, killed.stderr
    assert checkpoint.load(f"{out}/latest.pt")["step"] == 8
    assert run(["--data", data, *common, "--out", out, "--resume"]) == 0
    rows = read_rows(f"{out}/metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, 15))
    assert [r["loss"] for r in rows] == [r["loss"] for r in read_rows(full / "metrics.csv")]
    remote, local = checkpoint.load(f"{out}/latest.pt"), checkpoint.load(full / "latest.pt")
    for key, value in local["state_dict"].items():
        assert torch.equal(value, remote["state_dict"][key]), key
    assert (location(out) / "config.json").exists()
    assert (location(out) / "selection.parquet").exists()  # the resume streamed the frozen rows
    assert location(out).glob("tensorboard") or (location(out) / "tensorboard").is_dir()


@pytest.mark.timeout(240)
def test_eval_reads_checkpoint_eval_sets_and_dataset_from_s3(tmp_path, s3):
    from pipeline.testing.toydata import shapes, write_dataset
    from tests.trainer.evaluation.helpers import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "latest.pt")
    shape_folder(tmp_path / "evals" / "shapes", per_class=6, seed=1)
    data = write_dataset(tmp_path / "data", shapes(per_class=2), shard_rows=32)
    ids = [f"shapes/{c}/{i:03d}.png" for c in CLASSES for i in range(6)]
    flags = [int(i.split("/")[-1][:3]) < 2 for i in ids]
    pq.write_table(pa.table({"eval_id": ids, "has_copy": flags}), data / "overlap.parquet")
    upload_tree(tmp_path / "evals", f"{s3}/evals")
    upload_tree(data, f"{s3}/data")
    (location(s3) / "ckpt" / "latest.pt").upload(ckpt)
    out = f"{s3}/results/shapes.json"
    argv = ["eval", "--checkpoint", f"{s3}/ckpt/latest.pt", "--eval-set", f"{s3}/evals/shapes"]
    argv += ["--data", f"{s3}/data", "--out", out, "--workers", "0", "--templates", "generic"]
    argv += ["--probe-shots", "1", "--probe-seeds", "1", "--heldout-permille", "1000"]
    assert main(argv) == 0
    results = json.loads(location(out).read_text())
    ov = results["shapes"]["overlap"]
    assert ov["available"] and (ov["n_overlap"], ov["n_clean"], ov["n_unchecked"]) == (6, 12, 0)
    assert 0.0 <= results["shapes"]["zero_shot"]["top1"] <= 1.0
