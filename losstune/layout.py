"""The search directory: where each file of a search lives, what its records hold, and which trials count.

    <directory>/<project_name>/              the project directory (KerasTuner's `project_dir`)
        oracle.json, tuner0.json             KerasTuner's state
        losstune.json                        the search's record (result.SearchContext)
        best_loss.json                       the exported best loss (lossfile)
        trial_<id>/trial.json                KerasTuner's trial state
        trial_<id>/checkpoint.weights.h5     KerasTuner's best-epoch checkpoint
        trial_<id>/repeats.json              the scores of the trial's repeats (seeds, folds, race), written
                                             once its executions have all finished: it marks a trial done
        trial_<id>/curve_<k>.json            execution k's objective per epoch (the median rule reads them)
        trial_<id>/predictions_<k>.npz       execution k's validation labels and outputs after training
        trial_<id>/stopped.json              where a pruning rule stopped it
        trial_<id>/traceback.txt             a failed trial's whole traceback
        <logdir>/<id>/execution<k>/          TensorBoard runs (tensorboard_log)

Every other module asks here for a path or a record; none spells a file name.
"""

from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import dataclass, field

import keras_tuner

from losstune.files import read_json, write_json_atomic
from losstune.stats import mean_se

CONTEXT_FILE = "losstune.json"
BEST_FILE = "best_loss.json"
REPEATS_FILE = "repeats.json"
STOPPED_FILE = "stopped.json"
TRACEBACK_FILE = "traceback.txt"

# KerasTuner's trial states (keras_tuner.engine.trial.TrialStatus, public): the strings trial.json holds.
_STATUS = keras_tuner.engine.trial.TrialStatus
COMPLETED, FAILED, INVALID, RUNNING = _STATUS.COMPLETED, _STATUS.FAILED, _STATUS.INVALID, _STATUS.RUNNING
ENDED = (COMPLETED, FAILED, INVALID)
NOT_SCORED = (FAILED, INVALID)


def counts(trial):
    """The one rule for which trials take part in a comparison (the pick, the race, the warnings, importance):
    completed, not stopped early by a pruning rule (its score comes from fewer epochs than the others'),
    with a finite score. Works on any record with `status`, `score` and `stopped`."""
    return (trial.status == COMPLETED and not getattr(trial, "stopped", None)
            and trial.score is not None and math.isfinite(trial.score))


def trial_dir(project_dir, trial_id):
    """KerasTuner private (1.4.x): `Tuner.get_trial_dir` is `<project_dir>/trial_<id>`."""
    return os.path.join(project_dir, f"trial_{trial_id}")


def curve_file(trial_dir_, execution):
    return os.path.join(trial_dir_, f"curve_{execution}.json")


def curve_files(project_dir):
    """Every execution's curve file of the search."""
    return glob.glob(os.path.join(glob.escape(project_dir), "trial_*", "curve_*.json"))


def predictions_file(trial_dir_, execution):
    return os.path.join(trial_dir_, f"predictions_{execution}.npz")


def traceback_file(project_dir, trial_id):
    return os.path.join(trial_dir(project_dir, trial_id), TRACEBACK_FILE)


def is_done(trial_dir_):
    """True once the trial's executions have all finished (its repeats record is written)."""
    return os.path.isfile(os.path.join(trial_dir_, REPEATS_FILE))


def read_stopped(trial_dir_):
    """Where and why a trial was stopped early ({"epoch", "execution", "value", and "median" or "rung" and "rank"}), or None."""
    path = os.path.join(trial_dir_, STOPPED_FILE)
    return read_json(path) if os.path.isfile(path) else None


def write_stopped(trial_dir_, stopped):
    write_json_atomic(os.path.join(trial_dir_, STOPPED_FILE), stopped)


@dataclass
class Repeats:
    """The scores of a trial's repeats (seeds, folds; racing adds more), as `trial_<id>/repeats.json`."""

    scores: list
    rule: str
    ece: list = field(default_factory=list)  # each repeat's calibration error (NaN where none), same rule

    @property
    def mean_se(self):
        """(mean, standard error); NaN when a repeat failed: a loss that diverges on some seed cannot win."""
        if not self.scores or any(s != s for s in self.scores):
            return float("nan"), None
        return mean_se(self.scores)

    @property
    def mean_ece(self):
        """The mean calibration error over the repeats that have one, or None."""
        values = [e for e in self.ece if e == e]
        return float(sum(values) / len(values)) if values else None

    def add(self, score, ece=float("nan")):
        self.scores.append(score)
        self.ece.extend([float("nan")] * (len(self.scores) - 1 - len(self.ece)) + [ece])

    def save(self, trial_dir_):
        write_json_atomic(os.path.join(trial_dir_, REPEATS_FILE),
                          {"scores": _nullable(self.scores), "rule": self.rule, "ece": _nullable(self.ece)})

    @classmethod
    def load(cls, trial_dir_):
        path = os.path.join(trial_dir_, REPEATS_FILE)
        if not os.path.isfile(path):
            return None
        data = read_json(path)
        return cls(_floats(data["scores"]), data["rule"], _floats(data.get("ece", [])))


def _nullable(values):
    """JSON holds no NaN: a missing value is null."""
    return [None if v != v else float(v) for v in values]


def _floats(values):
    return [float("nan") if v is None else float(v) for v in values]


@dataclass(frozen=True)
class StoredTrial:
    """One `trial_<id>/trial.json` as KerasTuner wrote it, with losstune's records beside it."""

    trial_id: str
    values: dict
    status: str
    score: float | None
    message: str
    repeats: Repeats | None = None  # losstune's per-repeat scores, when the search wrote them
    stopped: dict | None = None  # where a pruning rule stopped it (read_stopped)


def _trial_state(folder):
    """KerasTuner private (1.4.x): `trial_<id>/trial.json` is `Trial.get_state()` as JSON, with keys
    trial_id, hyperparameters (its config, `values` inside), status, score and message."""
    with open(os.path.join(folder, "trial.json"), encoding="utf-8") as fh:
        return json.load(fh)


def stored_trials(project_dir):
    """Every trial of the search in `project_dir`, in trial-id order."""
    trials = []
    for name in sorted(os.listdir(project_dir)):
        if not (name.startswith("trial_") and os.path.isfile(os.path.join(project_dir, name, "trial.json"))):
            continue
        folder = os.path.join(project_dir, name)
        state = _trial_state(folder)
        score = state.get("score")
        trials.append(StoredTrial(
            trial_id=state["trial_id"], values=state.get("hyperparameters", {}).get("values", {}),
            status=state.get("status", "UNKNOWN"), score=None if score is None else float(score),
            message=state.get("message") or "", repeats=Repeats.load(folder), stopped=read_stopped(folder),
        ))
    return trials


def trial_hyperparameters(project_dir, trial_id):
    """KerasTuner HyperParameters holding a finished trial's values (to rebuild its model)."""
    return keras_tuner.HyperParameters.from_config(_trial_state(trial_dir(project_dir, trial_id))["hyperparameters"])


def find_search_directory(directory):
    """The project directory of a search, given it or the `directory` the search was started with."""
    directory = os.fspath(directory)
    if os.path.isfile(os.path.join(directory, CONTEXT_FILE)):
        return directory
    inside = sorted(glob.glob(os.path.join(glob.escape(directory), "*", CONTEXT_FILE)))
    if len(inside) == 1:
        return os.path.dirname(inside[0])
    if len(inside) > 1:
        names = [os.path.basename(os.path.dirname(p)) for p in inside]
        raise ValueError(f"{directory!r} holds several searches {names}; name one, e.g. "
                         f"{os.path.join(directory, names[0])!r}.")
    raise ValueError(f"{directory!r} is not a losstune search directory (no {CONTEXT_FILE} in it or in a "
                     f"folder inside it); pass the directory given to the search.")
