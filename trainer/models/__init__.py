"""Models come from open_clip's factory; importing this package registers the tiny configs.

`configs/clip-tiny.json` (64 px, 3-layer ViT with 8 px patches, 3-layer text transformer) trains on
a CPU in minutes; `configs/clip-nano.json` (32 px, 2 layers) is for tests. After
`import trainer.models`, `open_clip.create_model("clip-tiny", pretrained=path)` loads a checkpoint
written by the trainer. This package never imports the training loop.
"""

import contextlib
import logging
import math
from pathlib import Path

import open_clip

from manifests.config import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
TINY_MODELS = tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))

# SigLIP's initial temperature and bias (Zhai et al., 2023): log(10) and -10, so the sigmoid starts
# near 0 for the many negatives.
SIGLIP_INIT = {"init_logit_scale": math.log(10.0), "init_logit_bias": -10.0}


class UnknownModelError(ConfigError):
    pass


def register() -> None:
    """Add the tiny configs to open_clip's registry (idempotent)."""
    if not set(TINY_MODELS) <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)


def known_models() -> list[str]:
    return open_clip.list_models()


def check_model_name(name: str) -> None:
    if open_clip.get_model_config(name) is None:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(known_models())}"
        )


def create(name: str, loss: str = "clip", seed: int = 0):
    """A randomly initialised open_clip model returning dicts; `loss` picks the temperature init
    (CLIP: 1/0.07; SigLIP: 10 with a learnable bias)."""
    import torch

    check_model_name(name)
    torch.manual_seed(seed)
    extra = SIGLIP_INIT if loss == "siglip" else {}
    with _quiet_open_clip():
        return open_clip.create_model(name, pretrained=None, output_dict=True, **extra)


@contextlib.contextmanager
def _quiet_open_clip():
    """open_clip logs its creation steps on the root logger, and warns that a model built for
    training from scratch has no pretrained weights; both are noise here."""

    def keep(record: logging.LogRecord) -> bool:
        return "open_clip" not in record.pathname or record.levelno > logging.WARNING

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def tokenizer(name: str):
    return open_clip.get_tokenizer(name)


def mean_std(model) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel normalisation the model expects for RGB values in [0, 1]."""
    cfg = open_clip.get_model_preprocess_cfg(model)
    return tuple(cfg["mean"]), tuple(cfg["std"])


def image_size(model) -> int:
    size = open_clip.get_model_preprocess_cfg(model)["size"]
    return int(size if isinstance(size, int) else size[0])


register()
