"""Stopping hopeless trials early, as Keras callbacks: the median rule (Optuna's `MedianPruner`) and
successive halving (ASHA's rungs, Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning").

Median: a trial's execution is stopped at epoch e when its objective there is worse than the median of the
completed trials' values at the same epoch, once enough trials and epochs have passed (the warm-up).
Halving: at each rung (epochs // 3**k epochs done, k = 1, 2, ..., none before a quarter of the epochs: 20
epochs -> a rung after 6), an execution goes on only when its objective is among the best third of every
execution that reached that rung.

The baseline is never stopped. Each execution's per-epoch values are kept in its trial's folder
(`curve_<execution>.json`), so the rules work the same in one process, in a population and across distributed
workers, and a stopped trial says where and why in `stopped.json`. In a population a stopped member leaves the
stack (population.driver), so both rules save real compute there too.
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np

from losstune import layout
from losstune.files import read_json, write_json_atomic
from losstune.stats import sign

PRUNERS = ("median", "halving")
REDUCTION = 3  # successive halving keeps the best third at each rung (ASHA's and Hyperband's default)


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


def rungs(epochs, reduction=REDUCTION):
    """The epoch counts after which successive halving ranks executions: epochs // reduction**k for k = 1, 2,
    ..., ascending (the full budget is the top rung), none before the warm-up (a quarter of the epochs),
    which leaves one rung at a third of the budget: 20 -> [6], 27 -> [9], 3 -> [1], 2 -> [].

    Why the warm-up: with a rung after 2 of 20 epochs on long-tailed digits (46 validation examples), the
    trial that would have scored best was stopped in every search (benchmarks/README.md, pruning)."""
    out, k = [], 1
    while epochs // reduction**k >= max(1, warmup_epochs(epochs)):
        out.append(epochs // reduction**k)
        k += 1
    return sorted(set(out))


class HalvingPruner(keras.callbacks.Callback):
    """Successive halving (asynchronous, as ASHA): at each rung, stop this execution unless its objective is
    among the best `1 / reduction` of all executions that reached the rung (itself included; with fewer than
    `reduction` of them it goes on).

    The value is recorded when validation ends (`on_test_end`) and ranked when the epoch ends, so the members
    of a population, which are all validated before any epoch ends, rank against each other as well as
    against earlier trials. Arguments as `MedianPruner`; `reduction` is the halving factor (3).
    """

    def __init__(self, project_dir, trial_id, execution, objective, epochs, exempt=False, reduction=REDUCTION):
        super().__init__()
        if not objective.name.startswith("val_"):
            raise ValueError(f"`objective`: halving ranks a validation metric (val_...), got {objective.name!r}.")
        self.project_dir = project_dir
        self.trial_dir = layout.trial_dir(project_dir, trial_id)
        self.execution = execution
        self.objective = objective
        self.rungs = rungs(epochs, reduction)
        self.reduction = reduction
        self.exempt = exempt
        self.values = []
        self.stopped = None

    def on_test_end(self, logs=None):
        value = (logs or {}).get(self.objective.name[len("val_"):])
        if value is not None:
            self.values.append(float(value))
            write_json_atomic(layout.curve_file(self.trial_dir, self.execution),
                              [v if math.isfinite(v) else None for v in self.values])

    def on_epoch_end(self, epoch, logs=None):
        if self.exempt or epoch + 1 not in self.rungs or len(self.values) != epoch + 1:
            return
        value = self.values[epoch]
        reached = self._values_at(epoch) + [value]
        keep = len(reached) // self.reduction
        if keep < 1:
            return
        better = sum(sign(self.objective.direction) * (v - value) > 0 for v in reached)
        if better >= keep or not math.isfinite(value):  # not among the best `keep`
            self.stopped = {"epoch": epoch, "execution": self.execution, "value": value,
                            "rung": f"best {keep} of {len(reached)}", "rank": better + 1}
            layout.write_stopped(self.trial_dir, self.stopped)
            self.model.stop_training = True

    def _values_at(self, epoch):
        """Values at `epoch` of every other execution that reached it (running ones too), non-finite as worst."""
        values = []
        for path in layout.curve_files(self.project_dir):
            if path == layout.curve_file(self.trial_dir, self.execution):
                continue
            curve = read_json(path)
            if len(curve) > epoch:
                values.append(curve[epoch] if curve[epoch] is not None else -math.inf * sign(self.objective.direction))
        return values
