"""Metric-learning losses: contrastive (pairs of inputs and their distance) and triplet (embeddings)."""

from __future__ import annotations

import keras
from keras import ops

from losstune.losses import base
from losstune.losses.hyperparameters import Hyperparameter as H


def contrastive_loss(y_true, y_pred, margin=1.0):
    """y d^2 + (1 - y) max(margin - d, 0)^2, averaged over the last axis; y = 1 similar, d = y_pred >= 0."""
    d = ops.convert_to_tensor(y_pred)
    y = base.binary_targets(y_true, d)
    return ops.mean(y * ops.square(d) + (1.0 - y) * ops.square(ops.relu(margin - d)), axis=-1)


@keras.saving.register_keras_serializable(package="losstune")
class ContrastiveLoss(base.LosstuneLoss):
    """Contrastive loss (Hadsell, Chopra & LeCun 2006, "Dimensionality Reduction by Learning an Invariant
    Mapping"): y d^2 + (1 - y) max(margin - d, 0)^2 (no 1/2 factor).

    y_true: 1 for a similar pair, 0 for a dissimilar one; y_pred: the pair's distance d >= 0, (n,) or (n, 1).
    Unlike `keras.losses.contrastive_loss`, it takes the margin as a hyperparameter and the convention is
    explicit.
    """

    family = "contrastive"
    tasks = ("pairs",)
    paper = "Hadsell et al. 2006"
    summary = "pulls similar pairs together, pushes dissimilar ones past a margin"
    weightable = False
    hyperparameters = (
        H("margin", "float", 1.0, 0.0, None, low_inclusive=False, search=(0.1, 2.0), sampling="log",
          doc="dissimilar pairs closer than this are pushed apart"),
    )
    fn = staticmethod(contrastive_loss)


def _pairwise_distances(e):
    """Euclidean distances between unit rows, from |a - b|^2 = 2 - 2 a.b (so every distance is in [0, 2]).

    The floor under the square root keeps its gradient finite where two embeddings coincide (the clamped
    entries get a zero gradient from `maximum`); it moves a zero distance to 1e-6.
    """
    return ops.sqrt(ops.maximum(2.0 - 2.0 * ops.matmul(e, ops.transpose(e)), 1e-12))


def triplet_loss(y_true, y_pred, margin=0.2, mining="hard"):
    """Online triplet loss on L2-normalised embeddings, one value per anchor.

    hard: max(d(a, hardest positive) - d(a, hardest negative) + margin, 0) (batch-hard, Hermans et al. 2017).
    all: mean over valid (a, p, n) of max(d(a, p) - d(a, n) + margin, 0) for the anchor.
    An anchor with no positive or no negative in the batch has loss 0.
    """
    e = ops.convert_to_tensor(y_pred)
    e = e / ops.sqrt(ops.sum(ops.square(e), axis=-1, keepdims=True) + 1e-12)
    labels = ops.reshape(ops.cast(ops.round(ops.cast(y_true, "float32")), "int32"), (-1,))
    same = ops.cast(ops.equal(labels[:, None], labels[None, :]), e.dtype)
    d = _pairwise_distances(e)
    if mining == "hard":
        # The anchor itself counts among its positives: its distance (1e-6) never beats a real positive's.
        hardest_pos = ops.max(d * same, axis=1)
        # Distances are <= 2, so a same-class entry raised by 4 never beats a real negative.
        hardest_neg = ops.min(d + 4.0 * same, axis=1)
        n_same = ops.sum(same, axis=1)  # the anchor included
        batch = ops.cast(ops.shape(same)[1], e.dtype)
        has = ops.cast(ops.logical_and(n_same > 1.5, n_same < batch - 0.5), e.dtype)
        return ops.relu(hardest_pos - hardest_neg + margin) * has
    positive = same - ops.eye(ops.shape(labels)[0], dtype=e.dtype)
    valid = positive[:, :, None] * (1.0 - same)[:, None, :]
    losses = ops.relu(d[:, :, None] - d[:, None, :] + margin) * valid
    return ops.sum(losses, axis=(1, 2)) / ops.maximum(ops.sum(valid, axis=(1, 2)), 1.0)


@keras.saving.register_keras_serializable(package="losstune")
class TripletLoss(base.LosstuneLoss):
    """Triplet loss with online mining in the batch (Schroff et al. 2015, "FaceNet"; batch-hard mining from
    Hermans et al. 2017). y_true: integer class ids (n,); y_pred: embeddings (n, d), L2-normalised here.
    """

    family = "triplet"
    tasks = ("embedding",)
    paper = "Schroff et al. 2015"
    summary = "anchor-positive closer than anchor-negative by a margin"
    weightable = False
    hyperparameters = (
        H("margin", "float", 0.2, 0.0, None, low_inclusive=False, search=(0.02, 0.5), sampling="log", paper="0.2",
          doc="how much closer the positive must be than the negative (distances of unit vectors, <= 2)"),
        H("mining", "choice", "hard", values=("hard", "all"),
          doc="'hard': the hardest positive and negative per anchor; 'all': every valid triplet"),
    )
    fn = staticmethod(triplet_loss)
