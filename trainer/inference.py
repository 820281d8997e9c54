"""Inference with a checkpoint of this trainer: the one API that evaluation (`trainer eval`,
periodic zero-shot), `pipeline embed`, `pipeline search` and the build's clip stage all use.

    loaded = load("RUN/latest.pt", device="auto")
    feats, ok, bad = encode_images(loaded, paths_or_bytes)   # [len(ok), D]
    texts = encode_texts(loaded, ["a photo of a cat"])       # [1, D]

`load` reads a checkpoint this trainer wrote (open_clip format: `state_dict` plus `model_name`
and `config`; with --ema it takes `ema_state_dict`, the average, instead) or a bare open_clip
state dict (with `model_name` given). The image transform is open_clip's eval transform (short
side to the model's size with bicubic resampling, centre crop), producing uint8 tensors
normalised on the device, as the trainer does; transparent images are composited on white
(trainer.data.image.load_rgb). Embeddings are L2-normalised float32 on CPU. Bad input (a missing or foreign checkpoint, an unknown device) is a ConfigError.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

from manifests.config import ConfigError, check_device

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: object  # open_clip CLIP (or anything with encode_image/encode_text), eval mode
    tokenizer: object
    preprocess: "EvalTransform"  # or any PIL image -> model input tensor transform
    name: str  # the model config name ("" when not known)
    device: str
    info: dict = field(default_factory=dict)  # step, samples_seen, checkpoint path, config


class EvalTransform:
    """PIL RGB image -> uint8 [3, size, size]; `normalize` turns a batch into model input."""

    def __init__(self, size: int, mean, std):
        self.size = int(size)
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, img):
        import numpy as np
        import torch
        from PIL import Image

        scale = self.size / min(img.width, img.height)
        w = max(self.size, round(img.width * scale))
        h = max(self.size, round(img.height * scale))
        img = img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
        left, top = (w - self.size) // 2, (h - self.size) // 2
        crop = np.array(img.crop((left, top, left + self.size, top + self.size)), dtype=np.uint8)
        return torch.from_numpy(crop).permute(2, 0, 1)

    def normalize(self, batch):
        from trainer.data.image import normalize

        return normalize(batch, self.mean, self.std)


def make_preprocess(model) -> EvalTransform:
    import trainer.models as models

    mean, std = models.mean_std(model)
    return EvalTransform(models.image_size(model), mean, std)


def pick_device(device: str = "auto") -> str:
    """`auto | cpu | cuda | cuda:N` -> the torch device to use: auto is cuda when there is one."""
    import torch

    check_device(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available (use cpu or auto)")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return device


def _strip_prefixes(state: dict) -> dict:
    # DDP (`module.`) and torch.compile (`_orig_mod.`) wrappers prefix every key.
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def _read_checkpoint(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{path} is not a readable torch checkpoint: {first}") from None
    if not isinstance(ckpt, dict):
        raise ConfigError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def _model_name(ckpt: dict, given: str | None, path: Path) -> str:
    import trainer.models as models

    name = given or ckpt.get("model_name") or (ckpt.get("config") or {}).get("model")
    if not name:
        raise ConfigError(f"{path} does not name its model; pass --model NAME")
    try:
        models.check_model_name(name)
    except models.UnknownModelError as exc:
        raise ConfigError(str(exc)) from None
    return name


def load(checkpoint, device: str = "auto", model_name: str | None = None) -> LoadedModel:
    """The checkpoint's model in eval mode on `device` (see pick_device), with its tokenizer and
    eval transform; `model_name` overrides (or supplies) the name the checkpoint records."""
    import trainer.models as models
    from manifests.storage import cached_local

    device = pick_device(device)
    try:
        path = cached_local(checkpoint)  # a checkpoint in an object store: fetched once
    except FileNotFoundError:
        raise ConfigError(f"checkpoint {checkpoint} does not exist") from None
    ckpt = _read_checkpoint(path)
    name = _model_name(ckpt, model_name, path)
    averaged = isinstance(ckpt.get("ema_state_dict"), dict)  # --ema: the weights to use
    state = _strip_prefixes(ckpt["ema_state_dict"] if averaged else ckpt.get("state_dict", ckpt))
    model = models.create(name, loss="siglip" if "logit_bias" in state else "clip")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{path} does not hold {name} weights: {first}") from None
    model = model.to(device).eval()
    info = {"checkpoint": str(path), "weights": "ema" if averaged else "trained"}
    info.update({k: ckpt[k] for k in ("step", "samples_seen") if isinstance(ckpt.get(k), int)})
    info["config"] = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    return LoadedModel(model, quiet_tokenizer(name), make_preprocess(model), name, device, info)


def quiet_tokenizer(name: str):
    """trainer.models.tokenizer(name), without open_clip's INFO lines on the root logger."""
    import trainer.models as models

    with models._quiet_open_clip():
        return models.tokenizer(name)


def unwrap(model):
    """The bare open_clip model inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None)
        inner = getattr(model, "_orig_mod", None) if inner is None else inner
        if inner is None:
            return model
        model = inner


def _to_input(batch, preprocess, device: str):
    batch = batch.to(device, non_blocking=True)
    if hasattr(preprocess, "normalize"):
        return preprocess.normalize(batch)
    return batch


class _ImageFiles:
    """Dataset of (transformed image or None, index) over image paths or bytes."""

    def __init__(self, sources, preprocess):
        self.sources, self.preprocess = sources, preprocess

    def __len__(self):
        return len(self.sources)

    def __getitem__(self, index):
        from PIL import UnidentifiedImageError

        from trainer.data.image import load_rgb

        source = self.sources[index]
        try:
            img = load_rgb(source, draft_size=getattr(self.preprocess, "size", None))
            return self.preprocess(img), index
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            where = source if isinstance(source, str | Path) else f"image #{index}"
            log.warning("unreadable image skipped: %s (%s)", where, exc)
            return None, index


def _collate(batch):
    import torch

    good = [(x, i) for x, i in batch if x is not None]
    bad = [i for x, i in batch if x is None]
    images = torch.stack([x for x, _ in good]) if good else None
    return images, [i for _, i in good], bad


def encode_images(loaded: LoadedModel, sources, batch_size: int = 64, workers: int = 0):
    """(features float32 [N_ok, D] L2-normalised on CPU, ok indices, unreadable indices) of
    images given as paths or bytes; an image that does not decode is skipped, not an error."""
    import torch

    loader = torch.utils.data.DataLoader(
        _ImageFiles(list(sources), loaded.preprocess),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
    )
    model = unwrap(loaded.model)
    feats, ok, bad = [], [], []
    with torch.no_grad():
        for images, indices, failed in loader:
            bad += failed
            if images is None:
                continue
            batch = _to_input(images, loaded.preprocess, loaded.device)
            feats.append(model.encode_image(batch, normalize=True).float().cpu())
            ok += indices
    dim = feats[0].shape[1] if feats else 0
    return (torch.cat(feats) if feats else torch.zeros(0, dim)), ok, bad


def encode_texts(loaded: LoadedModel, texts, batch_size: int = 256):
    """float32 [len(texts), D], L2-normalised, on CPU ([0, 0] for no texts)."""
    import torch

    model = unwrap(loaded.model)
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            tokens = loaded.tokenizer(list(texts[start : start + batch_size])).to(loaded.device)
            out.append(model.encode_text(tokens, normalize=True).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)
