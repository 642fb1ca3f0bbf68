"""Checking a search's data before any training: shapes, values, labels against the task, class counts."""

from __future__ import annotations

import numpy as np


def _leaves(x):
    if isinstance(x, dict):
        return list(x.values())
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def is_dataset(x):
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover
        return False
    return isinstance(x, tf.data.Dataset)


def as_inputs(x, name):
    """numpy features: an array, or a list/tuple/dict of arrays (several model inputs, pairs)."""
    if isinstance(x, dict):
        return {k: as_inputs(v, f"{name}[{k!r}]") for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(as_inputs(v, f"{name}[{i}]") for i, v in enumerate(x))
    try:
        arr = np.asarray(x)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"`{name}` must be a numpy array, got {type(x).__name__}: {err}") from None
    if arr.dtype == object:
        raise ValueError(f"`{name}` must be a numeric array, got an array of Python objects.")
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (shape {arr.shape}); a search needs at least one example.")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"`{name}` holds {bad} NaN or infinite values; clean or impute them first.")
    return arr


def describe_shapes(x):
    """'shape (8, 63)' of an array, or the shapes of a list/tuple/dict of arrays."""
    if isinstance(x, dict):
        return "shapes {" + ", ".join(f"{k!r}: {tuple(np.shape(v))}" for k, v in x.items()) + "}"
    if isinstance(x, (list, tuple)):
        return "shapes [" + ", ".join(str(tuple(np.shape(v))) for v in x) + "]"
    return f"shape {tuple(np.shape(x))}"


def num_examples(x, name):
    lengths = {leaf.shape[0] for leaf in _leaves(x)}
    if len(lengths) != 1:
        raise ValueError(f"`{name}`: its arrays have different numbers of examples {sorted(lengths)}.")
    return lengths.pop()


def check_pair(x, y, x_name, y_name):
    x = as_inputs(x, x_name)
    y = as_inputs(y, y_name)
    n_x, n_y = num_examples(x, x_name), num_examples(y, y_name)
    if n_x != n_y:
        raise ValueError(f"`{x_name}` has {n_x} examples but `{y_name}` has {n_y}; they must match.")
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y)):
        raise ValueError(f"`{y_name}` holds NaN or infinite labels.")
    return x, y


def labels_from_dataset(dataset, name="x"):
    """All labels of a `tf.data.Dataset` of (features, labels) batches, as one numpy array."""
    parts = []
    for element in dataset.as_numpy_iterator():
        if not isinstance(element, tuple) or len(element) < 2:
            raise ValueError(f"`{name}`: a tf.data.Dataset must yield (features, labels) tuples.")
        parts.append(np.asarray(element[1]))
    if not parts:
        raise ValueError(f"`{name}`: the tf.data.Dataset is empty.")
    return np.concatenate(parts, axis=0)


def _integral(y):
    return np.all(np.equal(np.mod(y, 1), 0))


def check_labels(y, task, num_outputs, name="y"):
    """Check labels against the task and the model's output width; return the class counts (or None).

    Binary: [n_negative, n_positive]; multiclass: examples per class; multilabel: positives per label.
    """
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.number) and y.dtype != bool:
        raise ValueError(f"`{name}` must hold numbers, got dtype {y.dtype}.")
    y = y.astype("float64")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"`{name}` holds NaN or infinite labels.")
    flat1 = y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)
    if task in ("binary", "pairs"):
        what = "similar (1) / dissimilar (0) flags" if task == "pairs" else "0/1 labels"
        if not flat1:
            raise ValueError(
                f"`{name}` has shape {y.shape}; task {task!r} takes {what} of shape (n,) or (n, 1)"
                + (" (one-hot labels with 2 columns? use y.argmax(1))" if y.ndim == 2 and y.shape[1] == 2 else "")
                + "."
            )
        values = np.unique(y)
        if not set(values.tolist()) <= {0.0, 1.0}:
            raise ValueError(
                f"`{name}`: task {task!r} takes {what}, got values {values[:10].tolist()}"
                + (f" ({len(values)} distinct: a multiclass problem? use a multiclass space)" if len(values) > 2 else "")
                + "."
            )
        if num_outputs != 1:
            raise ValueError(
                f"the model outputs {num_outputs} values per example; task {task!r} needs 1 "
                f"({'a distance' if task == 'pairs' else 'one probability or logit'})."
            )
        ones = float(y.sum())
        return None if task == "pairs" else [float(y.size) - ones, ones]
    if task == "multiclass":
        if num_outputs < 2:
            raise ValueError(
                f"the model outputs {num_outputs} value per example; a multiclass task needs one per class (>= 2)."
            )
        if flat1:
            y = y.reshape(-1)
            if not _integral(y) or y.min() < 0 or y.max() >= num_outputs:
                raise ValueError(
                    f"`{name}` must hold integer class ids in [0, {num_outputs}) for a model with "
                    f"{num_outputs} outputs, got values in [{y.min():g}, {y.max():g}]"
                    + ("" if _integral(y) else " (not integers)") + "."
                )
            return np.bincount(y.astype(int), minlength=num_outputs).astype(float).tolist()
        if y.ndim == 2 and y.shape[1] == num_outputs:
            if not (np.all((y == 0) | (y == 1)) and np.all(y.sum(1) == 1)):
                raise ValueError(
                    f"`{name}` of shape {y.shape} must be one-hot (each row a single 1) or integer class ids (n,)."
                )
            return y.sum(0).tolist()
        raise ValueError(
            f"`{name}` has shape {y.shape}; for a model with {num_outputs} outputs a multiclass task takes "
            f"class ids (n,) or one-hot labels (n, {num_outputs})."
        )
    if task == "multilabel":
        if y.ndim != 2 or y.shape[1] != num_outputs:
            raise ValueError(
                f"`{name}` has shape {y.shape}; a multilabel task takes a 0/1 matrix (n, {num_outputs}) "
                f"matching the model's {num_outputs} outputs."
            )
        if not np.all((y == 0) | (y == 1)):
            raise ValueError(f"`{name}`: a multilabel task takes 0/1 labels, got other values.")
        return y.sum(0).tolist()
    if task == "embedding":
        if not flat1 or not _integral(y):
            raise ValueError(f"`{name}`: an embedding task takes integer class ids of shape (n,), got shape {y.shape}.")
        return None
    if task == "regression":
        width = 1 if flat1 else y.shape[-1]
        if width != num_outputs:
            raise ValueError(
                f"`{name}` has {width} target(s) per example but the model outputs {num_outputs}."
            )
        return None
    raise ValueError(f"unknown task {task!r}.")


def check_outputs(outputs, task, from_logits, last_activation=None):
    """Catch probabilities-vs-logits mix-ups from the untrained model's outputs on a few examples."""
    out = np.asarray(outputs, dtype="float64")
    if not np.all(np.isfinite(out)):
        raise ValueError("the model's outputs on the first examples are NaN or infinite; check the model.")
    if task in ("binary", "multilabel", "multiclass"):
        if from_logits and last_activation in ("softmax", "sigmoid"):
            raise ValueError(
                f"`from_logits=True` but the model's last layer applies {last_activation!r}, so it outputs "
                f"probabilities; pass from_logits=False or remove the activation."
            )
        if not from_logits:
            if out.min() < 0 or out.max() > 1:
                raise ValueError(
                    f"`from_logits=False` expects probabilities in [0, 1], but the model outputs values in "
                    f"[{out.min():.3g}, {out.max():.3g}]: it outputs logits. Pass from_logits=True, or end the "
                    f"model with a {'softmax' if task == 'multiclass' else 'sigmoid'} activation."
                )
            if task == "multiclass" and not np.allclose(out.sum(-1), 1.0, atol=1e-3):
                raise ValueError(
                    "`from_logits=False` expects each row of a multiclass model's output to sum to 1 (softmax), "
                    "but it does not: pass from_logits=True for logits, or end the model with softmax."
                )
    if task == "pairs" and out.min() < 0:
        raise ValueError(
            f"a pairs model must output a distance >= 0, got values down to {out.min():.3g}."
        )
