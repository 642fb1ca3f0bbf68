"""A fresh optimizer for every model: the one place an optimizer given by the user is copied."""

from __future__ import annotations

import keras


def fresh_optimizer(optimizer):
    """A new, unbuilt optimizer from `optimizer`: a name, a config dict, a factory (called), or an instance
    (its config copied, with the variable-name exclusions of `exclude_from_weight_decay(var_names=...)`,
    which `get_config` leaves out)."""
    if isinstance(optimizer, keras.optimizers.Optimizer):
        new = type(optimizer).from_config(optimizer.get_config())
        # Keras private (3.x): `Optimizer._exclude_from_weight_decay_pattern` holds the var_names given to
        # `exclude_from_weight_decay`; `get_config` does not carry it (tests/test_kerastuner_internals.py).
        pattern = getattr(optimizer, "_exclude_from_weight_decay_pattern", None)
        if pattern is not None:
            new._exclude_from_weight_decay_pattern = pattern
        return new
    if callable(optimizer) and not isinstance(optimizer, (str, dict)):
        return optimizer()
    return keras.optimizers.get(optimizer)
