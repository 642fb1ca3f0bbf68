"""Every KerasTuner touchpoint of losstune: the tuner classes, the mixin that puts the baseline first and logs
each trial, the distributed roles, and reading a search's trials back from KerasTuner's files.

losstune relies on a few KerasTuner names that are not public API. Each is marked `KerasTuner private` below
with the version it was read from (keras-tuner 1.4.x), and tests/test_kerastuner_internals.py fails loudly
when an upgrade changes one.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from typing import TextIO

import keras
import keras_tuner
import numpy as np
from keras_tuner.src import config as kt_config  # KerasTuner private (1.4.x): the traceback-printing flag
from keras_tuner.src import utils as kt_utils  # KerasTuner private (1.4.x): its JSON state writer
from keras_tuner.src.distribute import utils as dist_utils  # KerasTuner private (1.4.x): distributed roles
from keras_tuner.src.engine import tuner_utils  # KerasTuner private (1.4.x): SaveBestEpoch

from losstune import population
from losstune import tensorboard_log as tb
from losstune.files import read_json, write_json_atomic, write_text_atomic
from losstune.lossspace import LossSpace
from losstune.pruning import MedianPruner, read_stopped
from losstune.stats import curve_score, mean_se

TUNERS = {
    "random": keras_tuner.RandomSearch,
    "grid": keras_tuner.GridSearch,
    "bayesian": keras_tuner.BayesianOptimization,
    "hyperband": keras_tuner.Hyperband,
}
DONE = ("COMPLETED", "FAILED", "INVALID")
TRACEBACK_FILE = "traceback.txt"
_REPEATED_FAILURES = 2  # the first trials failing with one same reason stop the search


def tuner_class(tuner):
    """The KerasTuner class for `tuner`: a name of TUNERS or a keras_tuner.Tuner subclass."""
    if isinstance(tuner, str) and tuner in TUNERS:
        return TUNERS[tuner]
    if inspect.isclass(tuner) and issubclass(tuner, keras_tuner.Tuner):
        return tuner
    raise ValueError(f"`tuner` must be one of {sorted(TUNERS)} or a keras_tuner.Tuner subclass, got {tuner!r}.")


# ------------------------------------------------------------------------------------------------------
# Distributed roles (KERASTUNER_ORACLE_IP / _PORT / KERASTUNER_TUNER_ID)
# ------------------------------------------------------------------------------------------------------
def is_worker():
    """True in a distributed worker: it trains the chief's trials and leaves the search files to the chief."""
    return dist_utils.has_chief_oracle() and not dist_utils.is_chief_oracle()


def serves_oracle():
    """True where the oracle lives: a single process, or the distributed chief."""
    return not dist_utils.has_chief_oracle() or dist_utils.is_chief_oracle()


# ------------------------------------------------------------------------------------------------------
# The tuner
# ------------------------------------------------------------------------------------------------------
@dataclass
class TrialLog:
    """What the mixin needs to log a trial: where, which space and data, and where status lines go."""

    logdir: str
    space: LossSpace
    from_logits: bool
    num_outputs: int
    class_counts: list | None
    objective: keras_tuner.Objective
    max_trials: int | None
    stream: TextIO
    score_rule: str = "best"
    prune: str | None = None  # "median": stop hopeless trials early (pruning.py)
    epochs: int = 1


def make_tuner(tuner_cls, log: TrialLog, **kwargs):
    """An instance of `tuner_cls` with losstune's mixin: baseline first, TensorBoard, one status line a trial.

    The class is made with `type()` so any KerasTuner tuner (a user's subclass too) gets the mixin.
    """
    cls = type(f"Losstune{tuner_cls.__name__}", (LosstuneTunerMixin, tuner_cls), {})
    tuner = cls(**kwargs)
    tuner.losstune_log = log
    if serves_oracle():
        _requeue_orphans(tuner.oracle)
    if serves_oracle() and not isinstance(tuner.oracle, keras_tuner.oracles.GridSearchOracle):
        # The grid oracle already starts from every default and never repeats itself.
        space = log.space
        _known_first(tuner.oracle, [space.trial_values(loss) for loss in [space.baseline_loss()] +
                                    space.recipe_losses()])
    return tuner


class LosstuneTunerMixin:
    """Mixed into a KerasTuner tuner class by `make_tuner`.

    Only KerasTuner's per-execution hook (`_configure_tensorboard_dir`) and `on_trial_end` are extended;
    training, checkpointing, resume and distribution stay KerasTuner's.
    """

    losstune_log: TrialLog | None = None

    def run_trial(self, trial, *args, **kwargs):
        """KerasTuner's executions of the trial (its repeats: seeds, folds), each scored by the search's score
        rule instead of its best epoch; the scores are kept in the trial's folder (see `Repeats`)."""
        histories = super().run_trial(trial, *args, **kwargs)
        log = self.losstune_log
        if log is None:
            return histories
        objective = self.oracle.objective
        scores = [curve_score(h.history.get(objective.name, []), log.score_rule, objective.direction)
                  for h in histories]
        Repeats(scores, log.score_rule).save(self.get_trial_dir(trial.trial_id))
        return [{objective.name: score} for score in scores]  # KerasTuner's trial score: their mean

    # KerasTuner private (1.4.x): `Tuner._configure_tensorboard_dir(callbacks, trial, execution)` is called
    # before every execution with the fit callbacks; it is the one per-execution hook a tuner has.
    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        super()._configure_tensorboard_dir(callbacks, trial, execution)
        self.hypermodel.execution = execution  # executions of one trial differ in their seed
        log = self.losstune_log
        if log is None:
            return
        trial_dir = os.path.join(log.logdir, trial.trial_id)
        execution_dir = os.path.join(trial_dir, f"execution{execution}")
        values = trial.hyperparameters.values
        space_hps = self.oracle.get_space().space
        hparams = tb.session_hparams(space_hps, {k: v for k, v in values.items() if trial.hyperparameters.is_active(k)})
        if execution == 0:
            # A trial run again after an interruption starts a clean run: TensorBoard would merge the killed
            # attempt's events with the new ones.
            shutil.rmtree(trial_dir, ignore_errors=True)
            trial_loss = log.space.trial_loss(values)
            task = log.space.task
            loss = trial_loss.build(task, class_counts=log.class_counts, from_logits=log.from_logits)
            tb.write_trial_loss(trial_dir, loss, task, log.num_outputs, log.from_logits,
                                f"Loss of {trial_loss.describe()} as a function of the {task.picture_axis}.")
        callbacks.append(keras.callbacks.TensorBoard(execution_dir, write_graph=False, profile_batch=0))
        callbacks.append(tb.session_callback(execution_dir, hparams, group=trial.trial_id))
        if log.prune == "median":
            # the baseline: every hyperparameter (the model's own too) at its default
            is_baseline = active_values(trial.hyperparameters) == active_values(self.oracle.get_space())
            callbacks.append(MedianPruner(self.project_dir, trial.trial_id, execution, self.oracle.objective,
                                          log.epochs, exempt=is_baseline))

    # --- population search ----------------------------------------------------------------------------
    def search_population(self, size, *, x, y, validation_data, epochs, batch_size, callbacks=(), verbose=0):
        """KerasTuner's search loop (as `BaseTuner.search`, keras-tuner 1.4.x) taking up to `size` trials from
        the oracle at a time and training each execution of them together (population.py).

        Every member is still a KerasTuner trial: built by the HyperModel with its seed, logged to TensorBoard,
        checkpointed at its best epoch, scored by the search's rule, reported to the oracle and ended through
        `on_trial_end`. Members whose models differ (a `build_model` with its own hyperparameters) train in
        separate populations; a round that cannot be vectorized falls back to serial trials with one line.
        """
        if dist_utils.is_chief_oracle():  # the chief serves the oracle and trains nothing
            return self.search(x=x, y=y, validation_data=validation_data, epochs=epochs, batch_size=batch_size,
                               callbacks=list(callbacks), verbose=verbose, shuffle=True)
        if serves_oracle():
            self.oracle.verbose = verbose  # as `search` does: KerasTuner's own per-trial display
        self.on_search_begin()
        while True:
            trials = self._take_trials(size)
            if not trials:
                break
            fit = dict(x=x, y=y, validation_data=validation_data, epochs=epochs, batch_size=batch_size)
            self._train_together(trials, fit, list(callbacks), verbose)
        self.on_search_end()

    def _take_trials(self, size):
        """Up to `size` new trials; each member asks under its own id, so the oracle serves them all at once
        (and, after an interruption, gives each id its unfinished trial again). Empty once the search is over."""
        status = keras_tuner.engine.trial.TrialStatus
        # KerasTuner private (1.4.x): the grid oracle steps to its next point only from an ended trial
        # (`GridSearchOracle._populate_next`, filled by `end_trial`) and answers IDLE while one runs, so a
        # population got two members, then one a round. A trial just taken is a point it can step from too; the
        # order stays the serial grid's (the oracle skips a point already taken). A distributed worker's oracle
        # is a client of the chief's: left as it is.
        grid_next = (self.oracle._populate_next
                     if isinstance(self.oracle, keras_tuner.oracles.GridSearchOracle) else None)
        trials, k = [], 0
        while k < size:
            self.pre_create_trial()
            trial = self.oracle.create_trial(f"{self.tuner_id}-member{k}")
            if trial.status == status.IDLE:  # the oracle waits for running trials (a grid's, another worker's)
                if trials:
                    break  # train those taken so far
                # None taken: ask again, as KerasTuner's own loop does. Returning none would end this search
                # (a distributed worker would quit while the chief waits for its member ids).
                time.sleep(0.2)
                continue
            if trial.status == status.RUNNING:
                trials.append(trial)
                if grid_next is not None:
                    grid_next.append(trial.trial_id)
            # STOPPED (the budget is spent): the other member ids are still asked, each is told to stop too.
            # KerasTuner private (1.4.x): a distributed chief exits only once every tuner id it has served was
            # told to stop (`oracle_chief.exit_chief` waits for `Oracle.tuner_ids` to empty); stopping at the
            # first member left the others registered and the chief waiting forever.
            k += 1
        return trials

    def _train_together(self, trials, fit, callbacks, verbose):
        objective, log = self.oracle.objective, self.losstune_log
        scores = {t.trial_id: [] for t in trials}
        failures = {}
        # One checkpoint per trial across its executions, as KerasTuner's run_trial keeps the best of them all.
        # KerasTuner private (1.4.x): the trial's checkpoint path.
        checkpoints = {t.trial_id: SaveBestAtTrainEnd(objective, self._get_checkpoint_fname(t.trial_id))
                       for t in trials}
        for execution in range(self.executions_per_trial):
            alive = [t for t in trials if t.trial_id not in failures]
            members = {}
            for t in alive:
                copied = self._deepcopy_callbacks(callbacks)  # KerasTuner private (1.4.x), as in run_trial
                self._configure_tensorboard_dir(copied, t, execution)  # sets hypermodel.execution
                copied.append(checkpoints[t.trial_id])
                model = self.hypermodel.build(t.hyperparameters)
                members[t.trial_id] = population.Member(model, copied, name=f"trial {t.trial_id}")
                members[t.trial_id].hyperparameters = t.hyperparameters  # to rebuild it if it trains alone
            train_members(self.hypermodel, list(members.values()), fit, execution, log.stream, verbose)
            for trial_id, member in members.items():
                if member.failure:
                    failures[trial_id] = member.failure
                else:
                    curve = member.history.get(objective.name, [])
                    scores[trial_id].append(curve_score(curve, log.score_rule, objective.direction))
        self.hypermodel.execution = 0
        for t in trials:
            if t.trial_id in failures:
                t.status, t.message = keras_tuner.engine.trial.TrialStatus.FAILED, failures[t.trial_id]
            else:
                Repeats(scores[t.trial_id], log.score_rule).save(self.get_trial_dir(t.trial_id))
                mean = float(np.mean(scores[t.trial_id]))
                self.oracle.update_trial(t.trial_id, {objective.name: mean}, step=0)
                t.status = keras_tuner.engine.trial.TrialStatus.COMPLETED
            self.on_trial_end(t)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        log = self.losstune_log
        if log is None:
            return
        final = self.oracle.get_trial(trial.trial_id)
        failed = final.status in ("FAILED", "INVALID")
        message = failure_reason(final.message) if failed else ""
        traceback_file = None
        if failed and final.message:
            # The whole traceback stays where the user can read it; the terminal gets one line.
            traceback_file = os.path.join(self.project_dir, f"trial_{trial.trial_id}", TRACEBACK_FILE)
            write_text_atomic(traceback_file, final.message)
        stopped = read_stopped(self.get_trial_dir(trial.trial_id))
        note = (f"stopped early at epoch {stopped['epoch'] + 1}: {stopped['value']:.4f} worse than the median "
                f"{stopped['median']:.4f} of earlier trials" if stopped else "")
        tb.end_trial(os.path.join(log.logdir, trial.trial_id), final.score, failed, message, note)
        self._status_line(final, message, traceback_file)
        self._stop_on_repeated_failure()

    def _status_line(self, trial, message, traceback_file):
        log = self.losstune_log
        if hasattr(self.oracle, "trials"):
            done = [t for t in self.oracle.trials.values() if t.status in DONE]
            scored = [t for t in done if t.status == "COMPLETED" and t.score is not None]
            best_text = "  no best yet"
            if scored:
                best = (max if log.objective.direction == "max" else min)(scored, key=lambda t: t.score)
                best_text = f"  best so far {best.score:.4f} (trial {best.trial_id})"
            # the bracket counts finished trials
            where = f"{len(done)}/{log.max_trials}" if log.max_trials else f"{len(done)}"
        else:  # a distributed worker's oracle client knows only this worker's trials: no count, no best
            where, best_text = self.tuner_id, ""
        desc = log.space.trial_loss(trial.hyperparameters.values).describe()
        repeats = Repeats.load(self.get_trial_dir(trial.trial_id))
        if trial.status == "COMPLETED" and trial.score is not None:
            outcome = f"{log.objective.name}={trial.score:.4f}"
            if repeats is not None and len(repeats.scores) > 1:
                mean, se = repeats.mean_se
                outcome += f" ± {se:.4f} ({len(repeats.scores)} repeats)"
            stopped = read_stopped(self.get_trial_dir(trial.trial_id))
            if stopped:
                outcome += (f"  STOPPED EARLY at epoch {stopped['epoch'] + 1}: {stopped['value']:.4f} worse than "
                            f"the median {stopped['median']:.4f}")
        else:
            outcome = f"{trial.status}: {message or 'no score'}"
            if traceback_file:
                outcome += f" (traceback: {traceback_file})"
        print(f"[{where}] trial {trial.trial_id}  {desc}  {outcome}{best_text}", file=log.stream, flush=True)

    def _stop_on_repeated_failure(self):
        """Stop when the first trials all failed with one same reason: the rest would fail the same way."""
        if not hasattr(self.oracle, "trials"):  # a distributed worker's oracle client: the chief decides
            return
        ended = [self.oracle.trials[tid] for tid in getattr(self.oracle, "end_order", [])]
        if len(ended) < _REPEATED_FAILURES or any(t.status == "COMPLETED" for t in ended):
            return
        reasons = {failure_reason(t.message) for t in ended}
        if len(reasons) == 1:
            where = os.path.join(self.project_dir, f"trial_{ended[0].trial_id}", TRACEBACK_FILE)
            raise RepeatedFailure(
                f"the first {len(ended)} trials all failed with the same error, so the search stopped: "
                f"{reasons.pop()} (traceback: {where})"
            )


class SaveBestAtTrainEnd(tuner_utils.SaveBestEpoch):
    """KerasTuner's best-epoch checkpoint, kept in memory at each better epoch and written once when training
    ends. A population's members improve at most epochs, and each write of a weights file costs tens of
    milliseconds (measured: 160 writes, 4.4 s of a 32-trial MLP search at population 32, against 1.7 s of
    training). Nothing is lost to an interruption: an interrupted trial is rerun from scratch on resume."""

    def on_train_begin(self, logs=None):
        self._best_weights = None

    # KerasTuner private (1.4.x): `SaveBestEpoch.on_epoch_end` calls `_save_model()` at every epoch better
    # than the best so far (every epoch when the logs lack the objective); here it only takes a copy.
    def _save_model(self):
        self._best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self._best_weights is None:
            return
        current = self.model.get_weights()
        self.model.set_weights(self._best_weights)
        # A member's own optimizer holds only the population's step count (population.py). Saved as it is, a
        # fresh model would load that count without moments (Adam's first steps then ~3x too large); saved as
        # 0, the checkpoint restores a fresh optimizer, as KerasTuner restores one from a serial checkpoint.
        optimizer = getattr(self.model, "optimizer", None)
        count = None if optimizer is None else int(keras.ops.convert_to_numpy(optimizer.iterations))
        if count is not None:
            optimizer.iterations.assign(0)
        super()._save_model()
        if count is not None:
            optimizer.iterations.assign(count)
        self.model.set_weights(current)
        self._best_weights = None


def _same_architecture(members):
    """Members grouped by architecture (layer types and weight shapes): only equal ones share a population."""
    groups = {}
    for member in members:
        model = member.model
        key = (tuple(type(layer).__name__ for layer in model.layers), tuple(tuple(v.shape) for v in model.weights))
        groups.setdefault(key, []).append(member)
    return list(groups.values())


def train_members(hypermodel, members, fit, execution, stream, verbose=0):
    """Train `members` (built by `hypermodel` for `execution`) together, one population per architecture; a
    group that cannot be vectorized trains one by one, with one line on `stream` saying why.

    `fit` holds x, y, validation_data, epochs and batch_size as given to the search (folds are cut here);
    each member carries the `hyperparameters` it was built from."""
    hypermodel.execution = execution
    x, y, validation = hypermodel.execution_data(fit["x"], fit["y"], fit["validation_data"])
    logging.getLogger("tensorflow").addFilter(_EXPECTED_RETRACING)
    for group in _same_architecture(members):
        # The population's own trace checks the layers (and refuses before touching a weight).
        reason = population.vectorizable(group[0].model, trace=False)
        if reason is None:
            try:
                population.train_population(group, x, y, validation_data=validation, epochs=fit["epochs"],
                                            batch_size=fit["batch_size"], shuffle=True,
                                            seed=hypermodel.seed + execution, verbose=1 if verbose else 0)
            except Exception as err:  # noqa: BLE001  (any engine failure: train these alone)
                reason = f"the population failed ({tuner_failure_line(err)})"
        if reason is not None:
            print(f"population: training {len(group)} trial(s) one by one: {reason}", file=stream, flush=True)
            for member in group:
                # a fresh model: a population that failed mid-training may have moved the weights
                member.model, member.history, member.failure = hypermodel.build(member.hyperparameters), {}, None
                fit_alone(hypermodel, member, fit, verbose)


class _ExpectedRetracing(logging.Filter):
    """Each population traces its own step once; TensorFlow's 'excessive retracing' warning about the new
    functions of each population says nothing the user can act on."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


_EXPECTED_RETRACING = _ExpectedRetracing()


def fit_alone(hypermodel, member, fit, verbose=0):
    """A member trained as its serial trial would be (the HyperModel's `fit`), the outcome kept on the Member."""
    try:
        history = hypermodel.fit(None, member.model, **fit, callbacks=member.callbacks, verbose=verbose,
                                 shuffle=True)
        member.history = dict(history.history)
    except keras_tuner.errors.FailedTrialError as err:
        member.failure = str(err)


def tuner_failure_line(err):
    return failure_reason(f"{type(err).__name__}: {err}")


class RepeatedFailure(RuntimeError):
    """The first trials of a search failed for one same reason; the search stopped instead of repeating it."""


def _requeue_orphans(oracle):
    """Send trials left RUNNING by a killed process, but unknown to the reloaded oracle's state, to be rerun.

    KerasTuner private (1.4.x): `Oracle.create_trial` saves the new trial's trial.json before oracle.json;
    a process killed between the two leaves a trial that `Oracle.reload` reads back as RUNNING without
    putting it in `_retry_queue`, so it would never run and the search would end one trial short.
    """
    queued = set(oracle._retry_queue) | {t.trial_id for t in oracle.ongoing_trials.values()}
    for trial_id, trial in sorted(oracle.trials.items()):
        if trial.status == keras_tuner.engine.trial.TrialStatus.RUNNING and trial_id not in queued:
            oracle._retry_queue.append(trial_id)


def _known_first(oracle, first):
    """The oracle proposes the trials of `first` (values dicts: baseline, then recipes) before its own, and
    never a trial it already ran: a repeated proposal is replaced by a random untried one.

    KerasTuner private (1.4.x): `Oracle.populate_space(trial_id)` returns the next trial's values; it is
    replaced on this oracle instance only. `Oracle._random_values()` draws untried random values (None when
    the space is exhausted); Bayesian optimization can propose the same point twice (at a range's edge).
    """
    populate = oracle.populate_space

    def populate_space(trial_id):
        tried = [active_values(t.hyperparameters) for tid, t in oracle.trials.items() if tid != trial_id]
        for values in first:
            if values not in tried:
                return {"status": keras_tuner.engine.trial.TrialStatus.RUNNING, "values": dict(values)}
        proposal = populate(trial_id)
        values = proposal.get("values")
        if proposal.get("status") != keras_tuner.engine.trial.TrialStatus.RUNNING or values is None:
            return proposal
        space = oracle.get_space()
        space.values = dict(values)
        if active_values(space) in tried:
            values = oracle._random_values()
            if values is None:  # every point of the space has been tried
                return {"status": keras_tuner.engine.trial.TrialStatus.STOPPED, "values": None}
            return {"status": keras_tuner.engine.trial.TrialStatus.RUNNING, "values": values}
        return proposal

    oracle.populate_space = populate_space


def active_values(hps):
    """The values of a KerasTuner HyperParameters' active hyperparameters (what identifies a trial)."""
    return {k: v for k, v in hps.values.items() if hps.is_active(k)}


@contextlib.contextmanager
def running():
    """Around a KerasTuner search: its files written atomically, its per-trial traceback print off, the
    pre-search heap frozen."""
    with _atomic_state_files(), _quiet_trial_tracebacks(), _frozen_heap():
        yield


@contextlib.contextmanager
def _atomic_state_files():
    """Make KerasTuner write its JSON state (oracle.json, trial.json, tuner*.json) atomically.

    KerasTuner private (1.4.x): every state file goes through `keras_tuner.src.utils.save_json(path, obj)`,
    which truncates the file and then writes it; a process killed in between leaves an empty oracle.json and
    the search cannot resume. Local paths are written to a temporary file and renamed instead.
    """
    original = kt_utils.save_json

    def save_json(path, obj):
        if "://" in str(path):  # a remote file system: KerasTuner's own writer
            return original(path, obj)
        text = json.dumps(obj)
        write_text_atomic(path, text)
        return text

    kt_utils.save_json = save_json
    try:
        yield
    finally:
        kt_utils.save_json = original


@contextlib.contextmanager
def _quiet_trial_tracebacks():
    """Keep KerasTuner from printing each failed trial's traceback on stderr.

    KerasTuner private (1.4.x): `BaseTuner._try_run_and_update_trial` calls `traceback.print_exc()` when
    `keras_tuner.src.config.DEBUG` is true, its default. The traceback is still stored in the trial (and
    written to the trial's traceback.txt by the mixin).
    """
    saved = kt_config.DEBUG
    kt_config.DEBUG = False
    try:
        yield
    finally:
        kt_config.DEBUG = saved


@contextlib.contextmanager
def _frozen_heap():
    """Keep what exists before the search (TensorFlow, Keras, the data) out of the garbage collector's scans.

    KerasTuner runs two full collections before every trial (`clear_session`'s and its own); each walks the
    whole TensorFlow heap, about 0.35 s per collection on 2 cores. Frozen objects are still freed when their
    reference count drops; only cycles among them wait for `gc.unfreeze()` at the end. A caller that froze the
    heap itself is left alone. No collection runs before the freeze (a full one takes 0.36 s there): what is
    already garbage is only kept until `gc.unfreeze()`.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# ------------------------------------------------------------------------------------------------------
# Reading a search back from KerasTuner's files
# ------------------------------------------------------------------------------------------------------
@dataclass
class Repeats:
    """The scores of a trial's repeats (seeds, folds; racing adds more), as `trial_<id>/repeats.json`."""

    scores: list
    rule: str

    FILE = "repeats.json"

    @property
    def mean_se(self):
        """(mean, standard error); NaN when a repeat failed: a loss that diverges on some seed cannot win."""
        if not self.scores or any(s != s for s in self.scores):
            return float("nan"), None
        return mean_se(self.scores)

    def save(self, trial_dir):
        write_json_atomic(os.path.join(trial_dir, self.FILE),
                          {"scores": [None if s != s else float(s) for s in self.scores], "rule": self.rule})

    @classmethod
    def load(cls, trial_dir):
        path = os.path.join(trial_dir, cls.FILE)
        if not os.path.isfile(path):
            return None
        data = read_json(path)
        return cls([float("nan") if s is None else float(s) for s in data["scores"]], data["rule"])


@dataclass(frozen=True)
class StoredTrial:
    """One `trial_<id>/trial.json` as KerasTuner wrote it."""

    trial_id: str
    values: dict
    status: str
    score: float | None
    message: str
    repeats: Repeats | None = None  # losstune's per-repeat scores, when the search wrote them
    stopped: dict | None = None  # where the median rule stopped it (pruning.read_stopped)


def stored_trials(project_dir):
    """Every trial of the search in `project_dir`, in trial-id order.

    KerasTuner private (1.4.x): the layout `<project_dir>/trial_<id>/trial.json` with keys trial_id,
    hyperparameters.values, status, score and message (`Trial.get_state`).
    """
    trials = []
    for name in sorted(os.listdir(project_dir)):
        path = os.path.join(project_dir, name, "trial.json")
        if not (name.startswith("trial_") and os.path.isfile(path)):
            continue
        with open(path, encoding="utf-8") as fh:
            state = json.load(fh)
        score = state.get("score")
        trials.append(StoredTrial(
            trial_id=state["trial_id"], values=state.get("hyperparameters", {}).get("values", {}),
            status=state.get("status", "UNKNOWN"), score=None if score is None else float(score),
            message=state.get("message") or "", repeats=Repeats.load(os.path.join(project_dir, name)),
            stopped=read_stopped(os.path.join(project_dir, name)),
        ))
    return trials


def trial_hyperparameters(project_dir, trial_id):
    """KerasTuner HyperParameters holding a finished trial's values (to rebuild its model)."""
    with open(os.path.join(project_dir, f"trial_{trial_id}", "trial.json"), encoding="utf-8") as fh:
        state = json.load(fh)
    return keras_tuner.HyperParameters.from_config(state["hyperparameters"])


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Keras wraps errors raised inside a layer's call: a header line, the real error, then an argument listing.
_KERAS_CALL_HEADER = re.compile(r"^Exception encountered when calling .*\.$")
_KERAS_ARGUMENTS = re.compile(r"^Arguments received by ")


def failure_reason(message):
    """The one line that says why a trial failed, from KerasTuner's stored traceback (or a plain message).

    The exception text follows the last stack frame; its class name is dropped, and for Keras's wrapped call
    errors the header ("Exception encountered when calling ...") and the argument listing are skipped, so
    what is left is the line that says what is incompatible.
    """
    lines = _ANSI.sub("", message or "").strip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    if frames:
        start = frames[-1] + 1
        while start < len(lines) and lines[start].startswith("    "):
            start += 1  # the frame's source line and its ^^^ markers
        lines = lines[start:]
    text = []
    for line in lines:
        if _KERAS_ARGUMENTS.match(line):
            break
        text.append(line.strip())
    if text:
        head, sep, tail = text[0].partition(": ")
        if sep and head.replace(".", "").replace("_", "").isalnum():
            text[0] = tail  # "ValueError: ..." -> "..."
    text = [line for line in text if line and not _KERAS_CALL_HEADER.match(line)]
    return text[0] if text else ""
