"""Deferred re-weighting: train with every class weight at 1, then switch the loss's class weights on for the
last part of training (DRW, Cao et al. 2019, "Learning Imbalanced Datasets with Label-Distribution-Aware
Margin Loss"; the paper switches at epoch 160 of 200).

Re-weighting from the start distorts the features a network learns on a long-tailed set; deferring it lets
the representation form on the natural distribution and re-weighting then moves the decision boundaries.

A `Schedule` is data: the loss with its weights on, and the first epoch that uses them; before it the same
loss with every class weight at 1 (the same arguments otherwise, so a population keeps the members of both
phases in one loss group). `DeferredReweighting` applies a schedule to `model.fit` as a Keras callback; a
population applies the same schedule per member (population/driver.py).

    loss = losstune.load_loss("best_loss.json")                       # the weights switched on
    callback = losstune.deferred_reweighting("best_loss.json", epochs=40)   # None when not deferred
    model.compile(optimizer="adam", loss=loss)
    model.fit(x, y, epochs=40, callbacks=[callback] if callback else [])
"""

from __future__ import annotations

import keras
import numpy as np


def start_epoch(start, epochs):
    """The first epoch (0-based) trained with the class weights on: round(start * epochs), where `start` in
    [0, 1) is the fraction of the epochs trained unweighted."""
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not 0.0 <= start < 1.0:
        raise ValueError(f"`start` must be a fraction in [0, 1), got {start!r}.")
    return min(int(round(float(start) * int(epochs))), int(epochs))


class Schedule:
    """The loss of each epoch: `loss` (its class weights on) from `start_epoch`, the same loss with every
    class weight at 1 and its family's own re-weighting off (`reweighting_off`, e.g. class-balanced's
    beta = 0) before it."""

    def __init__(self, loss, start_epoch):
        config = loss.get_config()
        weights = config.get("class_weights")
        own = getattr(type(loss), "reweighting_off", None) or {}
        if weights is None and not own:
            raise ValueError(f"a deferred re-weighting needs a loss with `class_weights` or a re-weighting of its "
                             f"own, got {loss.name!r} without either.")
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, (int, np.integer)) or start_epoch < 0:
            raise ValueError(f"`start_epoch` must be an integer >= 0, got {start_epoch!r}.")
        self.start_epoch = int(start_epoch)
        # Copies: the loss a model compiles is changed in place by `DeferredReweighting`.
        self.on = type(loss).from_config(config)
        off = dict(config, **own)
        if weights is not None:
            off["class_weights"] = [1.0] * len(weights)
        self.off = type(loss).from_config(off)

    def loss_at(self, epoch):
        return self.on if epoch >= self.start_epoch else self.off

    def arguments_at(self, epoch):
        """The keyword arguments the loss function takes at `epoch` (losstune's losses keep them in
        `_fn_kwargs`)."""
        return dict(self.loss_at(epoch)._fn_kwargs)

    def __repr__(self):
        return f"Schedule({self.on.name!r}, start_epoch={self.start_epoch})"


class DeferredReweighting(keras.callbacks.Callback):
    """In `model.fit`: the compiled losstune loss computes with every class weight at 1 before
    `schedule.start_epoch` and with its class weights from then on.

    The loss's arguments are Python values captured when Keras traces its train and test functions, so at
    each switch the callback sets them on `model.loss` and asks Keras for fresh functions (one more trace).
    """

    def __init__(self, schedule):
        super().__init__()
        if not isinstance(schedule, Schedule):
            raise ValueError(f"`schedule` must be a losstune Schedule, got {type(schedule).__name__}.")
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        loss = self.model.loss
        wanted = self.schedule.arguments_at(epoch)
        current = getattr(loss, "_fn_kwargs", None)
        if not isinstance(current, dict) or set(current) != set(wanted):
            raise ValueError(f"DeferredReweighting: the model's loss ({getattr(loss, 'name', loss)!r}) is not the "
                             f"schedule's ({self.schedule.on.name!r}); compile the model with the scheduled loss.")
        if all(_same(current[k], wanted[k]) for k in wanted):
            return
        current.update(wanted)
        # Keras (3.x): `make_train_function(force=True)` / `make_test_function(force=True)` replace the
        # traced functions; `fit` calls `self.train_function` afresh at every step.
        self.model.make_train_function(force=True)
        self.model.make_test_function(force=True)


def _same(a, b):
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except (TypeError, ValueError):
        return a is b
