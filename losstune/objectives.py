"""Search objectives: metrics that do not depend on the loss (each task names its default, see tasks.py).

val_loss of a focal trial and of a cross-entropy trial are different quantities, so losstune ranks trials
by a metric of the predictions alone (macro-F1, PR-AUC, pair ROC-AUC, MAE).
"""

from __future__ import annotations

import keras
import keras_tuner
from keras import ops

# Directions of common Keras metric names, for objectives given as a plain string.
_MAX_WORDS = ("auc", "accuracy", "acc", "f1", "precision", "recall", "iou", "r2", "score")
_MIN_WORDS = ("loss", "error", "mae", "mse", "rmse", "msle", "crossentropy", "hinge", "mape", "ece")
_LOSS_NAMES = ("loss", "val_loss")


@keras.saving.register_keras_serializable(package="losstune")
class MacroF1(keras.metrics.F1Score):
    """Macro-averaged F1 of the arg-max class; takes integer class ids or one-hot labels."""

    def __init__(self, name="macro_f1", dtype=None):
        super().__init__(average="macro", threshold=None, name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.convert_to_tensor(y_true)
        num_classes = y_pred.shape[-1]
        if len(y_true.shape) < len(y_pred.shape) or y_true.shape[-1] != num_classes:
            ids = ops.reshape(ops.cast(y_true, "int32"), (-1,))
            y_true = ops.one_hot(ids, num_classes)
        super().update_state(ops.cast(y_true, y_pred.dtype), y_pred, sample_weight)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


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
