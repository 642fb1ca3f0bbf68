"""Shared machinery of every losstune loss: label handling, logits, class weights, validation, config.

Every loss follows Keras's own pattern (`keras/src/losses/losses.py`): a pure function written in
`keras.ops` that returns one loss value per sample, plus a thin `keras.losses.Loss` subclass
(`LosstuneLoss`) that stores the hyperparameters and serialises them with `get_config`.

Tasks and label conventions (see README):

* ``"binary"``     -- y in {0, 1}, shape (n,) or (n, 1); y_pred one probability or logit per sample.
* ``"multilabel"`` -- y a 0/1 matrix (n, C); y_pred C independent probabilities or logits.
* ``"multiclass"`` -- y integer ids (n,) / (n, 1) or one-hot (n, C); y_pred C probabilities or logits.
* ``"pairs"``      -- y 1 = similar, 0 = dissimilar; y_pred a distance >= 0, shape (n,) or (n, 1).
* ``"embedding"``  -- y integer class ids (n,); y_pred an embedding (n, d).
* ``"regression"`` -- real targets and predictions.
"""

from __future__ import annotations

import math
from numbers import Real

import keras
from keras import ops

CLASSIFICATION_TASKS = ("binary", "multiclass", "multilabel")
TASKS = ("binary", "multiclass", "multilabel", "pairs", "embedding", "regression")


# --------------------------------------------------------------------------------------------------
# Validation at the boundary: every message names the family, the argument, the value and what is allowed.
# --------------------------------------------------------------------------------------------------
def check_number(family, name, value, low=None, high=None, low_inclusive=True, high_inclusive=True):
    """Return `value` as a float, or raise ValueError naming family, argument, value and allowed range."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{family}: `{name}` must be a finite number, got {value!r}.")
    value = float(value)
    too_low = low is not None and (value < low or (value == low and not low_inclusive))
    too_high = high is not None and (value > high or (value == high and not high_inclusive))
    if too_low or too_high:
        lo = "-inf" if low is None else repr(low)
        hi = "inf" if high is None else repr(high)
        interval = ("[" if low_inclusive and low is not None else "(") + f"{lo}, {hi}" + (
            "]" if high_inclusive and high is not None else ")"
        )
        raise ValueError(f"{family}: `{name}` must be in {interval}, got {value!r}.")
    return value


def check_choice(family, name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{family}: `{name}` must be one of {list(allowed)}, got {value!r}.")
    return value


def check_task(family, task, allowed):
    return check_choice(family, "task", task, allowed)


def check_class_weights(family, class_weights, task):
    """Class weights are a list of positive floats (or None); returned as a tuple of floats."""
    if class_weights is None:
        return None
    if task not in CLASSIFICATION_TASKS:
        raise ValueError(
            f"{family}: `class_weights` apply to the tasks {list(CLASSIFICATION_TASKS)}, "
            f"got task {task!r}."
        )
    try:
        weights = [float(w) for w in class_weights]
    except (TypeError, ValueError):
        raise ValueError(f"{family}: `class_weights` must be a list of numbers, got {class_weights!r}.")
    if not weights or any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(
            f"{family}: `class_weights` must be a non-empty list of finite numbers >= 0, "
            f"got {class_weights!r}."
        )
    if task == "binary" and len(weights) != 2:
        raise ValueError(
            f"{family}: `class_weights` for task 'binary' holds 2 values (class 0, class 1), "
            f"got {len(weights)}."
        )
    return tuple(weights)


# --------------------------------------------------------------------------------------------------
# Labels and logits. Everything is computed from logits so it is stable on every backend: the
# probability inputs are turned into logits once, after clipping to [eps, 1 - eps].
# --------------------------------------------------------------------------------------------------
def binary_logits(y_pred, from_logits):
    """Logits of independent sigmoid outputs (binary and multilabel)."""
    y_pred = ops.convert_to_tensor(y_pred)
    if from_logits:
        return y_pred
    eps = keras.config.epsilon()
    p = ops.clip(y_pred, eps, 1.0 - eps)
    return ops.log(p) - ops.log1p(-p)


def class_log_probs(y_pred, from_logits):
    """log softmax probabilities of a C-way classifier, shape (n, C)."""
    y_pred = ops.convert_to_tensor(y_pred)
    if from_logits:
        return ops.log_softmax(y_pred, axis=-1)
    eps = keras.config.epsilon()
    p = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
    return ops.log(ops.clip(p, eps, 1.0))


def multiclass_targets(y_true, y_pred):
    """One-hot (or soft) targets of shape (n, C) from integer ids or one-hot labels.

    `Loss.__call__` casts labels to the loss dtype, so integer ids arrive as floats: they are cast back.
    """
    y_true = ops.convert_to_tensor(y_true)
    num_classes = y_pred.shape[-1]
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == num_classes and num_classes != 1:
        return ops.cast(y_true, y_pred.dtype)
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    ids = ops.cast(ops.round(ops.cast(y_true, "float32")), "int32")
    return ops.one_hot(ids, num_classes, dtype=y_pred.dtype)


def sparse_ids(y_true, y_pred):
    """Integer class ids (n,) when `y_true` holds ids for the C-way `y_pred`; None for one-hot labels."""
    y_true = ops.convert_to_tensor(y_true)
    num_classes = y_pred.shape[-1]
    if len(y_true.shape) == len(y_pred.shape) and (y_true.shape[-1] != 1 or num_classes == 1):
        return None
    if len(y_true.shape) == len(y_pred.shape):
        y_true = ops.squeeze(y_true, axis=-1)
    return ops.cast(ops.round(ops.cast(y_true, "float32")), "int32")


def binary_targets(y_true, y_pred):
    """Labels shaped like y_pred, for elementwise sigmoid losses (binary, multilabel, pairs)."""
    y_true = ops.cast(ops.convert_to_tensor(y_true), y_pred.dtype)
    if len(y_true.shape) == len(y_pred.shape) - 1:
        y_true = ops.expand_dims(y_true, -1)
    elif len(y_true.shape) == len(y_pred.shape) + 1 and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, -1)
    return y_true


def smooth_labels(targets, label_smoothing, task):
    """Label smoothing as Keras does it: towards uniform over C classes, or towards 0.5 for sigmoids."""
    if not label_smoothing:
        return targets
    if task == "multiclass":
        num_classes = ops.cast(ops.shape(targets)[-1], targets.dtype)
        return targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return targets * (1.0 - label_smoothing) + 0.5 * label_smoothing


def element_class_weights(targets, class_weights, task):
    """Weight of each loss element from the per-class weights.

    * multiclass: a sample of class c weighs w_c (soft targets mix the weights), shape (n, 1).
    * binary: a sample of class 1 weighs w_1, of class 0 weighs w_0, shape like `targets`.
    * multilabel: the positive element of label c weighs w_c, negatives weigh 1, shape like `targets`.
    """
    w = ops.convert_to_tensor(class_weights, dtype=targets.dtype)
    if task == "multiclass":
        return ops.matmul(targets, w[:, None])  # one pass, no (n, C) temporary
    if task == "binary":
        return targets * w[1] + (1.0 - targets) * w[0]
    return targets * w + (1.0 - targets)


def reduce_elements(element_loss, targets, class_weights, task):
    """Per-sample loss from per-element losses: class-weight the elements, then sum (multiclass)
    or average (sigmoid outputs, as Keras's binary cross-entropy does) over the last axis."""
    if class_weights is not None:
        element_loss = element_loss * element_class_weights(targets, class_weights, task)
    if task == "multiclass":
        return ops.sum(element_loss, axis=-1)
    return ops.mean(element_loss, axis=-1)


def weight_samples(sample_loss, targets, class_weights, task):
    """Class-weight a per-sample loss of a multiclass loss whose value is not a sum over classes."""
    if class_weights is None:
        return sample_loss
    return sample_loss * ops.squeeze(element_class_weights(targets, class_weights, task), -1)


# --------------------------------------------------------------------------------------------------
# The Loss base class.
# --------------------------------------------------------------------------------------------------
class LosstuneLoss(keras.losses.Loss):
    """Thin `keras.losses.Loss` around a pure loss function.

    Subclasses set `fn` (the pure function, `fn(y_true, y_pred, **kwargs)` -> per-sample loss) and call
    `super().__init__(name=..., reduction=..., dtype=..., **kwargs)` with their validated
    hyperparameters as keyword arguments. `get_config` returns exactly the constructor arguments.
    """

    fn = None

    def __init__(self, name, reduction="sum_over_batch_size", dtype=None, **fn_kwargs):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._fn_kwargs = fn_kwargs

    def call(self, y_true, y_pred):
        return type(self).fn(y_true, y_pred, **self._fn_kwargs)

    def get_config(self):
        config = super().get_config()
        for key, value in self._fn_kwargs.items():
            config[key] = list(value) if isinstance(value, tuple) else value
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._fn_kwargs.items())
        return f"{type(self).__name__}({args})"
