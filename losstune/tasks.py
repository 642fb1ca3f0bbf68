"""Tasks: what a search's labels and model outputs look like, and what follows from that.

One object per task owns its label checks (and the class counts it measures from the labels), its check of
the untrained model's outputs, its default objective and metrics, the axis of its loss picture, and the loss
families that fit it. Everything else asks the task instead of testing its name.

| task | y | model output |
|---|---|---|
| binary | 0/1, shape (n,) or (n, 1) | one probability (or logit with `from_logits=True`) |
| multiclass | integer class ids (n,) or one-hot (n, C) | C probabilities (or logits) |
| multilabel | 0/1 matrix (n, C) | C independent probabilities (or logits) |
| pairs | 1 = similar, 0 = dissimilar, (n,) | a distance >= 0, (n, 1) |
| embedding | integer class ids (n,) | an embedding (n, d) |
| regression | real targets | real predictions |
"""

from __future__ import annotations

import abc

import keras
import numpy as np

from losstune import calibration, families, objectives, sampling


def _integral(y):
    return bool(np.all(np.equal(np.mod(y, 1), 0)))


def _flat(y):
    return y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)


def _per_sample(loss, y_true, y_pred):
    values = loss.call(np.asarray(y_true, "float32"), np.asarray(y_pred, "float32"))
    return np.asarray(values, dtype="float64").reshape(len(y_pred), -1).mean(axis=1)


class Task(abc.ABC):
    """A task: subclasses fill in the label convention and what depends on it."""

    name = ""
    objective = None  # (metric name, direction): the objective is "val_" + name
    calibration = None  # the name of the calibration metric its `metrics` report (probabilistic outputs)
    priors = ("validation",)  # the class priors its scores can estimate performance under (sampling.PRIORS)
    class_weighted = False  # whether the class-weight modifier applies (classification tasks)
    picture_axis = ""  # what the loss picture's x axis shows

    # --- labels and outputs, checked before anything trains ----------------------------------------------
    def check_labels(self, y, num_outputs, name="y"):
        """Check labels against the task and the model's output width; return the class counts (or None)."""
        y = np.asarray(y)
        if not np.issubdtype(y.dtype, np.number) and y.dtype != bool:
            raise ValueError(f"`{name}` must hold numbers, got dtype {y.dtype}.")
        y = y.astype("float64")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"`{name}` holds NaN or infinite labels.")
        return self._check_labels(y, num_outputs, name)

    @abc.abstractmethod
    def _check_labels(self, y, num_outputs, name):
        """The task's own label checks on float64 `y`; returns the class counts (or None)."""

    def check_outputs(self, outputs, from_logits, last_activation=None):
        """Catch mix-ups (probabilities vs logits, negative distances) from the untrained model's outputs."""
        out = np.asarray(outputs, dtype="float64")
        if not np.all(np.isfinite(out)):
            raise ValueError("the model's outputs on the first examples are NaN or infinite; check the model.")
        self._check_outputs(out, from_logits, last_activation)

    def _check_outputs(self, out, from_logits, last_activation):
        pass

    def strata(self, y):
        """What stratified k-fold balances across folds (class ids), or None for plain k-fold."""
        return None

    # --- metrics -------------------------------------------------------------------------------------------
    def metrics(self, *, from_logits=False, num_outputs=1, class_weights=None):
        """Fresh instances of the metrics losstune adds for this task (one set per compiled model).
        `class_weights`: per-class importance weights of the objective metric under the balanced prior (tasks
        whose `priors` allow it), else None."""
        return []

    def check_prior(self, prior, name="prior"):
        """`prior` if the task's scores can estimate performance under it, else a ValueError naming `name`."""
        if prior not in self.priors:
            raise ValueError(f"`{name}` must be one of {list(self.priors)} for task {self.name!r}, got {prior!r}"
                             + (" (a balanced class prior applies to binary and multiclass labels)"
                                if prior in sampling.PRIORS else "") + ".")
        return prior

    def prior_weights(self, counts, prior):
        """Per-class weights w_c = n / (C_present n_c) from the validation class counts under "balanced" (each
        present class then weighs as much in the metric), None under "validation"."""
        return sampling.balanced_class_weights(counts) if prior == "balanced" else None

    # --- the loss picture ----------------------------------------------------------------------------------
    def loss_curves(self, loss, num_outputs, from_logits):
        """(x, [curve, ...]) of `loss` along this task's picture axis, or None where it has no 1-D picture."""
        return None

    def families(self):
        """Names of the loss families that fit this task."""
        return families.available(self.name)

    def __repr__(self):
        return f"Task({self.name!r})"


class _Classification(Task):
    class_weighted = True
    picture_axis = "predicted probability of the true class (0.01 to 0.99)"
    activation = ""

    def _check_outputs(self, out, from_logits, last_activation):
        if from_logits and last_activation in ("softmax", "sigmoid"):
            raise ValueError(
                f"`from_logits=True` but the model's last layer applies {last_activation!r}, so it outputs "
                f"probabilities; pass from_logits=False or remove the activation."
            )
        if not from_logits and (out.min() < 0 or out.max() > 1):
            raise ValueError(
                f"`from_logits=False` expects probabilities in [0, 1], but the model outputs values in "
                f"[{out.min():.3g}, {out.max():.3g}]: it outputs logits. Pass from_logits=True, or end the "
                f"model with a {self.activation} activation."
            )


class _FlagLabels:
    """0/1 flags of shape (n,) or (n, 1) against a model with one output (binary and pairs)."""

    what = ""
    output = ""

    def _check_flags(self, y, num_outputs, name):
        if not _flat(y):
            raise ValueError(
                f"`{name}` has shape {y.shape}; task {self.name!r} takes {self.what} of shape (n,) or (n, 1)"
                + (" (one-hot labels with 2 columns? use y.argmax(1))" if y.ndim == 2 and y.shape[1] == 2 else "")
                + "."
            )
        values = np.unique(y)
        if not set(values.tolist()) <= {0.0, 1.0}:
            raise ValueError(
                f"`{name}`: task {self.name!r} takes {self.what}, got values {values[:10].tolist()}"
                + (f" ({len(values)} distinct: a multiclass problem? use a multiclass space)" if len(values) > 2 else "")
                + "."
            )
        if num_outputs != 1:
            raise ValueError(
                f"the model outputs {num_outputs} values per example; task {self.name!r} needs 1 ({self.output})."
            )
        return float(y.size) - float(y.sum()), float(y.sum())

    def strata(self, y):
        return np.asarray(y).reshape(-1)


class Binary(_FlagLabels, _Classification):
    name = "binary"
    calibration = "ece"
    priors = ("validation", "balanced")
    objective = ("pr_auc", "max")
    what = "0/1 labels"
    output = "one probability or logit"
    activation = "sigmoid"

    def _check_labels(self, y, num_outputs, name):
        return list(self._check_flags(y, num_outputs, name))  # [n_negative, n_positive]

    def metrics(self, *, from_logits=False, num_outputs=1, class_weights=None):
        return [objectives.PRAUC(from_logits=from_logits, class_weights=class_weights),
                calibration.ExpectedCalibrationError(from_logits=from_logits)]

    def loss_curves(self, loss, num_outputs, from_logits):
        return _sigmoid_curves(loss, num_outputs, from_logits)


class Multilabel(_Classification):
    name = "multilabel"
    calibration = "ece"
    objective = ("pr_auc", "max")
    activation = "sigmoid"

    def _check_labels(self, y, num_outputs, name):
        if y.ndim != 2 or y.shape[1] != num_outputs:
            raise ValueError(
                f"`{name}` has shape {y.shape}; a multilabel task takes a 0/1 matrix (n, {num_outputs}) "
                f"matching the model's {num_outputs} outputs."
            )
        if not np.all((y == 0) | (y == 1)):
            raise ValueError(f"`{name}`: a multilabel task takes 0/1 labels, got other values.")
        return y.sum(0).tolist()  # positives per label

    def metrics(self, *, from_logits=False, num_outputs=1, class_weights=None):
        return [keras.metrics.AUC(curve="PR", multi_label=True, num_labels=num_outputs, from_logits=from_logits,
                                  name="pr_auc"),
                calibration.ExpectedCalibrationError(from_logits=from_logits, multi_label=True)]

    def loss_curves(self, loss, num_outputs, from_logits):
        return _sigmoid_curves(loss, num_outputs, from_logits)


def _sigmoid_curves(loss, num_outputs, from_logits):
    x = np.linspace(0.01, 0.99, 99).astype("float32")
    p = np.repeat(x[:, None], max(int(num_outputs), 1), axis=1)
    y_pred = np.log(p / (1 - p)) if from_logits else p
    return x, [_per_sample(loss, np.ones_like(p), y_pred)]


class Multiclass(_Classification):
    name = "multiclass"
    calibration = "ece"
    priors = ("validation", "balanced")
    objective = ("macro_f1", "max")
    activation = "softmax"

    def _check_labels(self, y, num_outputs, name):
        if num_outputs < 2:
            raise ValueError(
                f"the model outputs {num_outputs} value per example; a multiclass task needs one per class (>= 2)."
            )
        if _flat(y):
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

    def strata(self, y):
        y = np.asarray(y)
        return y.argmax(-1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(-1)

    def _check_outputs(self, out, from_logits, last_activation):
        super()._check_outputs(out, from_logits, last_activation)
        if not from_logits and not np.allclose(out.sum(-1), 1.0, atol=1e-3):
            raise ValueError(
                "`from_logits=False` expects each row of a multiclass model's output to sum to 1 (softmax), "
                "but it does not: pass from_logits=True for logits, or end the model with softmax."
            )

    def metrics(self, *, from_logits=False, num_outputs=1, class_weights=None):
        return [objectives.MacroF1(class_weights=class_weights), objectives.BalancedAccuracy(max(num_outputs, 2)),
                calibration.ExpectedCalibrationError(from_logits=from_logits)]

    def loss_curves(self, loss, num_outputs, from_logits):
        x = np.linspace(0.01, 0.99, 99).astype("float32")
        c = max(int(num_outputs), 2)
        p = np.stack([x] + [(1 - x) / (c - 1)] * (c - 1), axis=1)
        y_pred = (np.log(p) if from_logits else p).astype("float32")
        return x, [_per_sample(loss, np.zeros((len(x),), "float32"), y_pred)]


class Pairs(_FlagLabels, Task):
    name = "pairs"
    objective = ("pair_auc", "max")
    what = "similar (1) / dissimilar (0) flags"
    output = "a distance"
    picture_axis = "distance (0 to 3); blue: similar pairs (y=1), red: dissimilar pairs (y=0)"

    def _check_labels(self, y, num_outputs, name):
        self._check_flags(y, num_outputs, name)
        return None

    def _check_outputs(self, out, from_logits, last_activation):
        if out.min() < 0:
            raise ValueError(f"a pairs model must output a distance >= 0, got values down to {out.min():.3g}.")

    def metrics(self, *, from_logits=False, num_outputs=1, class_weights=None):
        return [objectives.PairAUC()]

    def loss_curves(self, loss, num_outputs, from_logits):
        x = np.linspace(0.0, 3.0, 100).astype("float32")
        return x, [_per_sample(loss, np.ones_like(x), x[:, None]), _per_sample(loss, np.zeros_like(x), x[:, None])]


class Embedding(Task):
    name = "embedding"

    def strata(self, y):
        return np.asarray(y).reshape(-1)

    def _check_labels(self, y, num_outputs, name):
        if not _flat(y) or not _integral(y):
            raise ValueError(f"`{name}`: an embedding task takes integer class ids of shape (n,), got shape {y.shape}.")
        return None


class Regression(Task):
    name = "regression"
    objective = ("mae", "min")
    picture_axis = "residual y_pred - y_true (-3 to 3)"

    def _check_labels(self, y, num_outputs, name):
        width = 1 if _flat(y) else y.shape[-1]
        if width != num_outputs:
            raise ValueError(f"`{name}` has {width} target(s) per example but the model outputs {num_outputs}.")
        return None

    def metrics(self, *, from_logits=False, num_outputs=1, class_weights=None):
        return [keras.metrics.MeanAbsoluteError(name="mae")]

    def loss_curves(self, loss, num_outputs, from_logits):
        x = np.linspace(-3.0, 3.0, 121).astype("float32")
        return x, [_per_sample(loss, np.zeros((len(x), 1), "float32"), x[:, None])]


TASKS = {task.name: task for task in (Binary(), Multiclass(), Multilabel(), Pairs(), Embedding(), Regression())}


def get(name) -> Task:
    """The task called `name`; a ValueError lists the tasks otherwise."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise ValueError(f"`task` must be one of {list(TASKS)}, got {name!r}.")
    return TASKS[name]
