"""Regression losses: MSE, Huber, log-cosh, MSLE, quantile (pinball)."""

from __future__ import annotations

import keras
from keras import ops

from losstune.families import Hyperparameter, LossFamily, register
from losstune.losses import base


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
    family = ""

    def __init__(self, task, reduction, name, dtype, **params):
        base.check_task(self.family, task, ("regression",))
        super().__init__(name=name, reduction=reduction, dtype=dtype, task=task, **params)

    def call(self, y_true, y_pred):
        params = {k: v for k, v in self._fn_kwargs.items() if k != "task"}
        return type(self).fn(y_true, y_pred, **params)


@keras.saving.register_keras_serializable(package="losstune")
class MeanSquaredError(_RegressionLoss):
    """Mean squared error: mean (y_pred - y_true)^2. No hyperparameters."""

    family = "mse"
    fn = staticmethod(mean_squared_error)

    def __init__(self, task="regression", reduction="sum_over_batch_size", name="mse", dtype=None):
        super().__init__(task, reduction, name, dtype)


@keras.saving.register_keras_serializable(package="losstune")
class HuberLoss(_RegressionLoss):
    """Huber loss (Huber 1964): quadratic for |r| <= delta, linear beyond. Unlike Keras's released `Huber`,
    `delta` survives `get_config` (a reloaded model keeps it).

    Args:
        delta: float > 0. Search: [0.1, 10] log.
    """

    family = "huber"
    fn = staticmethod(huber)

    def __init__(self, delta=1.0, task="regression", reduction="sum_over_batch_size", name="huber", dtype=None):
        delta = base.check_number("huber", "delta", delta, 0.0, low_inclusive=False)
        super().__init__(task, reduction, name, dtype, delta=delta)


@keras.saving.register_keras_serializable(package="losstune")
class LogCoshLoss(_RegressionLoss):
    """Log-cosh loss: mean log cosh(y_pred - y_true), ~ r^2 / 2 for small r, |r| - log 2 for large r."""

    family = "log_cosh"
    fn = staticmethod(log_cosh)

    def __init__(self, task="regression", reduction="sum_over_batch_size", name="log_cosh", dtype=None):
        super().__init__(task, reduction, name, dtype)


@keras.saving.register_keras_serializable(package="losstune")
class MeanSquaredLogarithmicError(_RegressionLoss):
    """Mean squared logarithmic error, for non-negative targets spanning orders of magnitude."""

    family = "msle"
    fn = staticmethod(mean_squared_logarithmic_error)

    def __init__(self, task="regression", reduction="sum_over_batch_size", name="msle", dtype=None):
        super().__init__(task, reduction, name, dtype)


@keras.saving.register_keras_serializable(package="losstune")
class QuantileLoss(_RegressionLoss):
    """Quantile (pinball) loss (Koenker & Bassett 1978): its minimiser is the `quantile`-quantile of y.
    quantile 0.5 is half the mean absolute error.

    Args:
        quantile: float in (0, 1). Search: [0.05, 0.95].
    """

    family = "quantile"
    fn = staticmethod(quantile_loss)

    def __init__(self, quantile=0.5, task="regression", reduction="sum_over_batch_size", name="quantile",
                 dtype=None):
        quantile = base.check_number("quantile", "quantile", quantile, 0.0, 1.0, low_inclusive=False,
                                     high_inclusive=False)
        super().__init__(task, reduction, name, dtype, quantile=quantile)


def _factory(cls):
    def factory(params, *, task, from_logits, class_counts, class_weights):
        return cls(task=task, **params)

    return factory


H = Hyperparameter
for _name, _cls, _hps, _paper, _summary in (
    ("mse", MeanSquaredError, (), "", "mean squared error"),
    ("huber", HuberLoss, (H("delta", "float", 1.0, 0.0, None, low_inclusive=False, search=(0.1, 10.0),
                            sampling="log"),), "Huber 1964", "quadratic near 0, linear for outliers"),
    ("log_cosh", LogCoshLoss, (), "", "smooth, ~L2 near 0 and ~L1 far away"),
    ("msle", MeanSquaredLogarithmicError, (), "", "squared error of log(1 + y)"),
    ("quantile", QuantileLoss, (H("quantile", "float", 0.5, 0.0, 1.0, low_inclusive=False, high_inclusive=False,
                                  search=(0.05, 0.95)),), "Koenker & Bassett 1978", "pinball loss of a quantile"),
):
    register(LossFamily(name=_name, tasks=("regression",), factory=_factory(_cls), hyperparameters=_hps,
                        paper=_paper, weightable=False, summary=_summary))
