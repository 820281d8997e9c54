import os
import subprocess
import sys

import pytest

from tests.trainer.test_train import FAST, losses, run


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_train_job_matches_one_process_with_the_doubled_batch(tmp_path):
    # The job runs in its own process: the local Ray instance it starts (bound to 127.0.0.1,
    # see trainer.ray_job) ends with it.
    common = ["--synthetic", "--samples", 16 * 5, "--warmup", 2, "--lr", 1e-3, *FAST]
    assert run([*common, "--batch-size", 16, "--out", tmp_path / "one"]) == 0
    cmd = [
        sys.executable,
        "-m",
        "trainer",
        "run",
        *map(str, common),
        "--batch-size",
        "8",
        "--num-workers",
        "2",
        "--out",
        str(tmp_path / "ray"),
    ]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=280, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 5, 80 samples" in done.stdout
    assert '"world_size": 2' in (tmp_path / "ray" / "config.json").read_text()
    assert losses(tmp_path / "ray") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)
