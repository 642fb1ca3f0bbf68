"""Calibration of a trial's predictions: the expected calibration error (ECE) as a Keras metric, and a NumPy
reference of it.

Two trials with the same macro-F1 can differ in how far their confidences can be trusted; a loss search
(focal vs. cross-entropy, label smoothing) changes exactly that. The metric is written with `keras.ops` only and
keeps a fixed-shape state, so a population maps it over its members (`losstune.population`) like any other.

Binning rule (both implementations): `num_bins` equal-width bins on [0, 1], left-open and right-closed as in
Guo et al.'s reference code (github.com/gpleiss/temperature_scaling: `conf > lower and conf <= upper`):
bin b holds the confidences in (b/B, (b+1)/B]; the first bin also holds 0, so every confidence in [0, 1] has a
bin and a confidence of exactly 1.0 is in the last one. The Keras metric computes the bin as
`clip(ceil(conf * B) - 1, 0, B - 1)`; a confidence within float rounding of an inner edge may land in either
neighbour.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from losstune.checks import positive_int


def _check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


@keras.saving.register_keras_serializable(package="losstune")
class ExpectedCalibrationError(keras.metrics.Metric):
    """Expected calibration error of the top-label confidence (lower is better, 0 = calibrated).

    Formula:

    ```
    ECE = sum_b (n_b / n) * |acc(b) - conf(b)|
    ```

    over `num_bins` equal-width confidence bins on [0, 1] (see the module for the edge rule), where n_b is
    the (weighted) number of predictions whose confidence falls in bin b, n the total, acc(b) the fraction
    of them that are correct and conf(b) their mean confidence. Empty bins add nothing; the value lies in
    [0, 1] and is 0 before any update.

    What a "prediction" is follows the model's output:

    * C > 1 outputs (multiclass): the confidence is the top-class probability, correct when the arg-max
      equals the label (integer ids (n,) / (n, 1), or one-hot (n, C));
    * one output (binary) or `multi_label=True` (C independent sigmoids): the top-label form of each
      output p, confidence max(p, 1 - p), correct when (p >= 0.5) == y; a multilabel example counts as C
      predictions, pooled over the labels.

    `sample_weight` weights every prediction; (n,) or (n, 1) weights are broadcast over a multilabel row,
    (n, C) weights weight each label.

    Args:
        num_bins: number of equal-width bins, an integer >= 1 (default 15, as in Guo et al.). Few bins
            hide miscalibration inside a bin; many bins on a small validation set make the estimate noisy
            (biased upwards).
        from_logits: whether `y_pred` holds logits: softmax is applied for C > 1 outputs, sigmoid for one
            output or `multi_label=True`. Default False (probabilities).
        multi_label: whether the C outputs are independent sigmoids (multilabel task). Default False.
        name: the metric's name, default "ece" (logged as "ece" / "val_ece").
        dtype: the metric's dtype (default: Keras's float type).

    Raises:
        ValueError: `num_bins` is not an integer >= 1, or a flag is not a bool (when the metric is built,
            before anything trains).

    State: per bin, the weighted count, sum of confidences and sum of correctness (three (num_bins,)
    variables), so updates accumulate over batches and the metric maps over a population's members.

    Reference:
        Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural Networks", ICML 2017
        (arXiv:1706.04599), section 2 / equation (3).
    """

    def __init__(self, num_bins=15, from_logits=False, multi_label=False, name="ece", dtype=None):
        num_bins = positive_int("num_bins", num_bins)
        from_logits = _check_flag("from_logits", from_logits)
        multi_label = _check_flag("multi_label", multi_label)
        super().__init__(name=name, dtype=dtype)
        self.num_bins = num_bins
        self.from_logits = from_logits
        self.multi_label = multi_label
        self.bin_counts = self.add_variable((num_bins,), initializer="zeros", name="bin_counts")
        self.bin_confidence = self.add_variable((num_bins,), initializer="zeros", name="bin_confidence")
        self.bin_correct = self.add_variable((num_bins,), initializer="zeros", name="bin_correct")

    def update_state(self, y_true, y_pred, sample_weight=None):
        confidence, correct, weight = _top_label(y_true, y_pred, sample_weight, self.from_logits,
                                                 self.multi_label, self.dtype)
        bins = ops.ceil(ops.clip(confidence, 0.0, 1.0) * self.num_bins) - 1.0
        bins = ops.cast(ops.clip(bins, 0.0, self.num_bins - 1.0), "int32")
        in_bin = ops.one_hot(bins, self.num_bins, dtype=self.dtype) * ops.expand_dims(weight, -1)  # (m, B)
        self.bin_counts.assign_add(ops.sum(in_bin, axis=0))
        self.bin_confidence.assign_add(ops.sum(in_bin * ops.expand_dims(confidence, -1), axis=0))
        self.bin_correct.assign_add(ops.sum(in_bin * ops.expand_dims(correct, -1), axis=0))

    def result(self):
        # (n_b / n) * |acc(b) - conf(b)| = |correct_b - confidence_b| / n, with sums over the bin.
        gaps = ops.sum(ops.abs(self.bin_correct - self.bin_confidence))
        return ops.divide_no_nan(gaps, ops.sum(self.bin_counts))

    def get_config(self):
        return {"num_bins": self.num_bins, "from_logits": self.from_logits, "multi_label": self.multi_label,
                "name": self.name, "dtype": self.dtype}


def _top_label(y_true, y_pred, sample_weight, from_logits, multi_label, dtype):
    """(confidence, correct, weight): flat vectors with one entry per prediction (row, or row x label)."""
    y_pred = ops.cast(ops.convert_to_tensor(y_pred), dtype)
    y_true = ops.convert_to_tensor(y_true)
    if len(y_pred.shape) < 2:
        y_pred = ops.expand_dims(y_pred, -1)
    width = y_pred.shape[-1]
    if width is None:
        raise ValueError("ExpectedCalibrationError needs the last axis of `y_pred` to have a known size.")
    if multi_label or width == 1:
        p = ops.reshape(ops.sigmoid(y_pred) if from_logits else y_pred, (-1, width))
        y = ops.reshape(ops.cast(y_true, dtype), ops.shape(p))
        confidence = ops.maximum(p, 1.0 - p)
        predicted = ops.cast(ops.greater_equal(p, 0.5), dtype)
        correct = ops.cast(ops.equal(predicted, y), dtype)
    else:
        p = ops.reshape(ops.softmax(y_pred, axis=-1) if from_logits else y_pred, (-1, width))
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == width:  # one-hot
            labels = _first_max(ops.cast(ops.reshape(y_true, (-1, width)), dtype))
        else:
            labels = ops.reshape(y_true, (-1,))
        predicted = _first_max(p)
        same = ops.equal(ops.cast(predicted, "int32"), ops.cast(labels, "int32"))
        confidence = ops.max(p, axis=-1, keepdims=True)
        correct = ops.expand_dims(ops.cast(same, dtype), -1)
    if sample_weight is None:
        weight = ops.ones_like(confidence)
    else:
        weight = ops.cast(ops.convert_to_tensor(sample_weight), dtype)
        if not (len(weight.shape) == 2 and weight.shape[-1] == confidence.shape[-1]):
            weight = ops.reshape(weight, (-1, 1))
        weight = weight * ops.ones_like(confidence)
    return ops.reshape(confidence, (-1,)), ops.reshape(correct, (-1,)), ops.reshape(weight, (-1,))


def _first_max(x):
    """`argmax(x, -1)` (the first maximum). Keras's TensorFlow `argmax` of floats bitcasts (its -0.0 fix),
    which `tf.vectorized_map` cannot vectorize; the argmax of the int32 "is a maximum" flags can."""
    is_max = ops.cast(ops.equal(x, ops.max(x, axis=-1, keepdims=True)), "int32")
    return ops.argmax(is_max, axis=-1)


def expected_calibration_error(y_true, probs, num_bins=15, sample_weight=None, multi_label=False):
    """NumPy reference of `ExpectedCalibrationError` on probabilities (not logits); returns a float.

    Args:
        y_true: integer class ids (n,) / (n, 1) or one-hot (n, C) for C > 1 outputs; 0/1 labels (n,) /
            (n, 1) for one output; a 0/1 matrix (n, C) with `multi_label=True`.
        probs: probabilities, (n, C) softmax rows, (n,) / (n, 1) for binary, (n, C) sigmoids for multilabel.
        num_bins: an integer >= 1.
        sample_weight: None, (n,) / (n, 1) weights per example, or (n, C) per label (multilabel).
        multi_label: whether the C outputs are independent probabilities.

    The bins are written out edge by edge here ((lower, upper], the first one also holding 0), not by the
    metric's arithmetic; see the module docstring and Guo et al. (2017), equation (3).
    """
    num_bins = positive_int("num_bins", num_bins)
    multi_label = _check_flag("multi_label", multi_label)
    probs = np.asarray(probs, dtype="float64")
    probs = probs[:, None] if probs.ndim == 1 else probs.reshape(-1, probs.shape[-1])
    y_true = np.asarray(y_true, dtype="float64")
    n, width = probs.shape
    if multi_label or width == 1:
        y = y_true.reshape(n, width)
        confidence = np.maximum(probs, 1.0 - probs)
        correct = ((probs >= 0.5) == (y == 1)).astype("float64")
    else:
        labels = y_true.argmax(-1) if y_true.ndim == 2 and y_true.shape[1] == width else y_true.reshape(n)
        confidence = probs.max(-1, keepdims=True)
        correct = (probs.argmax(-1) == labels).astype("float64")[:, None]
    weight = np.ones(confidence.shape) if sample_weight is None else np.asarray(sample_weight, "float64")
    if weight.shape != confidence.shape:
        weight = np.broadcast_to(weight.reshape(n, 1), confidence.shape)
    confidence, correct, weight = np.clip(confidence, 0.0, 1.0).ravel(), correct.ravel(), weight.ravel()
    total = weight.sum()
    if total == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    ece = 0.0
    for b in range(num_bins):
        in_bin = (confidence > edges[b]) & (confidence <= edges[b + 1])
        if b == 0:
            in_bin |= confidence <= edges[0]
        n_b = weight[in_bin].sum()
        if n_b > 0:
            acc = np.sum(weight[in_bin] * correct[in_bin]) / n_b
            conf = np.sum(weight[in_bin] * confidence[in_bin]) / n_b
            ece += n_b / total * abs(acc - conf)
    return float(ece)
