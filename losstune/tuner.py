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
import os
import shutil
import time
from dataclasses import dataclass
from typing import Callable, TextIO

import keras
import keras_tuner
import numpy as np
from keras_tuner.src import config as kt_config  # KerasTuner private (1.4.x): the traceback-printing flag
from keras_tuner.src import utils as kt_utils  # KerasTuner private (1.4.x): its JSON state writer
from keras_tuner.src.distribute import utils as dist_utils  # KerasTuner private (1.4.x): distributed roles
from keras_tuner.src.engine import tuner_utils  # KerasTuner private (1.4.x): SaveBestEpoch

from losstune import layout, population, progress
from losstune.predictions import ValidationPredictions
from losstune import tensorboard_log as tb
from losstune.failures import check_repeated_failure, failure_reason
from losstune.files import write_text_atomic
from losstune.lossspace import LossSpace
from losstune.pruning import HalvingPruner, MedianPruner
from losstune.retrain import Candidate, Scoring, retrain_executions

TUNERS = {
    "random": keras_tuner.RandomSearch,
    "grid": keras_tuner.GridSearch,
    "bayesian": keras_tuner.BayesianOptimization,
    "hyperband": keras_tuner.Hyperband,
}


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
def random_trials_first(tuner):
    """How many trials the tuner's oracle draws at random before its model guides it: KerasTuner 1.4.x's
    Bayesian oracle samples at random until `num_initial_points` trials completed, by default
    max(3 x the number of hyperparameters, 3) (`BayesianOptimizationOracle.populate_space`); 0 for other
    oracles and for a distributed worker's client oracle, which do not say."""
    oracle = tuner.oracle
    if not isinstance(oracle, keras_tuner.oracles.BayesianOptimizationOracle):
        return 0
    return oracle.num_initial_points or max(3 * len(oracle.hyperparameters.space), 3)


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
    scoring: Scoring | None = None  # the search's score rule (retrain.Scoring); default: KerasTuner's best epoch
    prune: str | None = None  # "median" or "halving": stop hopeless trials early (pruning.py)
    epochs: int = 1
    # execution -> (x_val, y_val) it validates on, or None: its predictions are kept (predictions.py)
    validation_for: Callable[[int], tuple | None] | None = None

    def __post_init__(self):
        if self.scoring is None:
            self.scoring = Scoring(self.objective.name, self.objective.direction, "best")


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
        scores = [log.scoring.score(h.history) for h in histories]
        eces = [log.scoring.calibration_score(h.history) for h in histories]
        layout.Repeats(scores, log.scoring.rule, eces).save(self.get_trial_dir(trial.trial_id))
        return [{log.objective.name: score} for score in scores]  # KerasTuner's trial score: their mean

    # KerasTuner private (1.4.x): `Tuner._configure_tensorboard_dir(callbacks, trial, execution)` is called
    # before every execution with the fit callbacks; it is the one per-execution hook a tuner has.
    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        super()._configure_tensorboard_dir(callbacks, trial, execution)
        # KerasTuner's own loop builds and fits with `build(hp)` / `fit(hp, model, ...)`, which cannot name the
        # execution: this hook, called before each one, is where the hypermodel learns it (its seed and fold).
        self.hypermodel.execution = execution
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
        validation = log.validation_for(execution) if log.validation_for else None
        if validation is not None:
            path = layout.predictions_file(self.get_trial_dir(trial.trial_id), execution)
            callbacks.append(ValidationPredictions(path, *validation))
        if log.prune:
            # the baseline: every hyperparameter (the model's own too) at its default
            is_baseline = active_values(trial.hyperparameters) == active_values(self.oracle.get_space())
            pruner = MedianPruner if log.prune == "median" else HalvingPruner
            callbacks.append(pruner(self.project_dir, trial.trial_id, execution, self.oracle.objective,
                                    log.epochs, exempt=is_baseline))

    # --- population search ----------------------------------------------------------------------------
    def search_population(self, size, *, x, y=None, validation_data, epochs, batch_size=None, shuffle=True,
                          callbacks=(), verbose=0):
        """KerasTuner's search loop (as `BaseTuner.search`, keras-tuner 1.4.x) taking up to `size` trials from
        the oracle at a time and training each execution of them together (population.py).

        Every member is still a KerasTuner trial: built by the HyperModel with its seed, logged to TensorBoard,
        checkpointed at its best epoch, scored by the search's rule, reported to the oracle and ended through
        `on_trial_end`. Members whose models differ (a `build_model` with its own hyperparameters) train in
        separate populations; a round that cannot be vectorized falls back to serial trials with one line.
        """
        if dist_utils.is_chief_oracle():  # the chief serves the oracle and trains nothing
            return self.search(x=x, y=y, validation_data=validation_data, epochs=epochs, batch_size=batch_size,
                               callbacks=list(callbacks), verbose=verbose, shuffle=shuffle)
        if serves_oracle():
            self.oracle.verbose = verbose  # as `search` does: KerasTuner's own per-trial display
        self.on_search_begin()
        while True:
            trials = self._take_trials(size)
            if not trials:
                break
            fit = dict(x=x, y=y, validation_data=validation_data, epochs=epochs, batch_size=batch_size,
                       shuffle=shuffle)
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
        """Every execution of `trials` (KerasTuner's executions_per_trial: seeds, folds) as one retraining of
        them together; each trial then ends as KerasTuner's `run_trial` would end it."""
        log = self.losstune_log
        records, failures = {t.trial_id: layout.Repeats([], log.scoring.rule) for t in trials}, {}
        # One checkpoint per trial across its executions, as KerasTuner's run_trial keeps the best of them all.
        # KerasTuner private (1.4.x): the trial's checkpoint path.
        checkpoints = {t.trial_id: SaveBestAtTrainEnd(self.oracle.objective, self._get_checkpoint_fname(t.trial_id))
                       for t in trials}
        # Executions that train at once (folds or repeats as members): one checkpoint object cannot follow
        # several trainings at the same time, so the first execution's keeps the trial's.
        concurrent = population.executions_together(self.hypermodel, fit)
        runs = []
        for execution in range(self.executions_per_trial):
            candidates = []
            for t in trials:
                copied = self._deepcopy_callbacks(callbacks)  # KerasTuner private (1.4.x), as in run_trial
                self._configure_tensorboard_dir(copied, t, execution)
                keep = [checkpoints[t.trial_id]] if execution == 0 or not concurrent else []
                candidates.append(Candidate(f"trial {t.trial_id}", t.hyperparameters, copied + keep))
            runs.append((execution, candidates))
        outcome_lists = retrain_executions(self.hypermodel, runs, fit, scoring=log.scoring, together=True,
                                           stream=log.stream, verbose=verbose)
        for outcomes in outcome_lists:
            for t, outcome in zip(trials, outcomes):
                if outcome.failure:
                    failures.setdefault(t.trial_id, outcome.failure)
                else:
                    records[t.trial_id].add(outcome.score, outcome.ece)
        for t in trials:
            if t.trial_id in failures:
                t.status, t.message = layout.FAILED, failures[t.trial_id]
            else:
                records[t.trial_id].save(self.get_trial_dir(t.trial_id))
                self.oracle.update_trial(t.trial_id, {log.objective.name: float(np.mean(records[t.trial_id].scores))},
                                         step=0)
                t.status = layout.COMPLETED
            self.on_trial_end(t)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        log = self.losstune_log
        if log is None:
            return
        final = self.oracle.get_trial(trial.trial_id)
        failed = final.status in layout.NOT_SCORED
        message = failure_reason(final.message) if failed else ""
        traceback_file = None
        if failed and final.message:
            # The whole traceback stays where the user can read it; the terminal gets one line.
            traceback_file = layout.traceback_file(self.project_dir, trial.trial_id)
            write_text_atomic(traceback_file, final.message)
        trial_dir = self.get_trial_dir(trial.trial_id)
        stopped = layout.read_stopped(trial_dir)
        tb.end_trial(os.path.join(log.logdir, trial.trial_id), final.score, failed, message,
                     progress.stopped_note(stopped))
        # A distributed worker's oracle client has no `trials`: it knows only its own; the chief decides.
        known = hasattr(self.oracle, "trials")
        ended = [t for t in self.oracle.trials.values() if t.status in layout.ENDED] if known else None
        line = progress.status_line(
            final, log.space.trial_loss(final.hyperparameters.values).describe(), log.objective, ended=ended,
            max_trials=log.max_trials, worker=self.tuner_id, repeats=layout.Repeats.load(trial_dir),
            stopped=stopped, message=message, traceback_file=traceback_file)
        print(line, file=log.stream, flush=True)
        if known:
            check_repeated_failure([self.oracle.trials[tid] for tid in getattr(self.oracle, "end_order", [])],
                                   self.project_dir)


class SaveBestAtTrainEnd(tuner_utils.SaveBestEpoch):
    """KerasTuner's best-epoch checkpoint, kept in memory at each better epoch and written once when training
    ends. A population's members improve at most epochs, and each write of a weights file costs more than the
    epoch's training of a small model (benchmarks/README.md). Nothing is lost to an interruption: an
    interrupted trial is rerun from scratch on resume."""

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
        # fresh model would load that count without moments (Adam's first steps then far too large); saved as
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
    whole TensorFlow heap (benchmarks/README.md has the cost). Frozen objects are still freed when their
    reference count drops; only cycles among them wait for `gc.unfreeze()` at the end. A caller that froze the
    heap itself is left alone. No collection runs before the freeze (it would cost as much as one of
    KerasTuner's): what is already garbage is only kept until `gc.unfreeze()`.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
