"""`Member`: one trial of a population."""

from __future__ import annotations

import keras


class Member:
    """One trial of a population.

    Attributes:
        model: the member's compiled `keras.Model` (its own loss, metrics and a fresh optimizer). All members
            of a population come from the same builder and seed; after training it holds the member's final
            weights (at each epoch end, its current weights and its optimizer's step count, for callbacks).
        callbacks: `keras.callbacks.Callback` objects for this member alone. They get `on_train_begin`,
            `on_epoch_begin`, `on_test_begin`/`on_test_end`, `on_epoch_end(epoch, logs)` and `on_train_end`
            with the member's own logs; batch-level hooks are not called. A callback that sets
            `model.stop_training` stops this member alone (after that epoch, as in `fit`).
        name: a label for messages (default: the model's name).
        hyperparameters: what the member's model was built from (KerasTuner `HyperParameters`), or None; a
            member that has to train alone (`trials.train_members`) is rebuilt from it, so it starts from
            its initial weights whatever a failed population did to its model.
        history: per-epoch logs as in `keras.callbacks.History.history`: "loss", each compiled metric,
            "val_loss", "val_<metric>".
        failure: None, or why the member stopped, e.g. "training loss became nan at batch 12 of epoch 3".
        stopped_epoch: the epoch after which the member stopped (failure or `stop_training`), else None.
        schedule: None, or the member's loss arguments by epoch: an object with `arguments_at(epoch)` ->
            {argument of the compiled loss's function: value} (`losstune.reweighting.Schedule`: class weights
            switched on at an epoch). The population applies it at each epoch's start, as the
            `DeferredReweighting` callback does in `fit`.
    """

    def __init__(self, model, callbacks=None, name=None, hyperparameters=None, schedule=None):
        if not isinstance(model, keras.Model):
            raise ValueError(f"`model` must be a keras.Model, got {type(model).__name__}.")
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, keras.callbacks.Callback):
                raise ValueError(
                    f"`callbacks` must hold keras.callbacks.Callback objects, got {type(cb).__name__}."
                )
        self.model = model
        self.callbacks = callbacks
        self.name = name or model.name
        self.hyperparameters = hyperparameters
        if schedule is not None and not callable(getattr(schedule, "arguments_at", None)):
            raise ValueError(f"`schedule` must have an `arguments_at(epoch)` method, got {type(schedule).__name__}.")
        self.schedule = schedule
        self.history = {}
        self.failure = None
        self.stopped_epoch = None

    def __repr__(self):
        state = f"failed: {self.failure}" if self.failure else f"{len(self.history.get('loss', []))} epochs"
        return f"Member({self.name!r}, {state})"
