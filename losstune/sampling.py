"""The validation sample's own error: search objectives in NumPy and a paired, class-stratified bootstrap.

Repeats over seeds share one validation sample, so their spread misses the sampling error of that sample
(a macro-F1 measured on 5-7 examples of a tail class). From the kept validation predictions of each scored
training this module recomputes the objective (`metric_fn`), optionally under a balanced class prior
(`prior_weights`), and bootstraps the validation examples, class-stratified (`paired_bootstrap`,
`single_bootstrap`).

Every metric function has the signature `f(y_true, y_pred, weights=None, index=None)`: without `index` it
returns a float; with `index` an int array (B, n) it evaluates the B resamples
`(y_true[index[b]], y_pred[index[b]], weights[index[b]])` at once and returns an array (B,).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from losstune import stats

PRIORS = ("validation", "balanced")


# --- helpers -----------------------------------------------------------------------------------------------
def _weights(weights, n):
    return np.ones(n) if weights is None else np.asarray(weights, dtype="float64").reshape(n)


def _index(index, n):
    """The (B, n) resample index; the identity (1, n) when `index` is None."""
    return np.arange(n)[None, :] if index is None else np.asarray(index, dtype=np.int64).reshape(-1, n)


def _out(values, index):
    return float(values[0]) if index is None else np.asarray(values, dtype="float64")


def class_ids(y_true, num_classes=None):
    """Integer class ids (n,) of int ids (n,) / (n, 1) or one-hot labels (n, C); ValueError for other labels."""
    y = np.asarray(y_true)
    if y.ndim == 2 and y.shape[1] > 1:
        if not (np.all((y == 0) | (y == 1)) and np.all(y.sum(1) == 1)):
            raise ValueError(f"`y_true` of shape {y.shape} must be one-hot or class ids (n,) for class metrics.")
        return y.argmax(1)
    y = y.reshape(-1).astype("float64")
    if y.size and (not np.all(np.mod(y, 1) == 0) or y.min() < 0):
        raise ValueError("`y_true` must hold class ids (integers >= 0) for class metrics.")
    ids = y.astype(np.int64)
    if num_classes is not None and ids.size and ids.max() >= num_classes:
        raise ValueError(f"`y_true` holds class id {ids.max()} but there are only {num_classes} classes.")
    return ids


def _cells(y_true, y_pred, weights, index):
    """Per-resample, per-class weighted counts (B, C): true, predicted, and true positives (arg-max class)."""
    y_pred = np.asarray(y_pred, dtype="float64")
    if y_pred.ndim != 2 or y_pred.shape[1] < 2:
        raise ValueError(f"`y_pred` must have shape (n, C) with C >= 2 classes, got {y_pred.shape}.")
    n, c = y_pred.shape
    t_all, p_all = class_ids(y_true, c), y_pred.argmax(1)
    idx = _index(index, n)
    t, p, w = t_all[idx], p_all[idx], _weights(weights, n)[idx]
    row = np.arange(idx.shape[0])[:, None] * c
    count = lambda cells, wt: np.bincount((row + cells).ravel(), wt.ravel(), idx.shape[0] * c).reshape(-1, c)
    return count(t, w), count(p, w), count(t, w * (t == p))


# --- metrics -----------------------------------------------------------------------------------------------
def macro_f1(y_true, y_pred, weights=None, index=None):
    """Macro-F1 of the arg-max class over the classes 0..C-1 (C = y_pred.shape[-1]).

    F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c) = 2 TP_c / (T_c + P_c) with weighted counts (T_c: weight of the
    examples of class c, P_c: of those predicted c), and 0 where T_c + P_c = 0; the macro mean divides by C.
    This is sklearn's f1_score(average="macro", labels=range(C), zero_division=0, sample_weight=weights).
    Keras's F1Score(average="macro") (losstune.objectives.MacroF1) agrees: for a class absent from both
    y_true and the predictions TP = FP = FN = 0, its precision and recall are 0 / (0 + epsilon) = 0, so its
    F1 is 0 and it still counts in the mean over all C classes (checked in tests/test_sampling.py). Keras
    differs only by its epsilon (1e-7) in the divisions and in marking every tied maximum as predicted
    (np.argmax takes the first).
    """
    true, pred, tp = _cells(y_true, y_pred, weights, index)
    denom = true + pred
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)
    return _out(f1.mean(1), index)


def balanced_accuracy(y_true, y_pred, weights=None, index=None):
    """Mean recall TP_c / T_c of the arg-max class over the classes present in y_true (T_c > 0).

    sklearn's balanced_accuracy_score(y_true, y_pred.argmax(1), sample_weight=weights).
    """
    true, _, tp = _cells(y_true, y_pred, weights, index)
    present = true > 0
    recall = np.divide(tp, true, out=np.zeros_like(true), where=present)
    return _out(recall.sum(1) / np.maximum(present.sum(1), 1), index)


def _average_precision(y, s, w):
    """Weighted average precision sum_k (R_k - R_{k-1}) P_k over the distinct scores in descending order.

    Ties form one threshold, as in sklearn's average_precision_score; 0 without positives (sklearn too).
    """
    order = np.argsort(-s, kind="mergesort")
    y, s, w = y[order], s[order], w[order]
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), y.size - 1]  # last example of each tied group
    tps, fps = np.cumsum(y * w)[ends], np.cumsum((1 - y) * w)[ends]
    if tps.size == 0 or tps[-1] <= 0:
        return 0.0
    precision = np.divide(tps, tps + fps, out=np.zeros_like(tps), where=tps + fps > 0)
    return float(np.sum(np.diff(np.r_[0.0, tps]) / tps[-1] * precision))


def _roc_auc(y, s, w):
    """Weighted Mann-Whitney AUC: sum_{i pos, j neg} w_i w_j ([s_i > s_j] + [s_i = s_j] / 2) / (W+ W-)."""
    values, group = np.unique(s, return_inverse=True)
    pos = np.bincount(group, w * y, values.size)
    neg = np.bincount(group, w * (1 - y), values.size)
    below = np.cumsum(neg) - neg  # negative weight strictly below each score
    denom = pos.sum() * neg.sum()
    return float(np.sum(pos * (below + neg / 2)) / denom) if denom > 0 else float("nan")


def _per_row(score, y_true, y_pred, weights, index):
    """Evaluate `score(y, s, w)` on each resample (a loop over rows) and average over label columns."""
    y = np.asarray(y_true, dtype="float64")
    s = np.asarray(y_pred, dtype="float64")
    n = s.shape[0]
    y, s = y.reshape(n, -1), s.reshape(n, -1)
    if y.shape != s.shape:
        raise ValueError(f"`y_pred` of shape {np.shape(y_pred)} does not match `y_true` of {np.shape(y_true)}.")
    w = _weights(weights, n)
    rows = [np.mean([score(y[i, k], s[i, k], w[i]) for k in range(y.shape[1])]) for i in _index(index, n)]
    return _out(rows, index)


def pr_auc(y_true, y_pred, weights=None, index=None):
    """Average precision (see `_average_precision`); for a multilabel (n, C) matrix its macro mean over labels.

    Keras's AUC(curve="PR") interpolates over 200 thresholds, so it differs slightly; rank-based, so
    probabilities and logits give the same value.
    """
    return _per_row(_average_precision, y_true, y_pred, weights, index)


def roc_auc(y_true, y_pred, weights=None, index=None):
    """ROC-AUC of the scores y_pred (see `_roc_auc`); NaN where a resample lacks a class."""
    return _per_row(_roc_auc, y_true, y_pred, weights, index)


def pair_auc(y_true, y_pred, weights=None, index=None):
    """Pairs (y = 1 similar; y_pred a distance): the ROC-AUC of the similarity -distance.

    Keras's PairAUC ranks by exp(-max(d, 0)) over 1000 thresholds: the same ranking for distances >= 0.
    """
    return roc_auc(y_true, -np.asarray(y_pred, dtype="float64"), weights, index)


def mae(y_true, y_pred, weights=None, index=None):
    """Weighted mean absolute error sum_i w_i mean_k |y_ik - p_ik| / sum_i w_i (Keras's MAE per example)."""
    p = np.asarray(y_pred, dtype="float64")
    n = p.shape[0]
    err = np.abs(np.asarray(y_true, dtype="float64").reshape(n, -1) - p.reshape(n, -1)).mean(1)
    idx = _index(index, n)
    w = _weights(weights, n)[idx]
    return _out((w * err[idx]).sum(1) / w.sum(1), index)


METRICS = {"macro_f1": macro_f1, "balanced_accuracy": balanced_accuracy, "pr_auc": pr_auc,
           "roc_auc": roc_auc, "pair_auc": pair_auc, "mae": mae}
_UNSTRATIFIED = ("mae",)  # metrics of real targets: a plain bootstrap


def _base(name):
    return name[4:] if isinstance(name, str) and name.startswith("val_") else name


def metric_fn(name):
    """The NumPy function `f(y_true, y_pred, weights=None, index=None)` of an objective name (with or without
    "val_"): one of METRICS; None for a name it does not know (the caller then keeps seed-only intervals)."""
    return METRICS.get(_base(name))


# --- priors and resampling ---------------------------------------------------------------------------------
def prior_weights(y_true, num_classes, prior):
    """Per-example importance weights (n,) for a class prior.

    "validation": all ones (the validation set's own class frequencies). "balanced":
    w_i = (1 / C_present) / p_val(y_i) = n / (C_present * n_{y_i}), where n_c counts the validation examples
    of class c and C_present the classes with n_c > 0: each present class then carries total weight
    n / C_present, and a weighted metric estimates performance under equal class frequencies. Labels are int
    ids or one-hot; binary 0/1 labels count as 2 classes.
    """
    if prior not in PRIORS:
        raise ValueError(f"`prior` must be one of {list(PRIORS)}, got {prior!r}.")
    y = np.asarray(y_true)
    n = y.shape[0] if y.ndim else 0
    if prior == "validation":
        return np.ones(n)
    ids = class_ids(y, max(int(num_classes), 2))
    return np.asarray(balanced_class_weights(np.bincount(ids, minlength=max(int(num_classes), 2))))[ids]


def balanced_class_weights(counts):
    """Per-class weights n / (C_present n_c) from class counts (1 for an absent class: it weighs nothing)."""
    counts = np.asarray(counts, dtype="float64")
    present = int((counts > 0).sum())
    return [float(counts.sum() / (present * c)) if c > 0 else 1.0 for c in counts]


def with_prior(runs, prior):
    """Kept (y_true, y_pred) runs as (y_true, y_pred, per-example weights under `prior`)."""
    return [(y, p, prior_weights(y, p.shape[-1] if p.ndim > 1 else 2, prior)) for y, p in runs]


def stratified_indices(strata, n_boot, rng):
    """Class-stratified bootstrap indices (n_boot, n): row b resamples, with replacement, each stratum's own
    examples into that stratum's positions, so each stratum keeps its size.

    Draw order (to reproduce by hand): for each stratum value s in ascending order (np.unique), with
    members m = np.flatnonzero(strata == s) (ascending), one call d = rng.integers(0, len(m),
    size=(n_boot, len(m))), and out[:, m] = m[d]. `strata` None: a single stratum (a plain bootstrap).
    """
    if strata is None:
        raise ValueError("`strata` must be an array (n,); pass np.zeros(n) for one stratum.")
    strata = np.asarray(strata).reshape(-1)
    out = np.empty((int(n_boot), strata.size), dtype=np.int64)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        out[:, members] = members[rng.integers(0, members.size, size=(int(n_boot), members.size))]
    return out


# A class with fewer validation examples than this is too small to measure alone: its per-class metric moves in
# big steps with each of its predictions (the search says so), and the bootstrap resamples such classes together.
SMALL_CLASS = 5


def small_classes(counts):
    """The classes (indices into `counts`, validation examples per class) with fewer than SMALL_CLASS examples."""
    return [c for c, n in enumerate(counts or []) if n < SMALL_CLASS]


def strata_of(y_true, metric):
    """The bootstrap's strata: class ids for class labels (int ids or one-hot), except that the classes with
    fewer than SMALL_CLASS examples share one stratum (id -1): resampled within itself, a class of one
    example would always be that example, and the error of measuring it (the largest on a long-tailed
    validation set) would vanish; pooled, each small class appears 0, 1, 2, ... times. One stratum (zeros)
    for "mae" and for multilabel 0/1 matrices."""
    y = np.asarray(y_true)
    if _base(metric) in _UNSTRATIFIED or (y.ndim == 2 and y.shape[1] > 1 and not np.all(y.sum(1) == 1)):
        return np.zeros(y.shape[0], dtype=np.int64)
    ids = class_ids(y)
    counts = np.bincount(ids)
    return np.where(counts[ids] < SMALL_CLASS, -1, ids)


# --- the bootstrap -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean over repeats and its standard errors.

    diff: mean over repeats of metric(a_r) - metric(b_r) (for `single_bootstrap`: the mean of metric(a_r));
    se_sample: the validation sample's error (bootstrap); se_seed: the seeds' (None with one repeat);
    se = sqrt(se_sample^2 + se_seed^2).
    """

    diff: float
    se_sample: float
    se_seed: float | None
    se: float
    repeats: int
    n_boot: int

    @property
    def dominant(self):
        """"validation sample" when se_sample >= se_seed (None counts as 0), else "seeds"."""
        return "validation sample" if self.se_sample >= (self.se_seed or 0.0) else "seeds"


def _repeats(runs, name):
    """[(y_true, y_pred, weights)] from a list of 2- or 3-tuples; ValueError naming `name` otherwise."""
    if not isinstance(runs, (list, tuple)) or len(runs) == 0:
        raise ValueError(f"`{name}` must be a non-empty list of (y_true, y_pred, weights) tuples, one per repeat.")
    out = []
    for r, run in enumerate(runs):
        if not isinstance(run, (list, tuple)) or len(run) not in (2, 3):
            raise ValueError(f"`{name}`[{r}] must be a (y_true, y_pred, weights) tuple.")
        y, p, w = (tuple(run) + (None,))[:3]
        y, p = np.asarray(y), np.asarray(p)
        if y.shape[0] != p.shape[0] or (w is not None and np.size(w) != y.shape[0]):
            raise ValueError(f"`{name}`[{r}]: y_true, y_pred and weights must have one row per example.")
        out.append((y, p, w))
    return out


def _replicates(runs, metric, n_boot, seed):
    """Full-set scores (R, K) and bootstrap replicates (n_boot, R, K) of K candidates sharing each repeat's
    validation set; repeat r's indices are `stratified_indices(strata_of(y_true_r), n_boot, rng)`, drawn in
    repeat order from one rng = np.random.default_rng(seed) (PCG64), the same rows for every candidate."""
    f = metric_fn(metric) if isinstance(metric, str) else metric
    if f is None:
        raise ValueError(f"`metric`: no NumPy version of {metric!r}; known: {sorted(METRICS)}.")
    if int(n_boot) < 2:
        raise ValueError(f"`n_boot` must be >= 2, got {n_boot!r}.")
    rng = np.random.default_rng(seed)
    full, boot = [], []
    for cands in runs:
        y = cands[0][0]
        index = stratified_indices(strata_of(y, metric if isinstance(metric, str) else ""), n_boot, rng)
        full.append([f(y, p, w) for _, p, w in cands])
        boot.append(np.stack([f(y, p, w, index=index) for _, p, w in cands], axis=1))
    return np.asarray(full, dtype="float64"), np.stack(boot, axis=1)


def _interval(full, boot, n_boot):
    """Interval from per-repeat values (R,) and replicates (n_boot, R): se_sample = std(ddof=1) over b of
    mean_r boot[b, r]; se_seed = stats.mean_se(full)[1]."""
    mean, se_seed = stats.mean_se(full)
    se_sample = float(np.std(boot.mean(1), ddof=1))
    return Interval(diff=mean, se_sample=se_sample, se_seed=se_seed,
                    se=math.sqrt(se_sample ** 2 + (se_seed or 0.0) ** 2), repeats=full.size, n_boot=int(n_boot))


def paired_bootstrap(a, b, metric, *, n_boot=1000, seed=0):
    """The paired difference metric(a) - metric(b) over repeats, with the validation sample's own error.

    a, b: lists, one per repeat, of (y_true, y_pred, weights) (weights None = ones); repeat r of a and of b
    share seed/fold r and so y_true (checked), while repeats may have different validation sets (folds).
    metric: an objective name (see `metric_fn`) or a function of that signature (then class-stratified).
    diff = mean_r d_r with d_r = metric(a_r) - metric(b_r) on the full sets; se_seed = stats.mean_se(d)[1];
    replicate b (of n_boot) resamples each repeat's examples class-stratified with the SAME indices for a
    and b (repeats held fixed), d*_b = mean_r (metric(a_r[idx_rb]) - metric(b_r[idx_rb])), and
    se_sample = std(d*, ddof=1). Draws: see `_replicates` and `stratified_indices`.
    """
    ra, rb = _repeats(a, "a"), _repeats(b, "b")
    if len(ra) != len(rb):
        raise ValueError(f"`b` has {len(rb)} repeats but `a` has {len(ra)}; repeat r of both must pair up.")
    for r, (x, y) in enumerate(zip(ra, rb)):
        if x[0].shape != y[0].shape or not np.array_equal(x[0], y[0]):
            raise ValueError(f"`b`[{r}]: its y_true differs from `a`[{r}]'s; paired repeats share a validation set.")
    full, boot = _replicates([[x, y] for x, y in zip(ra, rb)], metric, n_boot, seed)
    return _interval(full[:, 0] - full[:, 1], boot[..., 0] - boot[..., 1], n_boot)


def single_bootstrap(a, metric, *, n_boot=1000, seed=0):
    """One candidate alone: `diff` holds mean_r metric(a_r), with se_sample, se_seed and se as in
    `paired_bootstrap` (the same draws for the same seed and validation sets)."""
    full, boot = _replicates([[x] for x in _repeats(a, "a")], metric, n_boot, seed)
    return _interval(full[:, 0], boot[..., 0], n_boot)
