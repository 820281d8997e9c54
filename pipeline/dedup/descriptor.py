"""A small copy descriptor trained on synthetic copy edits (SSCD's recipe, CPU-sized).

A hash moves with every crop, pad or rotation, so the hash stage's candidates miss the edits that
change the geometry (rotation + crop, blurred pads, screenshots). This descriptor is a second
candidate source: a small CNN maps an image to a unit vector such that a copy (any edit of
pipeline/testing/edits.py) lands near its original and another drawing with the same layout does
not. It is trained contrastively (InfoNCE over the batch, as in SimCLR / SSCD) on pairs (original,
edited copy) of procedurally drawn images; bench/train_descriptor.py makes the drawings and the
hard negatives (the same drawing redrawn with its shapes perturbed) and saves the weights.

Mirror is not learnt: a network that is mirror-invariant confuses left and right arrows. The eval
side embeds each image and its mirror instead (`embed(..., mirror=True)`).

Input preparation follows hashes.to_gray, in colour: transparency composited onto the hashes'
BACKGROUND, the image letterboxed onto a square of that colour (aspect kept, so a screenshot's
canvas does not squash the content), then resized to `size` px.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from manifests.config import ConfigError

FORMAT = 1  # of the saved file: bump when the architecture's meaning changes


@dataclass(frozen=True)
class DescriptorConfig:
    size: int = 64  # px: the square input
    widths: tuple[int, ...] = (32, 64, 96, 128)  # channels of each block; each block halves
    dim: int = 128  # output dimensions (L2-normalised)
    gem_p: float = 3.0  # generalised-mean pooling exponent (SSCD uses GeM)

    def __post_init__(self):
        if self.size < 16 or self.size % (2 ** len(self.widths)):
            raise ConfigError(
                f"descriptor size {self.size} must be >= 16 and divisible by 2^blocks"
            )
        if not self.widths or min(self.widths) < 1 or self.dim < 1:
            raise ConfigError("descriptor widths and dim must be positive")


@dataclass
class TrainConfig:
    batch: int = 64  # (original, copy) pairs per step: 2 * batch images in the loss
    lr: float = 3e-3
    weight_decay: float = 1e-4
    temperature: float = 0.07  # InfoNCE
    koleo: float = 0.0  # weight of SSCD's KoLeo entropy term (spreads the embeddings)
    warmup: float = 0.05  # of the run: linear LR warm-up, then cosine to 0
    log_every: int = 25  # steps
    history: list = field(default_factory=list)  # (step, seconds, loss) as it trains


def build(config: DescriptorConfig):
    """The network: per block a strided 3x3 conv then a 3x3 conv (BN + ReLU each), GeM pooling,
    a linear projection, L2 normalisation."""
    import torch
    from torch import nn

    class GeM(nn.Module):
        def __init__(self, p: float):
            super().__init__()
            self.p = p

        def forward(self, x):
            return x.clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c_in = [], 3
            for w in config.widths:
                for stride, c in ((2, c_in), (1, w)):
                    layers += [nn.Conv2d(c, w, 3, stride, 1, bias=False), nn.BatchNorm2d(w)]
                    layers.append(nn.ReLU(inplace=True))
                c_in = w
            self.features = nn.Sequential(*layers)
            self.pool = GeM(config.gem_p)
            self.head = nn.Linear(c_in, config.dim)

        def forward(self, x):
            return nn.functional.normalize(self.head(self.pool(self.features(x))), dim=1)

    torch.manual_seed(0)  # the untrained weights are reproducible too (tests)
    return Net()


def prepare(image, size: int) -> np.ndarray:
    """3 x size x size float32 in [-1, 1]: alpha onto BACKGROUND, letterboxed, resized."""
    from PIL import Image

    from pipeline.dedup.hashes import BACKGROUND

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        image = Image.alpha_composite(base, rgba)
    image = image.convert("RGB")
    w, h = image.size
    if w < 1 or h < 1:
        raise ValueError(f"empty image {w}x{h}")
    side = max(w, h)
    if w != h:
        square = Image.new("RGB", (side, side), BACKGROUND)
        square.paste(image, ((side - w) // 2, (side - h) // 2))
        image = square
    if side != size:
        image = image.resize(
            (size, size), Image.BILINEAR, reducing_gap=2.0 if side > size else None
        )
    arr = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)
    return arr / 127.5 - 1.0


class Descriptor:
    """A network and its config; `embed` is deterministic (eval mode, no dropout, no grad)."""

    def __init__(self, model, config: DescriptorConfig):
        self.model = model.eval()
        self.config = config

    def embed(self, images, batch: int = 256, mirror: bool = False) -> np.ndarray:
        """n x dim float32 unit vectors; mirror=True: 2n rows, image i's mirror at row n + i."""
        import torch
        from PIL import ImageOps

        images = list(images)
        if mirror:
            images = images + [ImageOps.mirror(im) for im in images]
        out = np.zeros((len(images), self.config.dim), np.float32)
        self.model.eval()
        with torch.inference_mode():
            for s in range(0, len(images), batch):
                x = np.stack([prepare(im, self.config.size) for im in images[s : s + batch]])
                out[s : s + len(x)] = self.model(torch.from_numpy(x)).numpy()
        return out

    def save(self, path: Path) -> None:
        """state_dict in float16 (half the file; the embeddings move < 1e-3) + config."""
        import torch

        state = {
            k: v.half() if v.is_floating_point() else v for k, v in self.model.state_dict().items()
        }
        torch.save({"format": FORMAT, "config": asdict(self.config), "state": state}, path)


def create(config: DescriptorConfig | None = None) -> Descriptor:
    config = config or DescriptorConfig()
    return Descriptor(build(config), config)


def load(path: Path) -> Descriptor:
    """A saved descriptor; a ConfigError for a missing or foreign file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"descriptor weights {path} not found")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise ConfigError(f"descriptor weights {path} unreadable: {err}") from err
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a format-{FORMAT} descriptor file")
    raw = saved["config"]
    config = DescriptorConfig(**{**raw, "widths": tuple(raw["widths"])})
    model = build(config)
    model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in saved["state"].items()}
    )
    return Descriptor(model, config)


def info_nce(z, temperature: float):
    """SimCLR's NT-Xent over 2B unit vectors: rows 2k and 2k+1 are a pair (original, copy),
    every other row of the batch a negative, the hard-negative siblings included."""
    import torch

    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.arange(len(z), device=z.device) ^ 1
    return torch.nn.functional.cross_entropy(sim, target)


def koleo(z):
    """Kozachenko-Leonenko entropy estimate (SSCD): -mean log distance to the nearest other row."""
    import torch

    with torch.no_grad():
        sim = z @ z.T
        sim.fill_diagonal_(-2.0)
        nearest = sim.argmax(dim=1)
    return -torch.log((z - z[nearest]).norm(dim=1) + 1e-8).mean()


def train(
    descriptor: Descriptor,
    batches,
    config: TrainConfig,
    steps: int | None = None,
    seconds: float | None = None,
    log=None,
) -> Descriptor:
    """Train on `batches` (an iterator of lists of (original, copy) PIL pairs) for `steps` steps
    or until `seconds` have passed; the LR schedule follows whichever budget is given."""
    import torch

    if (steps is None) == (seconds is None):
        raise ConfigError("train needs exactly one of steps or seconds")
    model, size = descriptor.model, descriptor.config.size
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    started, step = time.perf_counter(), 0
    model.train()
    while True:
        elapsed = time.perf_counter() - started
        done = step / steps if steps is not None else elapsed / seconds
        if done >= 1.0:
            break
        scale = done / config.warmup if done < config.warmup else 0.5 * (1 + np.cos(np.pi * done))
        for group in opt.param_groups:
            group["lr"] = config.lr * scale
        pairs = next(batches)
        x = np.stack([prepare(im, size) for pair in pairs for im in pair])
        z = model(torch.from_numpy(x))
        loss = info_nce(z, config.temperature)
        if config.koleo:
            loss = loss + config.koleo * koleo(z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        config.history.append((step, round(elapsed, 1), float(loss.detach())))
        if log and step % config.log_every == 0:
            recent = np.mean([h[2] for h in config.history[-config.log_every :]])
            log(f"step {step} {elapsed:.0f}s loss {recent:.3f} lr {config.lr * scale:.2e}")
    model.eval()
    return descriptor
