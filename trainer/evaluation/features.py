"""Models and embeddings for evaluation: load a checkpoint, transform images, encode batches.

`load_checkpoint` reads a checkpoint this trainer wrote (open_clip format: `state_dict` plus
`model_name` and `config`) or a bare open_clip state dict (with `model_name` given). The eval
transform is open_clip's (short side to the model's size with bicubic resampling, centre crop),
producing uint8 tensors normalised on the device, as the trainer does; transparent images are
composited on white (trainer.data.image.load_rgb). Embeddings are L2-normalised float32 on CPU.
"""

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from trainer.evaluation.errors import EvalError

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: object  # open_clip CLIP, eval mode, on `device`
    tokenizer: object
    preprocess: "EvalTransform"
    name: str
    device: str
    info: dict = field(default_factory=dict)  # step, samples_seen, checkpoint path


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
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvalError("--device cuda: no CUDA device is available")
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


def _model_name(ckpt: dict, given: str | None, path: Path) -> str:
    name = given or ckpt.get("model_name") or (ckpt.get("config") or {}).get("model")
    if not name:
        raise EvalError(f"{path} does not name its model; pass --model NAME")
    return name


def load_checkpoint(path, device: str = "cpu", model_name: str | None = None) -> LoadedModel:
    """The checkpoint's model in eval mode with its tokenizer and eval transform."""
    import torch

    import trainer.models as models

    path = Path(path)
    if not path.is_file():
        raise EvalError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EvalError(f"{path} is not a readable torch checkpoint: {first}") from None
    if not isinstance(ckpt, dict):
        raise EvalError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    state = ckpt.get("state_dict", ckpt)
    name = _model_name(ckpt, model_name, path)
    try:
        models.check_model_name(name)
    except models.UnknownModelError as exc:
        raise EvalError(str(exc)) from None
    state = _strip_prefixes(state)
    model = models.create(name, loss="siglip" if "logit_bias" in state else "clip")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise EvalError(f"{path} does not hold {name} weights: {first}") from None
    model = model.to(device).eval()
    info = {"checkpoint": str(path)}
    info.update({k: ckpt[k] for k in ("step", "samples_seen") if isinstance(ckpt.get(k), int)})
    info["config"] = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    return LoadedModel(model, quiet_tokenizer(name), make_preprocess(model), name, device, info)


def quiet_tokenizer(name: str):
    import trainer.models as models

    """trainer.models.tokenizer(name), without open_clip's INFO lines on the root logger."""
    quiet = getattr(models, "_quiet_open_clip", contextlib.nullcontext)
    with quiet():
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


def encode_images(model, preprocess, sources, device: str, batch_size=64, workers=0):
    """(features float32 [N_ok, D] L2-normalised on CPU, ok indices, unreadable indices)."""
    import torch

    loader = torch.utils.data.DataLoader(
        _ImageFiles(list(sources), preprocess),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
    )
    model = unwrap(model)
    feats, ok, bad = [], [], []
    with torch.no_grad():
        for images, indices, failed in loader:
            bad += failed
            if images is None:
                continue
            out = model.encode_image(_to_input(images, preprocess, device), normalize=True)
            feats.append(out.float().cpu())
            ok += indices
    dim = feats[0].shape[1] if feats else 0
    return (torch.cat(feats) if feats else torch.zeros(0, dim)), ok, bad


def encode_texts(model, tokenizer, texts, device: str, batch_size=256):
    """float32 [len(texts), D], L2-normalised, on CPU."""
    import torch

    model = unwrap(model)
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(list(texts[start : start + batch_size])).to(device)
            out.append(model.encode_text(tokens, normalize=True).float().cpu())
    return torch.cat(out)
