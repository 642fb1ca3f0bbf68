"""Stopping hopeless trials early: the median rule (Optuna's `MedianPruner`, as a Keras callback).

A trial's execution is stopped at epoch e when its objective there is worse than the median of the completed
trials' values at the same epoch, once enough trials and epochs have passed (the warm-up). The baseline is
never stopped. Each execution's per-epoch values are kept in its trial's folder (`curve_<execution>.json`), so
the rule works the same in one process and across distributed workers, and a stopped trial says where and
why in `stopped.json`.
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np

from losstune import layout
from losstune.files import read_json, write_json_atomic
from losstune.stats import sign

PRUNERS = ("median",)


def warmup_epochs(epochs):
    """Epochs a trial always trains before the rule may stop it: a quarter of the budget, at least one."""
    return max(1, epochs // 4)


class MedianPruner(keras.callbacks.Callback):
    """Stops this execution when its objective is worse than the median of completed trials at that epoch.

    Args:
        project_dir: the search's folder, holding `trial_<id>/` of every trial.
        trial_id, execution: which training this is.
        objective: the `keras_tuner.Objective` (its name is a key of the epoch logs).
        epochs: the trial's epoch budget (sets the warm-up in epochs).
        warmup_trials: completed trials needed at an epoch before the rule applies there.
        exempt: True for a trial that must never be stopped (the baseline).
    """

    def __init__(self, project_dir, trial_id, execution, objective, epochs, warmup_trials=4, exempt=False):
        super().__init__()
        self.project_dir = project_dir
        self.trial_dir = layout.trial_dir(project_dir, trial_id)
        self.execution = execution
        self.objective = objective
        self.warmup_epochs = warmup_epochs(epochs)
        self.warmup_trials = warmup_trials
        self.exempt = exempt
        self.values = []
        self.stopped = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.objective.name)
        if value is None:
            return
        self.values.append(float(value))
        write_json_atomic(layout.curve_file(self.trial_dir, self.execution),
                          [v if math.isfinite(v) else None for v in self.values])
        if self.exempt or epoch + 1 < self.warmup_epochs:
            return
        others = self._completed_values(epoch)
        if len(others) < self.warmup_trials:
            return
        median = float(np.median(others))
        worse = sign(self.objective.direction) * (value - median) < 0
        if worse:
            self.stopped = {"epoch": epoch, "execution": self.execution, "value": float(value), "median": median}
            layout.write_stopped(self.trial_dir, self.stopped)
            self.model.stop_training = True

    def _completed_values(self, epoch):
        """Values at `epoch` of the other completed trials' executions (a stopped one counts up to its stop)."""
        values = []
        for path in layout.curve_files(self.project_dir):
            trial_dir = os.path.dirname(path)
            if trial_dir == self.trial_dir or not layout.is_done(trial_dir):
                continue
            curve = read_json(path)
            if len(curve) > epoch and curve[epoch] is not None:
                values.append(curve[epoch])
        return values
