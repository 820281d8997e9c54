"""Image and caption embeddings of (image bytes, caption) pairs with a trainer checkpoint.

The model, its tokenizer and its eval transform come from `trainer.inference`, the trainer's one
inference API (the checkpoint format is open_clip's, so any checkpoint the trainer wrote works).
Embeddings are L2-normalised float32 on CPU; the CLIP score of a pair is the cosine of its two
embeddings, the number LAION thresholded (ViT-B/32 >= 0.28) and DataComp ranked by.
"""

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)
CHUNK = 4096  # distinct images (and captions) embedded per progress-bar step: bounded memory


@dataclass
class PairEmbeddings:
    image: "object"  # np.float32 [N, D]; rows of unreadable images are NaN
    text: "object"  # np.float32 [N, D]
    score: "object"  # np.float32 [N]: cosine(image, text); NaN where the image is unreadable


def load_model(checkpoint: str, device: str = "auto"):
    """The checkpoint's model (trainer.inference.LoadedModel); a bad checkpoint or device is a
    ConfigError (manifests.config: trainer.inference raises the project's one user error)."""
    from trainer import inference

    return inference.load(checkpoint, device)


def checkpoint_digest(path: str) -> str:
    """sha256 of a checkpoint file: a model identity that survives renames and catches rewrites."""
    import hashlib

    from manifests.storage import cached_local

    digest = hashlib.sha256()
    with open(cached_local(path), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def embed_texts(loaded, texts: list[str], batch_size: int = 256):
    """np.float32 [len(texts), D], L2-normalised."""
    import numpy as np

    from trainer.inference import encode_texts

    if not texts:
        return np.zeros((0, _dim(loaded)), dtype=np.float32)
    return encode_texts(loaded, texts, batch_size).numpy()


def embed_images(loaded, images: list[bytes], batch_size: int = 256):
    """np.float32 [len(images), D], L2-normalised; NaN rows for images that do not decode."""
    import numpy as np

    from trainer.inference import encode_images

    out = np.full((len(images), _dim(loaded)), np.nan, dtype=np.float32)
    if not images:
        return out
    feats, ok, bad = encode_images(loaded, images, batch_size=batch_size)
    if bad:
        log.warning("%d of %d images could not be decoded for embedding", len(bad), len(images))
    if ok:
        out[ok] = feats.numpy()
    return out


def embed_pairs(
    loaded,
    images: list[bytes],
    captions: list[str],
    batch_size: int = 256,
    desc: str | None = None,
) -> PairEmbeddings:
    """Both embeddings and the CLIP score of every pair, in chunks with a progress bar. Equal
    image bytes (an image stored once per caption row of its group) and equal captions are
    embedded once each: a part whose images carry four captions costs one image pass each."""
    import numpy as np
    from tqdm import tqdm

    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    distinct_images, image_index = _distinct(images)
    distinct_texts, text_index = _distinct(captions)
    image_parts, text_parts = [], []
    starts = range(0, max(len(distinct_images), len(distinct_texts)), CHUNK)
    for start in tqdm(starts, desc=desc, disable=desc is None or len(starts) < 2, leave=False):
        image_parts.append(embed_images(loaded, distinct_images[start : start + CHUNK], batch_size))
        text_parts.append(embed_texts(loaded, distinct_texts[start : start + CHUNK], batch_size))
    dim = _dim(loaded)
    image = np.concatenate([np.zeros((0, dim), np.float32), *image_parts])[image_index]
    text = np.concatenate([np.zeros((0, dim), np.float32), *text_parts])[text_index]
    score = np.einsum("nd,nd->n", image, text).astype(np.float32)
    return PairEmbeddings(image, text, score)


def _distinct(items: list) -> tuple[list, "object"]:
    """(the distinct items in first-seen order, int64 [len(items)]: each item's place there)."""
    import numpy as np

    place: dict = {}
    index = np.fromiter((place.setdefault(x, len(place)) for x in items), np.int64, len(items))
    return list(place), index


def _dim(loaded) -> int:
    import open_clip

    return int(open_clip.get_model_config(loaded.name)["embed_dim"])
