"""Classification losses: cross-entropy, focal, weighted BCE, class-balanced, LDAM, logit adjustment, poly-1,
asymmetric, hinge, Tversky.

Every loss is computed from logits (probability inputs are turned into logits once, after clipping), so it
is finite with finite gradients for saturated predictions on every Keras backend; Tversky, a ratio of bounded
soft counts, works on the probabilities.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from losstune.losses import base
from losstune.losses.hyperparameters import Hyperparameter as H

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
        # the sparse fast path for a Python 0; a tensor (members of a population) takes the general path
        if ids is not None and isinstance(label_smoothing, (int, float)) and not label_smoothing:
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
    """

    family = "crossentropy"
    tasks = ("multiclass", "binary", "multilabel")
    paper = "Szegedy et al. 2016 (label smoothing)"
    summary = "cross-entropy with label smoothing"
    hyperparameters = (
        H("label_smoothing", "float", 0.0, 0.0, 1.0, high_inclusive=False, search=(0.0, 0.3), paper="0.1",
          doc="mixes the targets with the uniform distribution (0.5 for sigmoid outputs); 0 = none"),
    )
    fn = staticmethod(crossentropy)


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
    """

    family = "focal"
    tasks = ("multiclass", "binary", "multilabel")
    paper = "Lin et al. 2017"
    summary = "down-weights easy examples by (1 - p_t)^gamma"
    hyperparameters = (
        H("gamma", "float", 2.0, 0.0, None, search=(0.0, 5.0), paper="2",
          doc="focusing: easy examples weigh (1 - p_t)^gamma; 0 = cross-entropy"),
        H("alpha", "float", None, 0.0, 1.0, search=(0.1, 0.9), paper="0.25",
          doc="weight of positives (negatives: 1 - alpha) for sigmoid outputs, a scale of the loss for "
              "multiclass; None = no balancing"),
    )
    fn = staticmethod(focal_crossentropy)


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
    """Binary cross-entropy with a weight on the positive term (as `tf.nn.weighted_cross_entropy_with_logits`)."""

    family = "weighted_bce"
    tasks = _SIGMOID_TASKS
    summary = "binary cross-entropy with a weight on positives"
    hyperparameters = (
        H("pos_weight", "float", 1.0, 0.0, None, low_inclusive=False, search=(1.0, 100.0), sampling="log",
          paper="n_neg / n_pos", doc="weight of the positive term; 1 = plain BCE, n_neg / n_pos balances the "
                                     "classes (search up to it)"),
    )
    fn = staticmethod(weighted_binary_crossentropy)


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


def class_balanced_loss(y_true, y_pred, weights, base_loss="crossentropy", gamma=2.0, task="multiclass",
                        from_logits=False):
    """The base loss (cross-entropy, or focal with `gamma`) with the per-class `weights` w_c."""
    if base_loss == "focal":
        return focal_crossentropy(y_true, y_pred, gamma=gamma, task=task, from_logits=from_logits,
                                  class_weights=weights)
    return crossentropy(y_true, y_pred, task=task, from_logits=from_logits, class_weights=weights)


@keras.saving.register_keras_serializable(package="losstune")
class ClassBalancedLoss(base.LosstuneLoss):
    """Class-balanced loss (Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of Samples").

    loss = w_y * base_loss, w_c = (1 - beta) / (1 - beta^n_c) normalised to sum to C; the base loss is
    cross-entropy or focal (with `gamma`). beta = 0 gives the unweighted base loss.
    """

    family = "class_balanced"
    tasks = ("multiclass", "binary")
    paper = "Cui et al. 2019"
    summary = "re-weights classes by their effective number"
    needs_class_counts = True
    reweighting_off = {"beta": 0.0}
    hyperparameters = (
        H("beta", "float", 0.999, 0.0, 1.0, high_inclusive=False, search=(0.9, 0.9999), sampling="reverse_log",
          paper="{0.9, 0.99, 0.999, 0.9999}", doc="w_c = (1 - beta) / (1 - beta^n_c); 0 = unweighted"),
        H("base_loss", "choice", "crossentropy", values=("crossentropy", "focal"), doc="the loss re-weighted"),
        H("gamma", "float", 2.0, 0.0, None, search=(0.0, 5.0), paper="2",
          doc="focal gamma, used when base_loss is 'focal'"),
    )
    fn = staticmethod(class_balanced_loss)

    def derived(self, config):
        # Computed once here, not per call: converting a Python list per eager call is slow for many classes.
        weights = np.asarray(effective_number_weights(config["class_counts"], config["beta"]))
        if config["class_weights"] is not None:
            weights = weights * np.asarray(config["class_weights"])
        return {"weights": weights}


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
    from_logits=False the log-probabilities serve as the logits z. The paper's deferred re-weighting (DRW)
    schedule is not part of this loss.
    """

    family = "ldam"
    tasks = ("multiclass",)
    paper = "Cao et al. 2019"
    summary = "larger margins for rarer classes"
    needs_class_counts = True
    hyperparameters = (
        H("max_margin", "float", 0.5, 0.0, None, low_inclusive=False, search=(0.1, 1.0), paper="0.5",
          doc="the margin of the rarest class"),
        H("scale", "float", 30.0, 0.0, None, low_inclusive=False, search_values=(10.0, 30.0, 64.0), paper="30",
          doc="the logits' scale s"),
    )
    fn = staticmethod(ldam_loss)

    def derived(self, config):
        return {"margins": np.asarray(ldam_margins(config["class_counts"], config["max_margin"]))}


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

    loss = CE(softmax(z + tau log pi)), pi the training class prior (from `class_counts`). tau = 0 is
    cross-entropy.
    """

    family = "logit_adjusted"
    tasks = ("multiclass",)
    paper = "Menon et al. 2021"
    summary = "adds tau * log prior to the logits"
    needs_class_counts = True
    hyperparameters = (
        H("tau", "float", 1.0, 0.0, None, search=(0.0, 2.0), paper="1", doc="scale of the log prior; 0 = cross-entropy"),
    )
    fn = staticmethod(logit_adjusted_loss)

    def derived(self, config):
        prior = np.maximum(np.asarray(config["class_counts"], dtype="float64"), 1.0)
        return {"log_prior": np.log(prior / prior.sum())}


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
    """

    family = "poly1"
    tasks = ("multiclass", "binary", "multilabel")
    paper = "Leng et al. 2022"
    summary = "cross-entropy + epsilon (1 - p_t)"
    hyperparameters = (
        H("epsilon", "float", 1.0, -1.0, None, search=(-1.0, 3.0), paper="task dependent (1 for ImageNet)",
          doc="weight of the first polynomial term (1 - p_t); 0 = cross-entropy"),
    )
    fn = staticmethod(poly1_loss)


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
    """

    family = "asymmetric"
    tasks = ("multilabel", "binary")
    paper = "Ridnik et al. 2021"
    summary = "separate focusing for positives and negatives, easy negatives clipped"
    hyperparameters = (
        H("gamma_pos", "float", 0.0, 0.0, None, search_values=(0.0, 1.0), paper="0",
          doc="focusing on positives"),
        H("gamma_neg", "float", 4.0, 0.0, None, search=(0.0, 6.0), paper="4", doc="focusing on negatives"),
        H("clip", "float", 0.05, 0.0, 1.0, high_inclusive=False, search=(0.0, 0.2), paper="0.05",
          doc="probability shift of negatives: p_m = max(p - clip, 0)"),
    )
    fn = staticmethod(asymmetric_loss)


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
    """

    family = "hinge"
    tasks = ("binary", "multiclass")
    paper = "Crammer & Singer 2001 (multiclass)"
    summary = "max-margin loss on the raw scores"
    hyperparameters = (
        H("margin", "float", 1.0, 0.0, None, low_inclusive=False, search=(0.1, 2.0), sampling="log",
          doc="the score margin; Keras's hinge losses fix it at 1"),
        H("squared", "bool", False, doc="square the hinge"),
    )
    fn = staticmethod(hinge_loss)


# ---------------------------------------------------------------------------------------------------
# Tversky
# ---------------------------------------------------------------------------------------------------
def tversky_loss(y_true, y_pred, alpha=0.3, beta=0.7, smooth=1.0, task="binary", from_logits=False):
    """1 - (TP + smooth) / (TP + alpha FP + beta FN + smooth), one value per sample.

    Soft counts over every axis but the first (the labels of a multilabel output; every pixel of a
    segmentation map): TP = sum t p, FP = sum (1 - t) p, FN = sum t (1 - p), p the predicted probability.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    if len(y_pred.shape) == 1:
        y_pred = ops.expand_dims(y_pred, -1)
    p = ops.sigmoid(y_pred) if from_logits else y_pred
    t = base.binary_targets(y_true, p)
    axes = tuple(range(1, len(p.shape)))
    tp = ops.sum(t * p, axis=axes)
    fp = ops.sum((1.0 - t) * p, axis=axes)
    fn = ops.sum(t * (1.0 - p), axis=axes)
    return 1.0 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth + keras.config.epsilon())


@keras.saving.register_keras_serializable(package="losstune")
class TverskyLoss(base.LosstuneLoss):
    """Tversky loss (Salehi et al. 2017, "Tversky loss function for image segmentation using 3D fully
    convolutional deep networks"): 1 - TP / (TP + alpha FP + beta FN) on soft predictions, for imbalanced
    binary and multi-label outputs. beta > alpha weighs a missed positive more than a false alarm (recall
    over precision); alpha = beta = 0.5 is the Dice loss.

    Per sample: the soft counts sum over every axis but the first (a multilabel output's labels, a
    segmentation map's pixels), so the loss fits Keras's reduction and `sample_weight` like every other loss;
    for a binary output of one probability per sample, `smooth` keeps the loss of a negative sample
    (alpha p / (smooth + alpha p)) informative. Unlike Keras's released `Tversky` (3.3 to 3.15.1), which
    applies alpha to the false negatives and beta to the false positives, alpha here weighs the false
    positives, as in the paper. Class weights do not apply: alpha and beta are its class balance.
    """

    family = "tversky"
    tasks = _SIGMOID_TASKS
    paper = "Salehi et al. 2017"
    summary = "1 - TP / (TP + alpha FP + beta FN) on soft predictions, per sample"
    weightable = False
    hyperparameters = (
        H("alpha", "float", 0.3, 0.0, 1.0, search=(0.1, 0.9), paper="0.3", doc="weight of the false positives"),
        H("beta", "float", 0.7, 0.0, 1.0, search=(0.1, 0.9), paper="0.7", doc="weight of the false negatives"),
        H("smooth", "float", 1.0, 0.0, None,
          doc="added to both counts of the ratio; keeps a sample without positives informative; usually left at 1"),
    )
    fn = staticmethod(tversky_loss)
