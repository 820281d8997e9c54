"""Small real inputs for evaluation tests: ImageFolder eval sets drawn in tmp_path, a checkpoint of
the registered `clip-nano` config, and a colour encoder whose embeddings are known exactly."""

from pathlib import Path

import torch
from PIL import Image

import trainer.models as models
from trainer.inference import EvalTransform, LoadedModel

IDENTITY = EvalTransform(4, mean=(0, 0, 0), std=(1, 1, 1))  # model input = RGB / 255


def solid(colour, size: int = 8) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def write_image_folder(root: Path, images: dict[str, list[Image.Image]], fmt: str = "png") -> Path:
    """root/<class>/<i>.<fmt> for each class's images."""
    for cls, imgs in images.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(imgs):
            img.save(root / cls / f"{i:03d}.{fmt}")
    return root


def save_checkpoint(path: Path, name: str = "clip-nano", seed: int = 0) -> Path:
    """A checkpoint as trainer.train._save writes it (weights, model name, config, counters)."""
    model = models.create(name, seed=seed)
    payload = {
        "state_dict": model.state_dict(),
        "step": 7,
        "samples_seen": 112,
        "model_name": name,
        "config": {"model": name, "where": ""},
    }
    torch.save(payload, path)
    return path


class ColourEncoder(torch.nn.Module):
    """Image embedding = mean normalised RGB of the image ([N, 3]); text embedding = a fixed
    vector per text from `table`. Stands in for a CLIP model where exact answers are needed."""

    def __init__(self, table: dict[str, tuple[float, float, float]]):
        super().__init__()
        self.texts = list(table)
        self.register_buffer(
            "vectors", torch.tensor([table[t] for t in self.texts], dtype=torch.float)
        )

    def tokenizer(self, texts):
        return torch.tensor([[self.texts.index(t)] for t in texts])

    def encode_text(self, tokens, normalize=False):
        out = self.vectors[tokens[:, 0]]
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    def encode_image(self, images, normalize=False):
        out = images.float().mean(dim=(2, 3))
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out


def as_loaded(model, tokenizer=None, preprocess=IDENTITY) -> LoadedModel:
    """`model` as trainer.inference.load returns a model: what the encode functions take."""
    return LoadedModel(model, tokenizer or model.tokenizer, preprocess, name="", device="cpu")
