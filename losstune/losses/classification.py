"""Classification losses: cross-entropy, focal, weighted BCE, class-balanced, LDAM, logit adjustment, poly-1,
asymmetric, hinge.

Every loss is computed from logits (probability inputs are turned into logits once, after clipping), so it
is finite with finite gradients for saturated predictions on every Keras backend.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from losstune.families import Hyperparameter, LossFamily, register
from losstune.losses import base

_SIGMOID_TASKS = ("binary", "multilabel")


def _focusing(log_p, gamma):
    """(1 - p)^gamma from log p: 1 - p = -expm1(log p) is exact even where p rounds to 1 in float32, and
    the floor keeps the gradient of the power finite for gamma < 1 where p saturates (the clamped entries
    get a zero gradient from `maximum`); Keras's `(1 - p) ** gamma` is NaN there."""
    return ops.power(ops.maximum(-ops.expm1(log_p), 1e-30), gamma)


def _scores(y_pred, from_logits):
    """Logits of a C-way softmax: as given, or the log of the (clipped) probabilities."""
    if from_logits:
        return ops.convert_to_tensor(y_pred)
    return base.class_log_probs(y_pred, False)


def _sigmoid_terms(y_true, y_pred, from_logits):
    z = base.binary_logits(y_pred, from_logits)
    t = base.binary_targets(y_true, z)
    return t, z, ops.log_sigmoid(z), ops.log_sigmoid(-z)


def _init(self, family, task, tasks, from_logits, class_weights, reduction, name, dtype, **params):
    task = base.check_task(family, task, tasks)
    class_weights = base.check_class_weights(family, class_weights, task)
    base.LosstuneLoss.__init__(self, name=name, reduction=reduction, dtype=dtype, task=task,
                               from_logits=bool(from_logits), class_weights=class_weights, **params)


# ---------------------------------------------------------------------------------------------------
# Cross-entropy
# ---------------------------------------------------------------------------------------------------
def crossentropy(y_true, y_pred, label_smoothing=0.0, task="multiclass", from_logits=False, class_weights=None):
    """Cross-entropy with label smoothing, for sparse or one-hot multiclass labels and sigmoid outputs.

    multiclass: -sum_c t_c log softmax(z)_c with t = (1 - ls) onehot(y) + ls / C.
    binary / multilabel: mean_c -[t log sigmoid(z) + (1 - t) log sigmoid(-z)], t = (1 - ls) y + ls / 2.
    Computed with Keras's own cross-entropy ops (fused kernels where the backend has them).
    """
    if task == "multiclass":
        ids = base.sparse_ids(y_true, y_pred)
        if ids is not None and not label_smoothing:
            loss = ops.sparse_categorical_crossentropy(ids, y_pred, from_logits=from_logits)
            if class_weights is None:
                return loss
            return loss * ops.take(ops.convert_to_tensor(class_weights, dtype=loss.dtype), ids)
        t = base.smooth_labels(base.multiclass_targets(y_true, y_pred), label_smoothing, task)
        loss = ops.categorical_crossentropy(t, y_pred, from_logits=from_logits)
        return base.weight_samples(loss, t, class_weights, task)
    t, _, log_p, log_q = _sigmoid_terms(y_true, y_pred, from_logits)
    raw = t
    t = base.smooth_labels(t, label_smoothing, task)
    return base.reduce_elements(-(t * log_p + (1.0 - t) * log_q), raw, class_weights, task)


@keras.saving.register_keras_serializable(package="losstune")
class CrossEntropy(base.LosstuneLoss):
    """Cross-entropy with label smoothing (Szegedy et al. 2016, "Rethinking the Inception Architecture").

    Formula: see `crossentropy`. Matches `keras.losses.CategoricalCrossentropy` / `BinaryCrossentropy`, and
    adds label smoothing for integer labels (which `SparseCategoricalCrossentropy` lacks).

    Args:
        label_smoothing: float in [0, 1); 0 = none. Paper: 0.1. Search: [0, 0.3].
        task: "binary", "multiclass" or "multilabel".
        from_logits: whether `y_pred` holds logits.
        class_weights: optional per-class weights (see `losstune.class_weights_from_counts`).
    """

    fn = staticmethod(crossentropy)

    def __init__(self, label_smoothing=0.0, task="multiclass", from_logits=False, class_weights=None,
                 reduction="sum_over_batch_size", name="crossentropy", dtype=None):
        ls = base.check_number("crossentropy", "label_smoothing", label_smoothing, 0.0, 1.0, high_inclusive=False)
        _init(self, "crossentropy", task, base.CLASSIFICATION_TASKS, from_logits, class_weights, reduction, name,
              dtype, label_smoothing=ls)


# ---------------------------------------------------------------------------------------------------
# Focal
# ---------------------------------------------------------------------------------------------------
def focal_crossentropy(y_true, y_pred, gamma=2.0, alpha=None, task="multiclass", from_logits=False,
                       class_weights=None):
    """Focal loss, with the modulating factor computed in log space.

    multiclass: -sum_c a t_c (1 - p_c)^gamma log p_c (a = alpha, or 1 when alpha is None).
    binary / multilabel: mean_c -[a_1 t (1 - p)^gamma log p + a_0 (1 - t) p^gamma log(1 - p)] with
    a_1 = alpha, a_0 = 1 - alpha (both 1 when alpha is None).
    """
    if task == "multiclass":
        t = base.multiclass_targets(y_true, y_pred)
        log_p = base.class_log_probs(y_pred, from_logits)
        el = -t * _focusing(log_p, gamma) * log_p
        if alpha is not None:
            el = alpha * el
        return base.reduce_elements(el, t, class_weights, task)
    t, _, log_p, log_q = _sigmoid_terms(y_true, y_pred, from_logits)
    pos = t * ops.exp(gamma * log_q) * log_p
    neg = (1.0 - t) * ops.exp(gamma * log_p) * log_q
    if alpha is not None:
        pos, neg = alpha * pos, (1.0 - alpha) * neg
    return base.reduce_elements(-(pos + neg), t, class_weights, task)


@keras.saving.register_keras_serializable(package="losstune")
class FocalCrossentropy(base.LosstuneLoss):
    """Focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection").

    Formula: see `focal_crossentropy`. Unlike Keras's focal losses, it is finite with finite gradients for
    every gamma >= 0 at saturated predictions (the factor (1 - p_t)^gamma comes from log-sigmoid /
    expm1 of the log-probability, floored before the power), alpha is honoured for binary labels, and integer
    class ids work. gamma = 0 with alpha None is cross-entropy.

    Args:
        gamma: float >= 0. Paper: 2. Search: [0, 5].
        alpha: None (no balancing) or float in [0, 1]: weight of positives (negatives: 1 - alpha) for
            sigmoid outputs; a scale of the loss for multiclass. Paper: 0.25. Search: [0.1, 0.9].
    """

    fn = staticmethod(focal_crossentropy)

    def __init__(self, gamma=2.0, alpha=None, task="multiclass", from_logits=False, class_weights=None,
                 reduction="sum_over_batch_size", name="focal", dtype=None):
        gamma = base.check_number("focal", "gamma", gamma, 0.0)
        if alpha is not None:
            alpha = base.check_number("focal", "alpha", alpha, 0.0, 1.0)
        _init(self, "focal", task, base.CLASSIFICATION_TASKS, from_logits, class_weights, reduction, name, dtype,
              gamma=gamma, alpha=alpha)


# ---------------------------------------------------------------------------------------------------
# Weighted BCE
# ---------------------------------------------------------------------------------------------------
def weighted_binary_crossentropy(y_true, y_pred, pos_weight=1.0, task="binary", from_logits=False,
                                 class_weights=None):
    """mean_c -[pos_weight t log p + (1 - t) log(1 - p)]."""
    t, _, log_p, log_q = _sigmoid_terms(y_true, y_pred, from_logits)
    return base.reduce_elements(-(pos_weight * t * log_p + (1.0 - t) * log_q), t, class_weights, task)


@keras.saving.register_keras_serializable(package="losstune")
class WeightedBinaryCrossentropy(base.LosstuneLoss):
    """Binary cross-entropy with a weight on the positive term (as `tf.nn.weighted_cross_entropy_with_logits`).

    Args:
        pos_weight: float > 0; 1 = plain BCE; n_neg / n_pos balances the classes. Search: [1, n_neg/n_pos] log.
    """

    fn = staticmethod(weighted_binary_crossentropy)

    def __init__(self, pos_weight=1.0, task="binary", from_logits=False, class_weights=None,
                 reduction="sum_over_batch_size", name="weighted_bce", dtype=None):
        pw = base.check_number("weighted_bce", "pos_weight", pos_weight, 0.0, low_inclusive=False)
        _init(self, "weighted_bce", task, _SIGMOID_TASKS, from_logits, class_weights, reduction, name, dtype,
              pos_weight=pw)


# ---------------------------------------------------------------------------------------------------
# Class-balanced (effective number of samples)
# ---------------------------------------------------------------------------------------------------
def effective_number_weights(class_counts, beta):
    """(1 - beta) / (1 - beta^n_c), normalised to sum to the number of classes (Cui et al. 2019)."""
    raw = []
    for n in class_counts:
        n = max(float(n), 1.0)
        raw.append(1.0 if beta == 0 else (1.0 - beta) / (1.0 - beta ** n))
    total = sum(raw)
    return [w * len(raw) / total for w in raw]


@keras.saving.register_keras_serializable(package="losstune")
class ClassBalancedLoss(base.LosstuneLoss):
    """Class-balanced loss (Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of Samples").

    loss = w_y * base_loss, w_c = (1 - beta) / (1 - beta^n_c) normalised to sum to C; the base loss is
    cross-entropy or focal (with `gamma`). beta = 0 gives the unweighted base loss.

    Args:
        class_counts: training examples per class (binary: [n_negative, n_positive]).
        beta: float in [0, 1). Paper: {0.9, 0.99, 0.999, 0.9999}. Search: [0.9, 0.9999] reverse-log.
        base_loss: "crossentropy" or "focal".
        gamma: focal gamma >= 0 (used when base_loss is "focal").
    """

    fn = None

    def __init__(self, class_counts, beta=0.999, base_loss="crossentropy", gamma=2.0, task="multiclass",
                 from_logits=False, class_weights=None, reduction="sum_over_batch_size", name="class_balanced",
                 dtype=None):
        beta = base.check_number("class_balanced", "beta", beta, 0.0, 1.0, high_inclusive=False)
        base.check_choice("class_balanced", "base_loss", base_loss, ("crossentropy", "focal"))
        gamma = base.check_number("class_balanced", "gamma", gamma, 0.0)
        counts = [base.check_number("class_balanced", "class_counts", c, 0.0) for c in class_counts]
        task = base.check_task("class_balanced", task, ("binary", "multiclass"))
        if task == "binary" and len(counts) != 2:
            raise ValueError(f"class_balanced: `class_counts` for task 'binary' holds 2 values, got {len(counts)}.")
        _init(self, "class_balanced", task, ("binary", "multiclass"), from_logits, class_weights, reduction, name,
              dtype, class_counts=tuple(counts), beta=beta, base_loss=base_loss, gamma=gamma)
        weights = np.asarray(effective_number_weights(counts, beta))
        # Computed once here, not per call: converting a Python list per eager call is slow for many classes.
        self._weights = weights if self._fn_kwargs["class_weights"] is None else (
            weights * np.asarray(self._fn_kwargs["class_weights"]))

    def call(self, y_true, y_pred):
        kw = self._fn_kwargs
        if kw["base_loss"] == "focal":
            return focal_crossentropy(y_true, y_pred, gamma=kw["gamma"], task=kw["task"],
                                      from_logits=kw["from_logits"], class_weights=self._weights)
        return crossentropy(y_true, y_pred, task=kw["task"], from_logits=kw["from_logits"],
                            class_weights=self._weights)


# ---------------------------------------------------------------------------------------------------
# LDAM
# ---------------------------------------------------------------------------------------------------
def ldam_margins(class_counts, max_margin):
    """m_c = max_margin * n_c^(-1/4) / max_j n_j^(-1/4) (Cao et al. 2019)."""
    raw = [max(float(n), 1.0) ** -0.25 for n in class_counts]
    top = max(raw)
    return [max_margin * r / top for r in raw]


def ldam_loss(y_true, y_pred, margins, scale=30.0, task="multiclass", from_logits=False, class_weights=None):
    """CE(softmax(scale * (z - m_y onehot(y)))) with per-class margins m."""
    t = base.multiclass_targets(y_true, y_pred)
    z = _scores(y_pred, from_logits)
    logits = scale * (z - t * ops.convert_to_tensor(margins, dtype=z.dtype))
    return base.weight_samples(ops.categorical_crossentropy(t, logits, from_logits=True), t, class_weights, task)


@keras.saving.register_keras_serializable(package="losstune")
class LDAMLoss(base.LosstuneLoss):
    """Label-distribution-aware margin loss (Cao et al. 2019, "Learning Imbalanced Datasets with
    Label-Distribution-Aware Margin Loss").

    loss = CE(softmax(s (z - m_y e_y))), m_c = max_margin n_c^(-1/4) / max_j n_j^(-1/4); with
    from_logits=False the log-probabilities serve as the logits z.

    Args:
        class_counts: training examples per class.
        max_margin: float > 0, the largest class margin. Paper: 0.5. Search: [0.1, 1].
        scale: float > 0. Paper: 30. Search: {10, 30, 64}.
    """

    fn = None

    def __init__(self, class_counts, max_margin=0.5, scale=30.0, task="multiclass", from_logits=False,
                 class_weights=None, reduction="sum_over_batch_size", name="ldam", dtype=None):
        max_margin = base.check_number("ldam", "max_margin", max_margin, 0.0, low_inclusive=False)
        scale = base.check_number("ldam", "scale", scale, 0.0, low_inclusive=False)
        counts = tuple(base.check_number("ldam", "class_counts", c, 0.0) for c in class_counts)
        _init(self, "ldam", task, ("multiclass",), from_logits, class_weights, reduction, name, dtype,
              class_counts=counts, max_margin=max_margin, scale=scale)
        self._margins = np.asarray(ldam_margins(counts, max_margin))

    def call(self, y_true, y_pred):
        kw = self._fn_kwargs
        return ldam_loss(y_true, y_pred, self._margins, kw["scale"], kw["task"], kw["from_logits"],
                         kw["class_weights"])


# ---------------------------------------------------------------------------------------------------
# Logit adjustment
# ---------------------------------------------------------------------------------------------------
def logit_adjusted_loss(y_true, y_pred, log_prior, tau=1.0, task="multiclass", from_logits=False,
                        class_weights=None):
    """CE(softmax(z + tau log pi))."""
    t = base.multiclass_targets(y_true, y_pred)
    z = _scores(y_pred, from_logits)
    adjusted = z + tau * ops.convert_to_tensor(log_prior, dtype=z.dtype)
    return base.weight_samples(ops.categorical_crossentropy(t, adjusted, from_logits=True), t, class_weights, task)


@keras.saving.register_keras_serializable(package="losstune")
class LogitAdjustedLoss(base.LosstuneLoss):
    """Logit-adjusted loss (Menon et al. 2021, "Long-tail learning via logit adjustment").

    loss = CE(softmax(z + tau log pi)), pi the training class prior. tau = 0 is cross-entropy.

    Args:
        class_counts: training examples per class (the prior pi).
        tau: float >= 0. Paper: 1. Search: [0, 2].
    """

    fn = None

    def __init__(self, class_counts, tau=1.0, task="multiclass", from_logits=False, class_weights=None,
                 reduction="sum_over_batch_size", name="logit_adjusted", dtype=None):
        tau = base.check_number("logit_adjusted", "tau", tau, 0.0)
        counts = tuple(base.check_number("logit_adjusted", "class_counts", c, 0.0) for c in class_counts)
        _init(self, "logit_adjusted", task, ("multiclass",), from_logits, class_weights, reduction, name, dtype,
              class_counts=counts, tau=tau)
        prior = np.maximum(np.asarray(counts, dtype="float64"), 1.0)
        self._log_prior = np.log(prior / prior.sum())

    def call(self, y_true, y_pred):
        kw = self._fn_kwargs
        return logit_adjusted_loss(y_true, y_pred, self._log_prior, kw["tau"], kw["task"], kw["from_logits"],
                                   kw["class_weights"])


# ---------------------------------------------------------------------------------------------------
# Poly-1
# ---------------------------------------------------------------------------------------------------
def poly1_loss(y_true, y_pred, epsilon=1.0, task="multiclass", from_logits=False, class_weights=None):
    """CE + epsilon (1 - p_t), p_t the probability of the target (expected under soft targets)."""
    if task == "multiclass":
        t = base.multiclass_targets(y_true, y_pred)
        z = _scores(y_pred, from_logits)
        p_t = ops.sum(t * ops.softmax(z, axis=-1), axis=-1)
        loss = ops.categorical_crossentropy(t, z, from_logits=True) + epsilon * (1.0 - p_t)
        return base.weight_samples(loss, t, class_weights, task)
    t, _, log_p, log_q = _sigmoid_terms(y_true, y_pred, from_logits)
    p_t = t * ops.exp(log_p) + (1.0 - t) * ops.exp(log_q)
    el = -(t * log_p + (1.0 - t) * log_q) + epsilon * (1.0 - p_t)
    return base.reduce_elements(el, t, class_weights, task)


@keras.saving.register_keras_serializable(package="losstune")
class Poly1Loss(base.LosstuneLoss):
    """Poly-1 loss (Leng et al. 2022, "PolyLoss: A Polynomial Expansion Perspective of Classification Loss
    Functions"): CE + epsilon (1 - p_t). epsilon = 0 is cross-entropy.

    Args:
        epsilon: float >= -1. Paper: task dependent (1 for ImageNet). Search: [-1, 3].
    """

    fn = staticmethod(poly1_loss)

    def __init__(self, epsilon=1.0, task="multiclass", from_logits=False, class_weights=None,
                 reduction="sum_over_batch_size", name="poly1", dtype=None):
        epsilon = base.check_number("poly1", "epsilon", epsilon, -1.0)
        _init(self, "poly1", task, base.CLASSIFICATION_TASKS, from_logits, class_weights, reduction, name, dtype,
              epsilon=epsilon)


# ---------------------------------------------------------------------------------------------------
# Asymmetric
# ---------------------------------------------------------------------------------------------------
def asymmetric_loss(y_true, y_pred, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, task="multilabel",
                    from_logits=False, class_weights=None):
    """mean_c -[t (1 - p)^gamma_pos log p + (1 - t) p_m^gamma_neg log(1 - p_m)], p_m = max(p - clip, 0)."""
    z = base.binary_logits(y_pred, from_logits)
    t = base.binary_targets(y_true, z)
    log_p = ops.log_sigmoid(z)
    log_q = ops.log_sigmoid(-z) if gamma_pos or not clip else None  # only where a term needs it
    pos = t * log_p if not gamma_pos else t * ops.exp(gamma_pos * log_q) * log_p
    if clip > 0:
        # 1 - p_m >= clip, so log(1 - p_m) is finite; the floor under p_m keeps the gradient of
        # p_m ** gamma_neg finite for gamma_neg < 1 (clamped entries get a zero gradient from `maximum`).
        p_m = ops.maximum(ops.sigmoid(z) - clip, 1e-30)
        neg = (1.0 - t) * ops.power(p_m, gamma_neg) * ops.log1p(-p_m)
    else:
        neg = (1.0 - t) * ops.exp(gamma_neg * log_p) * log_q
    return base.reduce_elements(-(pos + neg), t, class_weights, task)


@keras.saving.register_keras_serializable(package="losstune")
class AsymmetricLoss(base.LosstuneLoss):
    """Asymmetric loss for multi-label classification (Ridnik et al. 2021, "Asymmetric Loss For Multi-Label
    Classification"): focusing gamma_pos on positives, gamma_neg on negatives, and probability shifting by
    `clip` that discards easy negatives. gamma_pos = gamma_neg = clip = 0 is binary cross-entropy.

    Args:
        gamma_pos: float >= 0. Paper: 0. Search: {0, 1}.
        gamma_neg: float >= 0. Paper: 4. Search: [0, 6].
        clip: float in [0, 1). Paper: 0.05. Search: [0, 0.2].
    """

    fn = staticmethod(asymmetric_loss)

    def __init__(self, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, task="multilabel", from_logits=False,
                 class_weights=None, reduction="sum_over_batch_size", name="asymmetric", dtype=None):
        gp = base.check_number("asymmetric", "gamma_pos", gamma_pos, 0.0)
        gn = base.check_number("asymmetric", "gamma_neg", gamma_neg, 0.0)
        clip = base.check_number("asymmetric", "clip", clip, 0.0, 1.0, high_inclusive=False)
        _init(self, "asymmetric", task, _SIGMOID_TASKS, from_logits, class_weights, reduction, name, dtype,
              gamma_pos=gp, gamma_neg=gn, clip=clip)


# ---------------------------------------------------------------------------------------------------
# Hinge
# ---------------------------------------------------------------------------------------------------
def hinge_loss(y_true, y_pred, margin=1.0, squared=False, task="binary", from_logits=False, class_weights=None):
    """binary: mean_c max(0, margin - s z), s = 2y - 1; multiclass (Crammer-Singer):
    max(0, margin + max_{j != y} z_j - z_y). Squared: the square of the hinge."""
    if task == "multiclass":
        t = base.multiclass_targets(y_true, y_pred)
        z = ops.convert_to_tensor(y_pred) if from_logits else base.class_log_probs(y_pred, False)
        z_true = ops.sum(t * z, axis=-1)
        z_other = ops.max(z - t * 1e9, axis=-1)
        h = ops.relu(margin + z_other - z_true)
        h = ops.square(h) if squared else h
        return base.weight_samples(h, t, class_weights, task)
    z = base.binary_logits(y_pred, from_logits)
    t = base.binary_targets(y_true, z)
    h = ops.relu(margin - (2.0 * t - 1.0) * z)
    h = ops.square(h) if squared else h
    return base.reduce_elements(h, t, class_weights, task)


@keras.saving.register_keras_serializable(package="losstune")
class HingeLoss(base.LosstuneLoss):
    """Hinge loss with a tunable margin (Keras's hinge losses fix it at 1), on the raw scores (logits; with
    from_logits=False the probability's logit for binary, the log-probabilities for multiclass).

    Args:
        margin: float > 0. Search: [0.1, 2] log.
        squared: bool; square the hinge.
    """

    fn = staticmethod(hinge_loss)

    def __init__(self, margin=1.0, squared=False, task="binary", from_logits=False, class_weights=None,
                 reduction="sum_over_batch_size", name="hinge", dtype=None):
        margin = base.check_number("hinge", "margin", margin, 0.0, low_inclusive=False)
        if not isinstance(squared, bool):
            raise ValueError(f"hinge: `squared` must be true or false, got {squared!r}.")
        _init(self, "hinge", task, ("binary", "multiclass"), from_logits, class_weights, reduction, name, dtype,
              margin=margin, squared=squared)


# ---------------------------------------------------------------------------------------------------
# The families
# ---------------------------------------------------------------------------------------------------
def _plain(cls):
    def factory(params, *, task, from_logits, class_counts, class_weights):
        return cls(task=task, from_logits=from_logits, class_weights=class_weights, **params)

    return factory


def _with_counts(cls):
    def factory(params, *, task, from_logits, class_counts, class_weights):
        return cls(class_counts=class_counts, task=task, from_logits=from_logits, class_weights=class_weights,
                   **params)

    return factory


H = Hyperparameter
register(LossFamily(
    name="crossentropy", tasks=("multiclass", "binary", "multilabel"), factory=_plain(CrossEntropy),
    hyperparameters=(H("label_smoothing", "float", 0.0, 0.0, 1.0, high_inclusive=False, search=(0.0, 0.3)),),
    paper="Szegedy et al. 2016 (label smoothing)", summary="cross-entropy with label smoothing"))
register(LossFamily(
    name="focal", tasks=("multiclass", "binary", "multilabel"), factory=_plain(FocalCrossentropy),
    hyperparameters=(H("gamma", "float", 2.0, 0.0, None, search=(0.0, 5.0)),
                     H("alpha", "float", None, 0.0, 1.0, search=(0.1, 0.9))),
    paper="Lin et al. 2017", summary="down-weights easy examples by (1 - p_t)^gamma"))
register(LossFamily(
    name="weighted_bce", tasks=("binary", "multilabel"), factory=_plain(WeightedBinaryCrossentropy),
    hyperparameters=(H("pos_weight", "float", 1.0, 0.0, None, low_inclusive=False, search=(1.0, 100.0),
                       sampling="log"),),
    paper="", summary="binary cross-entropy with a weight on positives"))
register(LossFamily(
    name="class_balanced", tasks=("multiclass", "binary"), factory=_with_counts(ClassBalancedLoss),
    hyperparameters=(H("beta", "float", 0.999, 0.0, 1.0, high_inclusive=False, search=(0.9, 0.9999),
                       sampling="reverse_log"),
                     H("base_loss", "choice", "crossentropy", values=("crossentropy", "focal")),
                     H("gamma", "float", 2.0, 0.0, None, search=(0.0, 5.0))),
    paper="Cui et al. 2019", needs_class_counts=True, summary="re-weights classes by their effective number"))
register(LossFamily(
    name="ldam", tasks=("multiclass",), factory=_with_counts(LDAMLoss),
    hyperparameters=(H("max_margin", "float", 0.5, 0.0, None, low_inclusive=False, search=(0.1, 1.0)),
                     H("scale", "float", 30.0, 0.0, None, low_inclusive=False, search=(10.0, 64.0),
                       sampling="log")),
    paper="Cao et al. 2019", needs_class_counts=True, summary="larger margins for rarer classes"))
register(LossFamily(
    name="logit_adjusted", tasks=("multiclass",), factory=_with_counts(LogitAdjustedLoss),
    hyperparameters=(H("tau", "float", 1.0, 0.0, None, search=(0.0, 2.0)),),
    paper="Menon et al. 2021", needs_class_counts=True, summary="adds tau * log prior to the logits"))
register(LossFamily(
    name="poly1", tasks=("multiclass", "binary", "multilabel"), factory=_plain(Poly1Loss),
    hyperparameters=(H("epsilon", "float", 1.0, -1.0, None, search=(-1.0, 3.0)),),
    paper="Leng et al. 2022", summary="cross-entropy + epsilon (1 - p_t)"))
register(LossFamily(
    name="asymmetric", tasks=("multilabel", "binary"), factory=_plain(AsymmetricLoss),
    hyperparameters=(H("gamma_pos", "float", 0.0, 0.0, None, search=(0.0, 1.0)),
                     H("gamma_neg", "float", 4.0, 0.0, None, search=(0.0, 6.0)),
                     H("clip", "float", 0.05, 0.0, 1.0, high_inclusive=False, search=(0.0, 0.2))),
    paper="Ridnik et al. 2021", summary="separate focusing for positives and negatives, easy negatives clipped"))
register(LossFamily(
    name="hinge", tasks=("binary", "multiclass"), factory=_plain(HingeLoss),
    hyperparameters=(H("margin", "float", 1.0, 0.0, None, low_inclusive=False, search=(0.1, 2.0), sampling="log"),
                     H("squared", "bool", False)),
    paper="Crammer & Singer 2001 (multiclass)", summary="max-margin loss on the raw scores"))
