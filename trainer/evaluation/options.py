"""The options of `trainer eval`: one field each, its flag generated from it (manifests.cli), as
`trainer run`'s come from TrainConfig."""

import dataclasses
from dataclasses import dataclass

from manifests.config import DEVICES, check_device, check_fields, from_dict, option
from trainer.evaluation.errors import EvalError


@dataclass
class EvalOptions:
    checkpoint: str = option(help="checkpoint written by `trainer run` (or open_clip)")
    eval_set: list[str] = option(
        default_factory=list,
        metavar="DIR",
        help="ImageFolder eval set DIR/<class name>/<image> (repeatable)",
    )
    data: str = option(
        "",
        metavar="DIR",
        help="dataset folder: clean vs overlap from DIR/overlap.parquet, retrieval on held-out rows",
    )
    subset: str = option("", help="named subset for retrieval (default: kept)")
    out: str = option(
        "", metavar="FILE.json", help="results (+ .meta.json, .md, .html, .kshot.png)"
    )
    model: str = option("", help="open_clip model name when the checkpoint does not record it")
    templates: str = option(
        "imagenet80", help="imagenet80 | imagenet7 | generic | plain | FILE (one template a line)"
    )
    device: str = option("auto", help=DEVICES)
    batch_size: int = option(64, help="images per forward pass")
    workers: int = option(2, help="image decoding processes (0: in this process)")
    threads: int = option(0, help="torch CPU threads (0: torch's default)")
    # linear probes
    probe: bool = option(True, help="fit linear probes (full and k-shot)")
    probe_shots: list[int] = option(
        default_factory=lambda: [1, 2, 4, 8, 16], sep=",", metavar="K", help="k-shot k values"
    )
    probe_seeds: int = option(3, help="k-shot draws per k")
    probe_test_fraction: float = option(
        0.5, help="per class, the share of an eval set the probe is tested on"
    )
    probe_val_fraction: float = option(
        0.2, help="per class, the share of the probe's train pool used to choose C"
    )
    probe_c: float = option(0.0, help="fixed C instead of the sweep (0: sweep)")
    probe_train: list[str] = option(
        default_factory=list,
        metavar="[EVALSET=]DIR",
        help="train the probe on DIR (same class folders) and test on all of the eval set",
    )
    split_seed: int = option(0, help="seed of the probe's splits")
    # retrieval (with --data)
    retrieval: bool = option(True, help="image<->text recall@1/5/10 on the held-out rows of --data")
    heldout_permille: int = option(10, help="held-out share: md5 bucket of the uid below this")
    retrieval_max: int = option(1000, help="held-out rows used at most")

    def __post_init__(self):
        if isinstance(self.probe_shots, str):  # "1,2,4" as older configs wrote it
            try:
                self.probe_shots = [int(k) for k in self.probe_shots.split(",") if k.strip()]
            except ValueError:
                raise EvalError(
                    f"--probe-shots must be integers, not {self.probe_shots!r}"
                ) from None
        check_fields(self)
        check_device(self.device)
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

    @classmethod
    def from_dict(cls, values: dict) -> "EvalOptions":
        return from_dict(cls, values)

    def probe_config(self):
        from trainer.evaluation.linear_probe import ProbeConfig

        return ProbeConfig(
            shots=tuple(self.probe_shots),
            seeds=self.probe_seeds,
            test_fraction=self.probe_test_fraction,
            val_fraction=self.probe_val_fraction,
            fixed_c=self.probe_c or None,
            split_seed=self.split_seed,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _flag(name: str) -> str:
    return name.replace("_", "-")
