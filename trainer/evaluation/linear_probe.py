"""Linear probes on frozen image features: CLIP's logistic regression, full and k-shot.

As in CLIP (appendix A.3): scikit-learn's L-BFGS logistic regression (at most 1,000 iterations)
on the image embeddings, the inverse regularisation C chosen by a sweep on a validation split.
Features are the L2-normalised embeddings zero-shot uses. With `fixed_c` the sweep is skipped.

Where the splits come from (an ImageFolder eval set has no train/test split of its own):
- by default each eval set is split per class, seeded and stratified: within a class, images are
  ordered by sha256(f"{seed}:{image id}") (so the split does not depend on file order or on other
  classes) and the first `test_fraction` (at least one, at most all but one) form the test split;
  a class with a single image goes to test. Of the rest (the train pool), `val_fraction` per class
  form the validation split for the C sweep (never the last image of a class).
- with a separate probe-train set (`--probe-train DIR`, same class folder names) every eval image
  is a test image and the probe-train set is split into train and validation the same way.
The full probe picks C on validation, then refits on train + validation. A k-shot probe draws k
images per class from the train split (all of them where a class has fewer: `short_classes`)
with seeds 0..seeds-1, picks C on the same validation split, and is scored on the test split.
Without validation images (every class of the pool has one image) C is 1, and the result says so.
"""

import hashlib
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np

from trainer.evaluation.errors import EvalError

log = logging.getLogger(__name__)

SMALL_PROBLEM = 2_000_000  # feature values (images x dims) below which BLAS runs single-threaded


@dataclass
class ProbeConfig:
    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    seeds: int = 3  # k-shot draws per k
    test_fraction: float = 0.5  # of each class, when the eval set is split
    val_fraction: float = 0.2  # of each class's train pool, for the C sweep
    c_grid: tuple[float, ...] = tuple(10.0**e for e in range(-2, 6))
    fixed_c: float | None = None  # skip the sweep
    max_iter: int = 1000
    split_seed: int = 0

    def __post_init__(self):
        if not self.shots or any(not isinstance(k, int) or k < 1 for k in self.shots):
            raise EvalError(f"probe shots must be positive integers, not {self.shots}")
        if self.seeds < 1:
            raise EvalError(f"probe seeds must be at least 1, not {self.seeds}")
        for name in ("test_fraction", "val_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise EvalError(f"probe {name} must be in [0, 1), not {getattr(self, name)}")
        if self.fixed_c is not None and not (self.fixed_c > 0 and math.isfinite(self.fixed_c)):
            raise EvalError(f"probe C must be a positive number, not {self.fixed_c}")
        self.shots = tuple(sorted(set(self.shots)))


def _order_key(seed: int, item_id: str) -> str:
    return hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()


def stratified_take(ids, targets, fraction: float, seed: int, at_least_one: bool):
    """(rest, taken) index arrays: per class, the first round(n * fraction) images in seeded hash
    order are taken, at most n - 1; with `at_least_one`, at least one (a lone image is taken)."""
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(int(t), []).append(i)
    rest, taken = [], []
    for members in by_class.values():
        members.sort(key=lambda i: _order_key(seed, ids[i]))
        n = len(members)
        count = min(round(n * fraction), n - 1)
        if at_least_one:
            count = max(count, 1)
        taken += members[:count]
        rest += members[count:]
    return np.array(sorted(rest), dtype=np.int64), np.array(sorted(taken), dtype=np.int64)


@dataclass
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    test_index: np.ndarray  # positions of the test images in the eval set's feature order
    method: str


def make_split(feats, targets, ids, cfg: ProbeConfig, train=None) -> Split:
    """Train/val/test split of one eval set's features (see the module doc); `train` is
    (features, targets, ids) of a separate probe-train set."""
    feats, targets = np.asarray(feats, dtype=np.float32), np.asarray(targets, dtype=np.int64)
    if train is None:
        pool, test = stratified_take(ids, targets, cfg.test_fraction, cfg.split_seed, True)
        pool_x, pool_y, pool_ids = feats[pool], targets[pool], [ids[i] for i in pool]
        method = f"stratified split of the eval set, seed {cfg.split_seed}"
    else:
        test = np.arange(len(targets))
        pool_x = np.asarray(train[0], dtype=np.float32)
        pool_y, pool_ids = np.asarray(train[1], dtype=np.int64), train[2]
        method = "separate probe-train set"
    tr, va = stratified_take(pool_ids, pool_y, cfg.val_fraction, cfg.split_seed, False)
    if len(tr) == 0:
        raise EvalError("linear probe: no training images (every class has a single image)")
    return Split(
        pool_x[tr], pool_y[tr], pool_x[va], pool_y[va], feats[test], targets[test], test, method
    )


class _Constant:
    """The probe when the training images hold one class only (scikit-learn refuses to fit)."""

    def __init__(self, label: int):
        self.label = label

    def predict(self, x):
        return np.full(len(x), self.label, dtype=np.int64)


def _fit(clf, x, y):
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    # Small problems run several times faster on one BLAS thread (thread start-up dominates).
    threads = 1 if x.size < SMALL_PROBLEM else None
    with warnings.catch_warnings(), threadpool_limits(threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        # k-shot training sets have more classes than half their images; sklearn warns of that
        warnings.filterwarnings(
            "ignore", message="The number of unique classes", category=UserWarning
        )
        return clf.fit(x, y)


def fit(x, y, c: float, max_iter: int = 1000):
    """L-BFGS multinomial logistic regression with inverse regularisation `c`."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        return _Constant(int(y[0]))
    return _fit(LogisticRegression(C=c, max_iter=max_iter), x, y)


def scores(clf, x, y, num_classes: int) -> dict:
    """top1 and mean per-class recall of `clf` on (x, y)."""
    hits = clf.predict(x) == y
    recalls = [hits[y == c].mean() for c in range(num_classes) if (y == c).any()]
    return {
        "top1": float(hits.mean()) if len(y) else float("nan"),
        "mean_per_class_recall": float(np.mean(recalls)) if recalls else float("nan"),
    }


def _validation_score(clf, split: Split) -> tuple[float, float]:
    """(top-1, mean log-probability of the true class) on the validation split; the second
    breaks ties between Cs that classify the (often few) validation images equally well."""
    x, y = split.x_val, split.y_val
    top1 = float((clf.predict(x) == y).mean())
    proba = clf.predict_proba(x)
    column = {c: i for i, c in enumerate(clf.classes_)}
    p_true = np.array([proba[i, column[t]] if t in column else 0.0 for i, t in enumerate(y)])
    return top1, float(np.log(np.maximum(p_true, 1e-12)).mean())


def fit_with_sweep(x, y, split: Split, cfg: ProbeConfig):
    """(probe, C, {C: validation top-1}): the C with the best validation (top-1,
    log-likelihood). The sweep runs from strong to weak regularisation, each fit starting from
    the previous solution (the optimum is unique, so this only saves iterations)."""
    import copy

    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        return _Constant(int(y[0])), cfg.fixed_c or 1.0, {}
    if cfg.fixed_c is not None or len(split.y_val) == 0:
        c = cfg.fixed_c if cfg.fixed_c is not None else 1.0
        return fit(x, y, c, cfg.max_iter), c, {}
    clf = LogisticRegression(max_iter=cfg.max_iter, warm_start=True)
    best, sweep = None, {}
    for c in sorted(cfg.c_grid):
        _fit(clf.set_params(C=c), x, y)
        sweep[c] = _validation_score(clf, split)
        if best is None or sweep[c] > sweep[best[0]]:
            best = (c, copy.deepcopy(clf))
    return best[1], best[0], {c: score[0] for c, score in sweep.items()}


def full_probe(split: Split, cfg: ProbeConfig, num_classes: int) -> dict:
    """C from the sweep on train, then a refit on train + validation."""
    _, c, sweep = fit_with_sweep(split.x_train, split.y_train, split, cfg)
    x = np.concatenate([split.x_train, split.x_val])
    y = np.concatenate([split.y_train, split.y_val])
    result = scores(fit(x, y, c, cfg.max_iter), split.x_test, split.y_test, num_classes)
    return {
        **result,
        "C": c,
        "C_chosen_by": "validation sweep" if sweep else _no_sweep(cfg),
        "n_train": int(len(y)),
        "val_sweep": {f"{k:g}": v for k, v in sweep.items()},
    }


def _no_sweep(cfg: ProbeConfig) -> str:
    return "--probe-c" if cfg.fixed_c is not None else "default 1 (no validation images)"


def draw_shots(y, k: int, seed: int) -> tuple[np.ndarray, int]:
    """(indices of k images per class, drawn with `seed`; classes with fewer than k images)."""
    rng = np.random.default_rng([seed, k])
    picked, short = [], 0
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        short += len(members) < k
        picked.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(picked)), short


def k_shot(split: Split, cfg: ProbeConfig, num_classes: int) -> dict:
    out = {}
    for k in cfg.shots:
        top1, recall, cs = [], [], []
        short = 0
        for seed in range(cfg.seeds):
            idx, short = draw_shots(split.y_train, k, seed)
            x, y = split.x_train[idx], split.y_train[idx]
            clf, c, _ = fit_with_sweep(x, y, split, cfg)
            result = scores(clf, split.x_test, split.y_test, num_classes)
            top1.append(result["top1"])
            recall.append(result["mean_per_class_recall"])
            cs.append(c)
        out[str(k)] = {
            "top1_mean": float(np.mean(top1)),
            "top1_std": float(np.std(top1, ddof=1)) if len(top1) > 1 else 0.0,
            "mean_per_class_recall_mean": float(np.mean(recall)),
            "top1": top1,
            "C": cs,
            "short_classes": int(short),
        }
    return out


def k_match(shots, means, zero_shot: float) -> dict:
    """Where the k-shot probe's mean top-1 first reaches zero-shot: `first` (the first k in
    `shots` at or above it) and `interpolated` (linear in log2 k between the k below and the k at
    or above; the smallest k when the probe is already there, with `bound` "at_most"; None with
    `bound` "above_all" when zero-shot beats every k)."""
    shots, means = list(shots), list(means)
    for i, (k, m) in enumerate(zip(shots, means, strict=True)):
        if m >= zero_shot:
            if i == 0:
                return {"first": k, "interpolated": float(k), "bound": "at_most"}
            k0, m0 = shots[i - 1], means[i - 1]
            t = (zero_shot - m0) / (m - m0)
            log_k = math.log2(k0) + t * (math.log2(k) - math.log2(k0))
            return {"first": k, "interpolated": float(2.0**log_k), "bound": None}
    return {"first": None, "interpolated": None, "bound": "above_all"}


def run_probe(split: Split, cfg: ProbeConfig, num_classes: int, zero_shot_test: float) -> dict:
    """The `linear_probe` section of an eval set's results; `top1` and `mean_per_class_recall` at
    its top level are the full probe's."""
    full = full_probe(split, cfg, num_classes)
    shots = k_shot(split, cfg, num_classes)
    match = k_match(cfg.shots, [shots[str(k)]["top1_mean"] for k in cfg.shots], zero_shot_test)
    return {
        "top1": full["top1"],
        "mean_per_class_recall": full["mean_per_class_recall"],
        "full": full,
        "k_shot": shots,
        "zero_shot_top1_test": zero_shot_test,
        "k_match": match,
        "split": {
            "method": split.method,
            "n_train": int(len(split.y_train)),
            "n_val": int(len(split.y_val)),
            "n_test": int(len(split.y_test)),
            "test_fraction": cfg.test_fraction,
            "val_fraction": cfg.val_fraction,
            "seeds": cfg.seeds,
        },
    }
