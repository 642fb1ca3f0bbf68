"""Search objectives: metrics that do not depend on the loss (each task names its default, see tasks.py).

val_loss of a focal trial and of a cross-entropy trial are different quantities, so losstune ranks trials
by a metric of the predictions alone (macro-F1, PR-AUC, balanced accuracy, pair ROC-AUC, MAE). MacroF1 and
PRAUC take optional per-class `class_weights` to score under another class prior (the "balanced" prior:
w_c = n / (C_present n_c) from the validation labels, see `losstune.sampling.prior_weights`).
"""

from __future__ import annotations

import math

import keras
import keras_tuner
import numpy as np
from keras import ops

from losstune.calibration import _first_max
from losstune.checks import positive_int

# Directions of common Keras metric names, for objectives given as a plain string.
_MAX_WORDS = ("auc", "accuracy", "acc", "f1", "precision", "recall", "iou", "r2", "score")
_MIN_WORDS = ("loss", "error", "mae", "mse", "rmse", "msle", "crossentropy", "hinge", "mape", "ece")
_LOSS_NAMES = ("loss", "val_loss")


def _class_weights(value, size=None, what="one per class"):
    """`value` as a list of floats (or None); a ValueError naming `class_weights` unless it is a list, tuple
    or 1-D array of finite numbers >= 0 with at least one > 0 (and `size` entries when `size` is given)."""
    if value is None:
        return None
    allowed = (f"a list of {size if size else 'C'} finite floats >= 0 ({what}) with at least one > 0, "
               f"or None")
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, float, np.integer, np.floating))
        and math.isfinite(v) and v >= 0 for v in value)
    if not ok or not any(v > 0 for v in value) or (size is not None and len(value) != size):
        raise ValueError(f"`class_weights` must be {allowed}; got {value!r}.")
    return [float(v) for v in value]


def _example_weights(class_weights, y_onehot, sample_weight, dtype):
    """(n,) weights: class_weights[y] of each example's true class (one-hot rows), times its sample weight."""
    weight = ops.sum(y_onehot * ops.convert_to_tensor(class_weights, dtype=dtype), axis=-1)
    if sample_weight is not None:
        weight = weight * ops.reshape(ops.cast(ops.convert_to_tensor(sample_weight), dtype), (-1,))
    return weight


def _check_width(metric, width, expected, what):
    if width is None or width != expected:
        raise ValueError(
            f"{type(metric).__name__} {metric.name!r}: `y_pred` has {width} columns on its last axis but "
            f"{what} expects {expected}; they must match."
        )


@keras.saving.register_keras_serializable(package="losstune")
class MacroF1(keras.metrics.F1Score):
    """Macro-averaged F1 of the arg-max class; takes integer class ids or one-hot labels.

    Formula: F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c) per class c = 0..C-1 (C = y_pred.shape[-1]), from
    weighted counts of the arg-max prediction; macro F1 = mean_c F1_c, over all C classes (a class absent
    from labels and predictions counts as 0, as sklearn's `zero_division=0`). Keras's F1Score divides with
    an epsilon of 1e-7 and marks every tied maximum as predicted. NumPy form: `losstune.sampling.macro_f1`.

    Args:
        name: the metric's name, default "macro_f1".
        class_weights: None (default: the validation set's own class frequencies) or a list of C finite
            floats >= 0, at least one > 0, one per class. Each example's sample weight is multiplied by
            class_weights[y] (y its true class) before the counts. With the "balanced" prior weights
            w_c = n / (C_present * n_c) (`losstune.sampling.prior_weights`, n_c the validation examples of
            class c) the score estimates macro F1 under equal class frequencies: precision, and so F1,
            depends on the class frequencies, recall does not. This is importance weighting for a shift of
            the class prior (label shift), as in Saerens, Latinne and Decaestecker, "Adjusting the Outputs
            of a Classifier to New a Priori Probabilities", Neural Computation 14(1), 2002.
        dtype: the metric's dtype.

    Raises:
        ValueError: bad `class_weights` (when built); `y_pred`'s number of classes differs from
            len(class_weights) (at the first update).
    """

    def __init__(self, name="macro_f1", class_weights=None, dtype=None):
        class_weights = _class_weights(class_weights)
        super().__init__(average="macro", threshold=None, name=name, dtype=dtype)
        self.class_weights = class_weights

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.convert_to_tensor(y_true)
        num_classes = y_pred.shape[-1]
        if len(y_true.shape) < len(y_pred.shape) or y_true.shape[-1] != num_classes:
            ids = ops.reshape(ops.cast(y_true, "int32"), (-1,))
            y_true = ops.one_hot(ids, num_classes)
        y_true = ops.cast(y_true, y_pred.dtype)
        if self.class_weights is not None:
            _check_width(self, num_classes, len(self.class_weights), "`class_weights` (one weight per class)")
            y_true = ops.reshape(y_true, (-1, num_classes))
            y_pred = ops.reshape(y_pred, (-1, num_classes))
            sample_weight = _example_weights(self.class_weights, y_true, sample_weight, y_pred.dtype)
        super().update_state(y_true, y_pred, sample_weight)

    def get_config(self):
        return {"name": self.name, "class_weights": self.class_weights, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="losstune")
class PRAUC(keras.metrics.AUC):
    """Area under the precision-recall curve of one binary output (probability or logit), optionally under a
    class prior given by per-class weights.

    Formula: Keras's AUC(curve="PR"): precision TP / (TP + FP) and recall TP / (TP + FN) at
    `num_thresholds` thresholds evenly spaced on [0, 1], the area summed with Davis and Goadrich's
    interpolation between neighbouring thresholds (Davis and Goadrich, "The Relationship Between
    Precision-Recall and ROC Curves", ICML 2006). Unweighted it is exactly
    `keras.metrics.AUC(curve="PR", from_logits=from_logits, name="pr_auc")`. NumPy form (average precision
    over the distinct scores, so it differs by the threshold grid): `losstune.sampling.pr_auc`.

    Args:
        name: the metric's name, default "pr_auc".
        from_logits: whether `y_pred` holds logits (a sigmoid is applied); default False.
        class_weights: None (default: the validation set's own class frequencies) or [w_0, w_1], finite
            floats >= 0 with at least one > 0: the sample weight of an example with label y (0/1, shape
            (n,) or (n, 1)) is multiplied by w_y. Precision depends on the ratio of positives to
            negatives, so with the "balanced" prior weights w_c = n / (2 n_c)
            (`losstune.sampling.prior_weights`) the score estimates PR-AUC at equal class frequencies:
            importance weighting for a shift of the class prior (Saerens et al., Neural Computation, 2002).
        num_thresholds: number of thresholds, an integer >= 2 (default 200, Keras's; more thresholds
            approximate the exact average precision more closely).
        dtype: the metric's dtype.

    Raises:
        ValueError: bad `class_weights` or `num_thresholds` (when built); with `class_weights`, a `y_pred`
            with more than one column (at the first update).
    """

    def __init__(self, name="pr_auc", from_logits=False, class_weights=None, num_thresholds=200, dtype=None):
        class_weights = _class_weights(class_weights, size=2, what="[w_0, w_1] for labels 0 and 1")
        num_thresholds = positive_int("num_thresholds", num_thresholds, minimum=2)
        if not isinstance(from_logits, (bool, np.bool_)):
            raise ValueError(f"`from_logits` must be True or False, got {from_logits!r}.")
        super().__init__(num_thresholds=num_thresholds, curve="PR", name=name, dtype=dtype,
                         from_logits=bool(from_logits))
        self.class_weights = class_weights

    def update_state(self, y_true, y_pred, sample_weight=None):
        if self.class_weights is None:
            return super().update_state(y_true, y_pred, sample_weight)
        y_pred = ops.convert_to_tensor(y_pred)
        if len(y_pred.shape) > 1:
            _check_width(self, y_pred.shape[-1], 1, "a binary output with `class_weights` [w_0, w_1]")
        y = ops.reshape(ops.cast(ops.convert_to_tensor(y_true), self.dtype), (-1, 1))
        weight = _example_weights(self.class_weights, ops.concatenate([1.0 - y, y], axis=-1), sample_weight,
                                  self.dtype)
        y_pred = ops.reshape(y_pred, (-1, 1))
        return super().update_state(y, y_pred, ops.reshape(weight, (-1, 1)))

    def get_config(self):
        return {"name": self.name, "from_logits": self._from_logits, "class_weights": self.class_weights,
                "num_thresholds": self.num_thresholds, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="losstune")
class BalancedAccuracy(keras.metrics.Metric):
    """Balanced accuracy: the mean, over the classes present in y_true, of the recall of the arg-max class.

    Formula: BA = (1 / |K|) sum_{c in K} correct_c / true_c, where true_c is the (sample-weighted) number
    of examples of class c, correct_c the weight of those predicted c (the first maximum of y_pred, as
    argmax), and K = {c : true_c > 0}; a class absent from y_true is left out of the mean (sklearn's
    `balanced_accuracy_score`, which warns about it, does the same). 0 before any update. NumPy form:
    `losstune.sampling.balanced_accuracy`.

    Recall does not depend on the class frequencies, so balanced accuracy already estimates the accuracy
    under equal class frequencies: it takes no `class_weights` (the "balanced" prior would not change it).

    Args:
        num_classes: the number of classes C of y_pred (n, C), an integer >= 2.
        name: the metric's name, default "balanced_accuracy".
        dtype: the metric's dtype.

    Labels: integer class ids (n,) / (n, 1), or one-hot (n, C).

    State: per class, the weighted count of true examples and of correct ones (two (C,) variables), so
    updates accumulate over batches and the metric maps over a population's members.

    Raises:
        ValueError: `num_classes` is not an integer >= 2 (when built); y_pred's last axis is not
            `num_classes` (at the first update).

    Reference:
        Brodersen, Ong, Stephan and Buhmann, "The Balanced Accuracy and Its Posterior Distribution",
        ICPR 2010.
    """

    def __init__(self, num_classes, name="balanced_accuracy", dtype=None):
        num_classes = positive_int("num_classes", num_classes, minimum=2)
        super().__init__(name=name, dtype=dtype)
        self._direction = "up"
        self.num_classes = num_classes
        self.true_counts = self.add_variable((num_classes,), initializer="zeros", name="true_counts")
        self.correct_counts = self.add_variable((num_classes,), initializer="zeros", name="correct_counts")

    def update_state(self, y_true, y_pred, sample_weight=None):
        c = self.num_classes
        y_pred = ops.cast(ops.convert_to_tensor(y_pred), self.dtype)
        y_true = ops.convert_to_tensor(y_true)
        _check_width(self, y_pred.shape[-1] if len(y_pred.shape) else None, c, "`num_classes`")
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == c:  # one-hot
            labels = _first_max(ops.cast(ops.reshape(y_true, (-1, c)), self.dtype))
        else:
            labels = ops.reshape(y_true, (-1,))
        true = ops.one_hot(ops.cast(labels, "int32"), c, dtype=self.dtype)
        predicted = ops.one_hot(ops.cast(_first_max(ops.reshape(y_pred, (-1, c))), "int32"), c, dtype=self.dtype)
        if sample_weight is not None:
            weight = ops.reshape(ops.cast(ops.convert_to_tensor(sample_weight), self.dtype), (-1, 1))
            true = true * weight
        self.true_counts.assign_add(ops.sum(true, axis=0))
        self.correct_counts.assign_add(ops.sum(true * predicted, axis=0))

    def result(self):
        present = ops.cast(ops.greater(self.true_counts, 0.0), self.dtype)
        recall = ops.divide_no_nan(self.correct_counts, self.true_counts)
        return ops.divide_no_nan(ops.sum(recall * present), ops.sum(present))

    def get_config(self):
        return {"num_classes": self.num_classes, "name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="losstune")
class PairAUC(keras.metrics.AUC):
    """Verification ROC-AUC for pairs: y = 1 similar; the prediction is a distance (smaller = more similar).

    The distance d >= 0 is mapped to the similarity exp(-d) in (0, 1], which preserves the ranking.
    """

    def __init__(self, name="pair_auc", num_thresholds=1000, dtype=None):
        super().__init__(name=name, num_thresholds=num_thresholds, curve="ROC", dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        similarity = ops.exp(-ops.maximum(ops.cast(y_pred, "float32"), 0.0))
        y_true = ops.reshape(ops.cast(y_true, "float32"), ops.shape(similarity))
        super().update_state(y_true, similarity, sample_weight)

    def get_config(self):
        return {"name": self.name, "num_thresholds": self.num_thresholds, "dtype": self.dtype}


def direction_of(name):
    """"max" or "min" for a metric name made of common words, else None."""
    base = name[4:] if name.startswith("val_") else name
    words = base.lower().split("_")
    if any(w in _MIN_WORDS for w in words) or base.lower() in _MIN_WORDS:
        return "min"
    if any(w in _MAX_WORDS for w in words):
        return "max"
    return None


def resolve(objective, task, metric_names, loss_is_tuned):
    """The keras_tuner.Objective to rank trials by.

    Args:
        objective: None (the task's default), a metric name such as "val_macro_f1", or a
            `keras_tuner.Objective`.
        task: the search's `losstune.tasks.Task` (its `objective` is the default).
        metric_names: names of the metrics the compiled model reports (without "val_").
        loss_is_tuned: whether trials differ in their loss; then the loss itself is no objective.
    """
    if objective is None:
        if task.objective is None:
            raise ValueError(
                f"`objective`: task {task.name!r} has no default objective; pass one, e.g. "
                f"keras_tuner.Objective('val_<metric>', 'max'), naming one of the metrics {sorted(metric_names)}."
            )
        name, direction = task.objective
        return keras_tuner.Objective(f"val_{name}", direction)
    if isinstance(objective, keras_tuner.Objective):
        name, direction = objective.name, objective.direction
    elif isinstance(objective, str):
        name, direction = objective, direction_of(objective)
    else:
        raise ValueError(
            f"`objective` must be None, a metric name (str) or a keras_tuner.Objective, got {objective!r}."
        )
    if name in _LOSS_NAMES and loss_is_tuned:
        raise ValueError(
            f"`objective`={name!r} depends on the loss: a focal and a cross-entropy trial report different "
            f"quantities as their loss, so ranking trials by it rewards the loss with the smallest scale, not "
            f"the best model. Use a metric of the predictions instead, e.g. "
            f"'val_{(task.objective or ('<metric>',))[0]}'."
        )
    known = set(metric_names) | {"loss"}
    base = name[4:] if name.startswith("val_") else name
    if base not in known:
        raise ValueError(
            f"`objective`={name!r} is not a metric of this search; available: "
            f"{sorted('val_' + m for m in known)} (add your own with `metrics=`)."
        )
    if direction not in ("min", "max"):
        raise ValueError(
            f"`objective`={name!r}: its direction is unknown; pass keras_tuner.Objective({name!r}, 'max') "
            f"or keras_tuner.Objective({name!r}, 'min')."
        )
    return keras_tuner.Objective(name, direction)
