"""The training config: one screen of defaults, each choice explained where it is made.

The resolved config is stored in `config.json` of the run folder and inside every checkpoint, so a
resume rebuilds exactly the same run. Unknown or ill-typed options are `ConfigError`s.
"""

import dataclasses
import math
from dataclasses import dataclass

from manifests.config import ConfigError, check_device, check_fields, from_dict, option

__all__ = ["ConfigError", "TrainConfig", "merge_for_resume"]


def opt(default=dataclasses.MISSING, help: str = "", **kwargs):  # noqa: A002 - argparse's word
    return option(default, help=help, **kwargs)


@dataclass
class TrainConfig:
    # --- data -----------------------------------------------------------------------------------
    data: str = opt("", "dataset folder written by `pipeline build --out DIR`")
    subset: str = opt("", "named subset (manifests/subsets/*.sql or DIR/subsets/); default: kept")
    where: str = opt("", "SQL WHERE clause over the samples view, ANDed with the subset")
    synthetic: bool = opt(False, "train on generated tensors instead of a dataset (tests, benches)")
    workers: int = opt(
        -1,
        "DataLoader processes per rank; -1: one per CPU this process may use, less one for the "
        "training loop (stored in the run as the number chosen); 0 decodes in the training process",
    )
    caption_sampling: str = opt(
        "random",
        "which of an image's selected captions a visit trains on: first (the lowest caption "
        "index), random (one per visit, drawn from seed, image and epoch), all (one sample per "
        "caption: an image with 3 selected captions is visited 3 times an epoch)",
        choices=("first", "random", "all"),
    )
    caption_weights: str = opt(
        "distinct",
        "how often an image's selected captions come up: distinct (each alike) or occurrences "
        "(as often as the dataset carried the caption for the image: its `duplicate` rows, the "
        "same caption on the same image, or on a near-duplicate of it, elsewhere, count; with "
        "`all`, a sample per occurrence)",
        choices=("distinct", "occurrences"),
    )
    shuffle_buffer: int = opt(2000, "samples each loader worker holds to shuffle across row groups")
    crop_scale: float = opt(
        0.9,
        "smallest share of an image's area a training crop keeps (RandomResizedCrop's lower "
        "scale; 0.9 as open_clip; lower is stronger augmentation, for small datasets)",
    )
    color_jitter: float = opt(
        0.0,
        "colour jitter of training images: brightness, contrast and saturation each scaled by "
        "a factor drawn from [1-J, 1+J] per image (hue kept: it often names the concept); 0: off",
    )
    grayscale: float = opt(0.0, "probability a training image is turned gray; 0: off")
    decode: str = opt(
        "cpu",
        "cpu: loader workers decode and crop; gpu: they send JPEG bytes and crop boxes, decoded "
        "in batches on the CUDA device (nvjpeg)",
        choices=("cpu", "gpu"),
    )
    # --- model and loss -------------------------------------------------------------------------
    model: str = opt("clip-tiny", "open_clip architecture (ViT-B-32, RN50, ...) or clip-tiny")
    loss: str = opt(
        "clip", "clip: softmax InfoNCE; siglip: pairwise sigmoid loss", choices=("clip", "siglip")
    )
    loss_chunk: int = opt(
        0, "compute the loss in N x N tiles of logits, never all B x B*ranks at once; 0: off"
    )
    grad_checkpointing: bool = opt(False, "recompute activations in backward to save memory")
    compile: bool = opt(False, "torch.compile the model (slow start, faster steps on GPU)")
    compile_mode: str = opt(
        "default",
        "torch.compile mode with --compile; reduce-overhead: CUDA graphs (CUDA only)",
        choices=("default", "reduce-overhead", "max-autotune"),
    )
    channels_last: bool = opt(False, "model and images in channels_last (conv models, ViT stem)")
    trim_text: bool = opt(
        True,
        "run the text tower on tokens cut to the batch's longest caption (exact under a causal "
        "mask; models without one run on all tokens)",
    )
    # --- how much, how big ----------------------------------------------------------------------
    samples: int = opt(100_000, "training samples over the whole run (sets the number of steps)")
    batch_size: int = opt(256, "samples per rank per micro-batch; contrastive batch = x ranks")
    accum_steps: int = opt(1, "micro-batches per optimizer step (open_clip's feature-cache trick)")
    # --- optimizer: AdamW, cosine decay after a linear warmup (CLIP's recipe) -------------------
    lr: float = opt(5e-4, "peak learning rate")
    min_lr: float = opt(0.0, "learning rate at the end of the cosine decay")
    warmup: int = opt(-1, "warmup steps; -1: 5%% of the steps, at most 2000")
    weight_decay: float = opt(0.2, "AdamW decay; never on gains, biases or the logit scale")
    beta1: float = opt(0.9, "AdamW beta1")
    beta2: float = opt(0.98, "AdamW beta2 (0.98 as in CLIP: more stable at large batch)")
    eps: float = opt(1e-6, "AdamW epsilon")
    grad_clip: float = opt(1.0, "clip the gradient norm to this; 0 turns clipping off")
    ema: float = opt(
        0.0,
        "also keep an exponential moving average of the weights with this decay (e.g. 0.998), "
        "warmed up as min(decay, (1+step)/(10+step)); evaluation and inference use it; 0: off",
    )
    # --- hardware -------------------------------------------------------------------------------
    precision: str = opt(
        "auto",
        "auto (bf16 autocast on GPU, fp32 on CPU) | bf16 | fp32 | fp8 (torchao float8 matmuls "
        "in the Linear layers, under bf16 autocast; CUDA, compute capability 8.9+)",
        choices=("auto", "bf16", "fp32", "fp8"),
    )
    device: str = opt("auto", "auto | cpu | cuda | cuda:N (a rank's GPU under DDP)")
    threads: int = opt(
        0, "torch CPU threads per rank; 0: the CPUs its loader workers leave free (at least 1)"
    )
    seed: int = opt(0, "seeds model init, data order and augmentation")
    # --- output ---------------------------------------------------------------------------------
    out: str = opt("", "run folder: metrics.csv, checkpoints, latest.pt, config.json")
    save_every: int = opt(1000, "checkpoint every this many steps (and always at the end)")
    keep: int = opt(3, "periodic checkpoints kept (the oldest are deleted; latest.pt stays)")
    log_every: int = opt(10, "write a metrics row every this many steps")
    stop_after: int = opt(
        0, "end this invocation after this step (0: run to the end of the schedule)"
    )
    resume: bool = opt(False, "continue from OUT/latest.pt (start fresh if there is none)")
    # --- periodic evaluation (trainer.evaluation), rank 0 only, logged beside the losses --------
    eval_set: list[str] = opt(
        help="ImageFolder eval sets for zero-shot during training (repeatable)",
        default_factory=list,
        metavar="DIR",
    )
    eval_every: int = opt(0, "zero-shot evaluation every this many steps; 0: only at the end")
    eval_templates: str = opt("imagenet80", "prompt templates: imagenet80, generic, plain, FILE")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if isinstance(self.eval_set, str):  # runs stored before eval_set became a list
            self.eval_set = [s for s in self.eval_set.split(",") if s]
        check_fields(self)
        check_device(self.device)
        for name in ("samples", "batch_size", "accum_steps", "save_every", "keep", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{_flag(name)} must be at least 1, not {getattr(self, name)}")
        for name in ("threads", "stop_after", "shuffle_buffer", "eval_every", "loss_chunk"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_flag(name)} must not be negative")
        if self.workers < -1:
            raise ConfigError(f"--workers must be -1 (auto), 0 or more, not {self.workers}")
        if not 0 < self.crop_scale <= 1:
            raise ConfigError(f"--crop-scale must be in (0, 1], not {self.crop_scale}")
        if not 0 <= self.color_jitter <= 1:
            raise ConfigError(f"--color-jitter must be in [0, 1], not {self.color_jitter}")
        if not 0 <= self.grayscale <= 1:
            raise ConfigError(f"--grayscale must be a probability in [0, 1], not {self.grayscale}")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"--ema must be 0 (off) or a decay in (0, 1), not {self.ema}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a positive number, not {self.lr}")
        if self.subset and self.synthetic:
            raise ConfigError("--subset selects dataset rows; it has no meaning with --synthetic")
        if self.decode == "gpu" and (self.synthetic or self.device == "cpu"):
            why = "there is nothing to decode" if self.synthetic else "the run is on the CPU"
            raise ConfigError(f"--decode gpu decodes JPEGs on a CUDA device; {why}")
        if self.compile_mode != "default" and not self.compile:
            raise ConfigError(f"--compile-mode {self.compile_mode} needs --compile")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        return from_dict(cls, values)

    # derived values
    def steps(self, world_size: int) -> int:
        per_step = self.batch_size * self.accum_steps * world_size
        return max(1, math.ceil(self.samples / per_step))

    def warmup_steps(self, total_steps: int) -> int:
        return self.warmup if self.warmup >= 0 else min(2000, total_steps // 20)


def _flag(name: str) -> str:
    return name.replace("_", "-")


# Options that may change when a run is resumed: they do not change what is computed, only how
# long it runs (samples also stretches the schedule), how often it reports, and where data lives.
RESUMABLE_OVERRIDES = frozenset(
    {
        "samples",
        "save_every",
        "keep",
        "log_every",
        "stop_after",
        "resume",
        "threads",
        "data",
        "eval_set",
        "eval_every",
        "eval_templates",
    }
)

PER_INVOCATION = frozenset({"stop_after", "resume"})

# What a run stored before an option existed did, which is not always the option's default now:
# the text tower ran on every token, each image trained on its first caption, crops kept 90% or
# more of the area, no average of the weights was kept, each distinct caption counted once,
# colours were never changed.
BEFORE_THE_OPTION = {
    "trim_text": False,
    "caption_sampling": "first",
    "crop_scale": 0.9,
    "ema": 0.0,
    "caption_weights": "distinct",
    "color_jitter": 0.0,
    "grayscale": 0.0,
}


def merge_for_resume(stored: dict, given: dict) -> dict:
    """The stored config with the options given again on the command line; conflicting values
    for options that define the run are errors (they would break the exact resume)."""
    if given.get("workers") == -1:  # "auto" again: the count the run chose stands
        given = {k: v for k, v in given.items() if k != "workers"}
    stored = {**BEFORE_THE_OPTION, **stored}  # so an option given for an older run is checked
    conflicts = [
        f"--{_flag(k)} {given[k]!r} (the run has {stored.get(k)!r})"
        for k in sorted(given)
        if k not in RESUMABLE_OVERRIDES and k in stored and given[k] != stored[k]
    ]
    if conflicts:
        raise ConfigError("--resume: options differ from the stored run: " + "; ".join(conflicts))
    merged = dict(stored)
    for name in PER_INVOCATION:  # how this invocation runs, not what the run is
        merged.pop(name, None)
    merged.update({k: v for k, v in given.items() if k in RESUMABLE_OVERRIDES})
    return merged
