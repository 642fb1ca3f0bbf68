"""Regression losses: MSE, Huber, log-cosh, MSLE, quantile (pinball)."""

from __future__ import annotations

import keras
from keras import ops

from losstune.losses import base
from losstune.losses.hyperparameters import Hyperparameter as H


def _residual(y_true, y_pred):
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(ops.convert_to_tensor(y_true), y_pred.dtype)
    if len(y_true.shape) == len(y_pred.shape) - 1:
        y_true = ops.expand_dims(y_true, -1)
    return y_pred - y_true


# Keras's own mean squared error is correct: reused as is.
mean_squared_error = keras.losses.mean_squared_error


def huber(y_true, y_pred, delta=1.0):
    """mean of 0.5 r^2 where |r| <= delta, delta (|r| - 0.5 delta) elsewhere."""
    r = ops.abs(_residual(y_true, y_pred))
    quad = ops.minimum(r, delta)
    return ops.mean(0.5 * ops.square(quad) + delta * (r - quad), axis=-1)


# Keras's log-cosh (computed as r + softplus(-2r) - log 2) and MSLE are correct: reused as they are.
log_cosh = keras.losses.log_cosh
mean_squared_logarithmic_error = keras.losses.mean_squared_logarithmic_error


def quantile_loss(y_true, y_pred, quantile=0.5):
    """Pinball loss: mean max(q (y - y_pred), (q - 1)(y - y_pred))."""
    e = -_residual(y_true, y_pred)
    return ops.mean(ops.maximum(quantile * e, (quantile - 1.0) * e), axis=-1)


class _RegressionLoss(base.LosstuneLoss):
    """What every regression family shares: its task, and no class weights."""

    tasks = ("regression",)
    weightable = False


@keras.saving.register_keras_serializable(package="losstune")
class MeanSquaredError(_RegressionLoss):
    """Mean squared error: mean (y_pred - y_true)^2. No hyperparameters."""

    family = "mse"
    summary = "mean squared error"
    fn = staticmethod(mean_squared_error)


@keras.saving.register_keras_serializable(package="losstune")
class HuberLoss(_RegressionLoss):
    """Huber loss (Huber 1964): quadratic for |r| <= delta, linear beyond. Unlike Keras's released `Huber`,
    `delta` survives `get_config` (a reloaded model keeps it).
    """

    family = "huber"
    paper = "Huber 1964"
    summary = "quadratic near 0, linear for outliers"
    hyperparameters = (
        H("delta", "float", 1.0, 0.0, None, low_inclusive=False, search=(0.1, 10.0), sampling="log",
          doc="the residual where the loss turns from quadratic to linear"),
    )
    fn = staticmethod(huber)


@keras.saving.register_keras_serializable(package="losstune")
class LogCoshLoss(_RegressionLoss):
    """Log-cosh loss: mean log cosh(y_pred - y_true), ~ r^2 / 2 for small r, |r| - log 2 for large r."""

    family = "log_cosh"
    summary = "smooth, ~L2 near 0 and ~L1 far away"
    fn = staticmethod(log_cosh)


@keras.saving.register_keras_serializable(package="losstune")
class MeanSquaredLogarithmicError(_RegressionLoss):
    """Mean squared logarithmic error, for non-negative targets spanning orders of magnitude."""

    family = "msle"
    summary = "squared error of log(1 + y)"
    fn = staticmethod(mean_squared_logarithmic_error)


@keras.saving.register_keras_serializable(package="losstune")
class QuantileLoss(_RegressionLoss):
    """Quantile (pinball) loss (Koenker & Bassett 1978): its minimiser is the `quantile`-quantile of y.
    quantile 0.5 is half the mean absolute error.
    """

    family = "quantile"
    paper = "Koenker & Bassett 1978"
    summary = "pinball loss of a quantile"
    hyperparameters = (
        H("quantile", "float", 0.5, 0.0, 1.0, low_inclusive=False, high_inclusive=False, search=(0.05, 0.95),
          doc="the quantile of y the prediction estimates; 0.5 = the median"),
    )
    fn = staticmethod(quantile_loss)
