"""The class-weight modifier: per-class loss weights from class counts and one tunable `power`."""

from __future__ import annotations

import math

import numpy as np


def class_weights_from_counts(class_counts, power, task="multiclass"):
    """w_c proportional to n_c ** -power, normalised so the mean weight of a training example is 1.

    power = 0 gives every class weight 1 (unweighted); power = 1 gives inverse-frequency weights.
    For "multiclass" and "binary", `class_counts[c]` is the number of training examples of class c and
    sum_c n_c w_c = N. For "multilabel", it is the number of positives of label c; the weights
    apply to positive elements and average 1 over all positive elements. A class that never occurs is
    treated as occurring once, so its weight stays finite.

    Args:
        class_counts: sequence of counts >= 0, one per class (binary: [n_negative, n_positive]).
        power: float in [0, 2].
        task: "binary", "multiclass" or "multilabel".

    Returns:
        A list of floats, one per class.
    """
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not (0.0 <= power <= 2.0):
        raise ValueError(f"class_weights: `power` must be a number in [0.0, 2.0], got {power!r}.")
    counts = np.asarray(class_counts, dtype="float64")
    if counts.ndim != 1 or counts.size == 0 or not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(
            f"class_weights: `class_counts` must be a non-empty list of counts >= 0, got {class_counts!r}."
        )
    if task not in ("binary", "multiclass", "multilabel"):
        raise ValueError(
            f"class_weights: `task` must be one of ['binary', 'multiclass', 'multilabel'], got {task!r}."
        )
    safe = np.maximum(counts, 1.0)
    raw = safe ** (-float(power))
    weights = raw * safe.sum() / float((safe * raw).sum())
    return [float(w) for w in weights if math.isfinite(w)]
