"""`trainer plot RUN_DIR`: loss, learning rate, logit scale, throughput and data wait as a PNG."""

import json
import math

from manifests.layout import atomic_path
from manifests.storage import Location, location
from trainer.metrics import read_rows


def plot_run(run_dir, out=None) -> Location:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = location(run_dir)
    rows = read_rows(run_dir / "metrics.csv")
    if not rows:
        raise FileNotFoundError(f"{run_dir} has no metrics.csv rows (is it a trainer run folder?)")
    out = location(out) if out else run_dir / "curves.png"
    step = [r["step"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    ax = axes[0][0]
    ax.plot(step, [r["loss"] for r in rows], lw=1)
    config = run_dir / "config.json"
    if config.exists():
        batch = json.loads(config.read_text()).get("global_batch")
        if batch:  # the loss of a model that has learnt nothing (uniform over the batch)
            ax.axhline(math.log(batch), ls="--", c="grey", lw=1, label=f"ln({batch}) = chance")
            ax.legend()
    ax.set(title="contrastive loss", ylabel="loss")
    axes[0][1].plot(step, [r["lr"] for r in rows], lw=1)
    axes[0][1].set(title="learning rate")
    axes[1][0].plot(step, [r["logit_scale"] for r in rows], lw=1)
    axes[1][0].set(title="logit scale (1 / temperature)", xlabel="step")
    ax = axes[1][1]
    ax.plot(step, [r["samples_per_s"] for r in rows], lw=1, label="samples/s")
    ax.set(title="throughput and data wait", xlabel="step", ylabel="samples/s")
    twin = ax.twinx()
    twin.plot(step, [r["data_wait"] for r in rows], lw=1, c="tab:red", label="data wait")
    twin.set(ylabel="fraction of step time waiting for data", ylim=(0, 1))
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out
