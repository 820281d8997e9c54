"""Zero-shot classification as in CLIP: prompt-ensembled class embeddings and cosine scores.

Each class's text embedding is the normalised mean of its normalised template embeddings (CLIP
§3.1.4: ensembling in embedding space, so the classifier costs one vector per class). An image's
scores are cosine similarities to the class embeddings; the logit scale does not change a ranking.
Metrics: top-1, top-5 (top-k with k capped at the number of classes), and mean per-class recall
(the top-1 recall of each class that has images, averaged over those classes: CLIP's metric for
unbalanced sets such as Pets, Flowers or Caltech-101).
"""

import contextlib
from dataclasses import dataclass

from manifests.evalsets import EvalSet, load_eval_set, load_eval_sets
from trainer.evaluation.templates import load_templates
from trainer.inference import (
    LoadedModel,
    encode_images,
    encode_texts,
    make_preprocess,
    quiet_tokenizer,
    unwrap,
)


def class_embeddings(loaded: LoadedModel, labels, templates, batch_size: int = 256):
    """float32 [len(labels), D]: per label, the normalised mean of its normalised template
    embeddings."""
    import torch.nn.functional as F

    texts = [template.format(label) for label in labels for template in templates]
    emb = encode_texts(loaded, texts, batch_size)  # [C*T, D], normalised
    emb = emb.view(len(labels), len(templates), -1).mean(dim=1)
    return F.normalize(emb, dim=-1)


def topk_hits(scores, targets, k: int):
    """bool [N]: the target is among the k highest scores (k capped at the number of classes)."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return (top == targets.view(-1, 1)).any(dim=1)


def mean_per_class_recall(hits, targets, num_classes: int) -> float:
    """Mean over classes with at least one image of the fraction of them predicted right."""
    recalls = []
    for c in range(num_classes):
        mask = targets == c
        if mask.any():
            recalls.append(hits[mask].float().mean().item())
    return sum(recalls) / len(recalls) if recalls else float("nan")


def classification_metrics(scores, targets, num_classes: int | None = None) -> dict:
    """top1, top5, mean_per_class_recall for scores [N, C] and integer targets [N]."""
    num_classes = scores.shape[1] if num_classes is None else num_classes
    if len(targets) == 0:
        return {"top1": float("nan"), "top5": float("nan"), "mean_per_class_recall": float("nan")}
    top1 = topk_hits(scores, targets, 1)
    return {
        "top1": top1.float().mean().item(),
        "top5": topk_hits(scores, targets, 5).float().mean().item(),
        "mean_per_class_recall": mean_per_class_recall(top1, targets, num_classes),
    }


@dataclass
class ZeroShotRun:
    """What later steps reuse: the image features and per-image results of one eval set."""

    metrics: dict
    features: object  # float32 [N_ok, D], normalised
    targets: object  # int64 [N_ok]
    ok: list[int]  # indices into EvalSet.items of the readable images, in feature order
    unreadable: list[int]
    top1_hits: object  # bool [N_ok]


def run_zero_shot(
    loaded: LoadedModel, eval_set: EvalSet, templates, batch_size: int = 64, workers: int = 0
) -> ZeroShotRun:
    import torch

    classes = class_embeddings(loaded, eval_set.labels, templates)
    sources = [item.path for item in eval_set.items]
    feats, ok, bad = encode_images(loaded, sources, batch_size, workers)
    targets = torch.tensor([eval_set.items[i].target for i in ok], dtype=torch.long)
    scores = feats @ classes.T
    metrics = classification_metrics(scores, targets, len(eval_set.classes))
    metrics.update(
        n_images=len(ok),
        n_classes=len(eval_set.classes),
        n_unreadable=len(bad),
        n_templates=len(templates),
    )
    return ZeroShotRun(metrics, feats, targets, ok, bad, topk_hits(scores, targets, 1))


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


CONTRACT_KEYS = ("top1", "top5", "mean_per_class_recall")


def evaluate_zero_shot(
    model,
    tokenizer,
    preprocess,
    eval_sets,
    device,
    templates="imagenet80",
    batch_size: int = 64,
    workers: int = 0,
) -> dict:
    """Zero-shot metrics of `model` on each eval set: {name: {top1, top5, mean_per_class_recall,
    n_images}}; for periodic evaluation during training (no training-loop imports).

    `model` is an open_clip CLIP (DDP / compile wrappers are unwrapped); its train/eval mode is
    restored afterwards. `preprocess` maps a PIL RGB image to a tensor: an `EvalTransform`
    (uint8, normalised on the device) or any open_clip-style transform returning model input.
    `eval_sets` are folders or loaded `EvalSet`s; `templates` a built-in set name, a file, or a
    sequence of format strings."""
    if isinstance(templates, str):
        templates = load_templates(templates)
    sets = [s if isinstance(s, EvalSet) else load_eval_set(s) for s in eval_sets]
    bare = unwrap(model)
    loaded = LoadedModel(bare, tokenizer, preprocess, name="", device=str(device))
    results = {}
    with _eval_mode(bare):
        for eval_set in sets:
            run = run_zero_shot(loaded, eval_set, templates, batch_size, workers)
            results[eval_set.name] = {k: run.metrics[k] for k in (*CONTRACT_KEYS, "n_images")}
    return results


def flat_metrics(results: dict, prefix: str = "zeroshot") -> dict[str, float]:
    """`evaluate_zero_shot`'s results as flat columns for metrics.csv / TensorBoard:
    {"zeroshot/<eval set>/top1": ..., ...} (n_images left out)."""
    return {
        f"{prefix}/{name}/{key}": float(metrics[key])
        for name, metrics in results.items()
        for key in CONTRACT_KEYS
    }


class ZeroShotEvaluator:
    """Periodic zero-shot evaluation for a training loop: the eval sets and templates are read
    once, at construction (so a bad --eval-set fails before training starts); each call
    evaluates the model as it is now and returns `flat_metrics` columns. Call it on one rank."""

    def __init__(
        self,
        eval_sets,
        model_name: str,
        templates="imagenet80",
        batch_size: int = 64,
        workers: int = 0,
    ):
        self.eval_sets = load_eval_sets(eval_sets)
        self.templates = load_templates(templates) if isinstance(templates, str) else templates
        self.tokenizer = quiet_tokenizer(model_name)
        self.batch_size, self.workers = batch_size, workers

    def __call__(self, model, device) -> dict[str, float]:
        preprocess = make_preprocess(unwrap(model))
        results = evaluate_zero_shot(
            model,
            self.tokenizer,
            preprocess,
            self.eval_sets,
            device,
            self.templates,
            self.batch_size,
            self.workers,
        )
        return flat_metrics(results)
