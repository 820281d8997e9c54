"""Evaluation as in the CLIP paper (Radford et al., 2021) for checkpoints of this trainer.

- `templates`: prompt template sets (CLIP's 80 ImageNet templates, a short generic set, files).
- `zeroshot`: prompt-ensembled class embeddings, top-1/top-5/mean per-class recall, and
  `evaluate_zero_shot(model, tokenizer, preprocess, eval_sets, device)` for periodic evaluation.
- `linear_probe`: L-BFGS logistic regression on frozen features, full and k-shot, and the k where
  the probe matches zero-shot.
- `retrieval`: image<->text recall@K on a held-out, hash-of-uid part of a dataset.
- `overlap`: All / Clean / Overlap zero-shot accuracy from a leak-checked build's overlap.parquet.
- `report`: JSON, Markdown, HTML and the zero-shot vs k-shot PNG; `cli`: `trainer eval`.

Eval sets (ImageFolder, `DIR/<class name>/<image>`) are read by `manifests.evalsets`, the reading
the pipeline's leak check shares; checkpoints are loaded and embedded by `trainer.inference`.
Nothing here imports the training loop, and nothing heavy is imported at package import.
"""
