"""losstune.search(): a KerasTuner search over losses, checked before it starts and logged to TensorBoard."""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import math
import os
import sys
import traceback

import keras
import keras_tuner
import numpy as np
from keras_tuner.src import config as kt_config
from keras_tuner.src.distribute import utils as dist_utils

from losstune import config as config_module
from losstune import data as data_module
from losstune import objectives
from losstune import tensorboard as tb
from losstune.hypermodel import LossHyperModel
from losstune.result import CONTEXT_FILE, SearchResult, TrialRecord, failure_reason
from losstune.space import LossSpace

TUNERS = {
    "random": keras_tuner.RandomSearch,
    "grid": keras_tuner.GridSearch,
    "bayesian": keras_tuner.BayesianOptimization,
    "hyperband": keras_tuner.Hyperband,
}
_DONE = ("COMPLETED", "FAILED", "INVALID")
_REPEATED_FAILURES = 2  # the first trials failing with one same reason stop the search
TRACEBACK_FILE = "traceback.txt"
# Two-sided 95% Student-t quantiles by degrees of freedom (for the confirmation's confidence interval).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _tuner_class(tuner):
    if isinstance(tuner, str):
        if tuner not in TUNERS:
            raise ValueError(f"`tuner` must be one of {sorted(TUNERS)} or a keras_tuner.Tuner subclass, got {tuner!r}.")
        return TUNERS[tuner]
    if inspect.isclass(tuner) and issubclass(tuner, keras_tuner.Tuner):
        return tuner
    raise ValueError(f"`tuner` must be one of {sorted(TUNERS)} or a keras_tuner.Tuner subclass, got {tuner!r}.")


class _SearchLog:
    """What the tuner mixin needs to log a trial: where, which space, how to describe it."""

    def __init__(self, logdir, space, task, from_logits, num_outputs, class_counts, objective, max_trials, stream):
        self.logdir = logdir
        self.space = space
        self.task = task
        self.from_logits = from_logits
        self.num_outputs = num_outputs
        self.class_counts = class_counts
        self.objective = objective
        self.max_trials = max_trials
        self.stream = stream


class LosstuneTunerMixin:
    """Mixed into a KerasTuner tuner class by `search()`: baseline first, TensorBoard, a status line per trial.

    Only KerasTuner's per-execution hook (`_configure_tensorboard_dir`) and `on_trial_end` are extended;
    training, checkpointing, resume and distribution stay KerasTuner's.
    """

    _losstune = None

    def _losstune_start(self, log: _SearchLog):
        self._losstune = log
        serves_oracle = not dist_utils.has_chief_oracle() or dist_utils.is_chief_oracle()
        if serves_oracle and not isinstance(self.oracle, keras_tuner.oracles.GridSearchOracle):
            _baseline_first(self.oracle)  # the grid oracle already starts from every default

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        super()._configure_tensorboard_dir(callbacks, trial, execution)
        self.hypermodel.execution = execution  # executions of one trial differ in their seed
        log = self._losstune
        if log is None:
            return
        trial_dir = os.path.join(log.logdir, trial.trial_id)
        execution_dir = os.path.join(trial_dir, f"execution{execution}")
        values = trial.hyperparameters.values
        space_hps = self.oracle.get_space().space
        hparams = tb.session_hparams(space_hps, {k: v for k, v in values.items() if trial.hyperparameters.is_active(k)})
        if execution == 0:
            trial_loss = log.space.trial_loss(values)
            loss = trial_loss.build(log.task, class_counts=log.class_counts, from_logits=log.from_logits)
            tb.write_trial_loss(trial_dir, loss, log.task, log.num_outputs, log.from_logits,
                                  _picture_description(log.task, trial_loss))
        callbacks.append(keras.callbacks.TensorBoard(execution_dir, write_graph=False, profile_batch=0))
        callbacks.append(tb.session_callback(execution_dir, hparams, group=trial.trial_id))

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        log = self._losstune
        if log is None:
            return
        final = self.oracle.get_trial(trial.trial_id)
        failed = final.status in ("FAILED", "INVALID")
        message = failure_reason(final.message) if failed else ""
        traceback_file = None
        if failed and final.message:
            # The whole traceback stays where the user can read it; the terminal gets one line.
            traceback_file = os.path.join(self.project_dir, f"trial_{trial.trial_id}", TRACEBACK_FILE)
            config_module.write_text_atomic(traceback_file, final.message)
        tb.end_trial(os.path.join(log.logdir, trial.trial_id), final.score, failed, message)
        self._status_line(final, message, traceback_file)
        self._stop_on_repeated_failure()

    def _status_line(self, trial, message, traceback_file):
        log = self._losstune
        trials = list(self.oracle.trials.values()) if hasattr(self.oracle, "trials") else [trial]
        done = [t for t in trials if t.status in _DONE]
        scored = [t for t in done if t.status == "COMPLETED" and t.score is not None]
        best = None
        if scored:
            pick = max if log.objective.direction == "max" else min
            best = pick(scored, key=lambda t: t.score)
        loss = log.space.trial_loss(trial.hyperparameters.values)
        desc = TrialRecord(trial.trial_id, loss.family, loss.params, loss.power, None, "").describe_loss()
        if trial.status == "COMPLETED" and trial.score is not None:
            outcome = f"{log.objective.name}={trial.score:.4f}"
        else:
            outcome = f"{trial.status}: {message or 'no score'}"
            if traceback_file:
                outcome += f" (traceback: {traceback_file})"
        best_text = f"best so far {best.score:.4f} (trial {best.trial_id})" if best else "no best yet"
        total = f"/{log.max_trials}" if log.max_trials else ""
        # Trials are named by their id only; the bracket counts finished trials.
        print(f"[{len(done)}{total}] trial {trial.trial_id}  {desc}  {outcome}  {best_text}", file=log.stream,
              flush=True)

    def _stop_on_repeated_failure(self):
        """Stop when the first trials all failed with one same reason: the rest would fail the same way."""
        if not hasattr(self.oracle, "trials"):
            return
        ended = [self.oracle.trials[tid] for tid in getattr(self.oracle, "end_order", [])]
        if len(ended) < _REPEATED_FAILURES or any(t.status == "COMPLETED" for t in ended):
            return
        reasons = {failure_reason(t.message) for t in ended}
        if len(reasons) == 1:
            raise RepeatedFailure(
                f"the first {len(ended)} trials all failed with the same error, so the search stopped: "
                f"{reasons.pop()} (traceback: {os.path.join(self.project_dir, f'trial_{ended[0].trial_id}', TRACEBACK_FILE)})"
            )


class RepeatedFailure(RuntimeError):
    """The first trials of a search failed for one same reason; the search stopped instead of repeating it."""


def _picture_description(task, trial_loss):
    axis = {
        "pairs": "distance (0 to 3); blue: similar pairs (y=1), red: dissimilar pairs (y=0)",
        "regression": "residual y_pred - y_true (-3 to 3)",
    }.get(task, "predicted probability of the true class (0.01 to 0.99)")
    return f"Loss of {trial_loss.family} {trial_loss.params} as a function of the {axis}."


def _baseline_first(oracle):
    """Make the oracle's first trial the baseline: every hyperparameter at its default (see LossSpace)."""
    populate = oracle.populate_space

    def populate_space(trial_id):
        space = oracle.get_space()
        defaults = {hp.name: hp.default for hp in space.space if space.is_active(hp)}
        tried = any(t.hyperparameters.values == defaults for tid, t in oracle.trials.items() if tid != trial_id)
        if not tried:
            return {"status": keras_tuner.engine.trial.TrialStatus.RUNNING, "values": defaults}
        return populate(trial_id)

    oracle.populate_space = populate_space


def _split(x, y, fraction, seed):
    n = data_module.num_examples(x, "x")
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(n * (1 - fraction))))
    if cut >= n:
        raise ValueError(f"`x` has {n} examples: too few to hold out a validation split; pass `validation_data`.")

    def take(a, idx):
        if isinstance(a, dict):
            return {k: v[idx] for k, v in a.items()}
        if isinstance(a, (list, tuple)):
            return type(a)(v[idx] for v in a)
        return a[idx]

    return take(x, order[:cut]), take(y, order[:cut]), take(x, order[cut:]), take(y, order[cut:])


def _dataset_head(dataset):
    return next(iter(dataset.take(1).as_numpy_iterator()))[0]


def _head(x, k=8):
    if isinstance(x, dict):
        return {key: v[:k] for key, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(v[:k] for v in x)
    return x[:k]


def _probe_model(hypermodel, heads):
    """Build the baseline's model once and run it on a few examples of each of `heads` ({argument: x}).

    Returns the outputs on the first head and the last layer's activation name. Features the model cannot
    take (a missing column, a wrong shape) are refused here, naming the argument, before anything trains.
    """
    hp = keras_tuner.HyperParameters()
    hypermodel.space.declare(hp)
    model = hypermodel.user_model(hp)
    outputs = []
    for name, x_head in heads.items():
        try:
            out = model(x_head, training=False)
        except Exception as err:  # noqa: BLE001  (any error of the forward pass is the input's fault here)
            expects = getattr(model, "input_shape", None)
            raise ValueError(
                f"`{name}`: the model cannot take these features ({data_module.describe_shapes(x_head)}); "
                + (f"it expects input shape {expects}: " if expects is not None else "")
                + failure_reason(traceback.format_exc() if not str(err) else str(err))
            ) from None
        outputs.append(np.asarray(keras.ops.convert_to_numpy(out)))
    last = getattr(model.layers[-1], "activation", None) if model.layers else None
    return outputs[0], getattr(last, "__name__", None)


def search(
    build_model,
    x,
    y=None,
    *,
    validation_data=None,
    space="imbalanced_multiclass",
    objective=None,
    tuner="bayesian",
    max_trials=20,
    epochs=10,
    executions_per_trial=1,
    seed=0,
    directory="runs/losstune",
    project_name="search",
    overwrite=False,
    optimizer="adam",
    metrics=None,
    callbacks=None,
    from_logits=False,
    batch_size=32,
    confirm_seeds=0,
    verbose=0,
    stream=None,
):
    """Search the loss for `build_model` on (x, y) and return a `SearchResult`.

    Args:
        build_model: `callable(hp) -> keras.Model` (uncompiled is fine; it may declare its own
            hyperparameters), or a `keras.Model` cloned per trial with the same initial weights.
        x, y: numpy arrays (x may be a list/tuple/dict of arrays), or a `tf.data.Dataset` of
            (features, labels) batches as x with y=None.
        validation_data: (x_val, y_val) or a `tf.data.Dataset`; default: 20% of (x, y), held out with `seed`.
        space: a bundled space name (`losstune.spaces.available()`), a path to a `.toml` file, or a LossSpace.
        objective: None for the task's default (multiclass: val_macro_f1; binary and multilabel: val_pr_auc;
            pairs: val_pair_auc; regression: val_mae), a metric name, or a `keras_tuner.Objective`.
            An objective that depends on the loss (val_loss when trials differ in their loss) is refused.
        tuner: "random", "grid", "bayesian", "hyperband" or a `keras_tuner.Tuner` subclass.
        max_trials: trials in all, the baseline included (Hyperband sets its own count from `epochs`).
        epochs: epochs per trial (Hyperband: the largest budget).
        executions_per_trial: trainings per trial with seeds seed, seed+1, ...; the trial's score is their mean.
        seed: initial weights, data order and the tuner's sampling all follow it.
        directory, project_name: the search lives in `directory/project_name`; run again to resume.
        overwrite: start afresh instead of resuming.
        optimizer, metrics, callbacks, batch_size, verbose: as in `model.compile` / `model.fit`.
        from_logits: whether the model outputs logits.
        confirm_seeds: after the search, retrain the best and the baseline loss with this many fresh seeds
            and report means, spreads and a 95% confidence interval of the difference (0: skip; else >= 2).
        stream: where the one-line status per trial goes (default: stdout).
    """
    stream = stream or sys.stdout
    max_trials = _positive_int("max_trials", max_trials)
    epochs = _positive_int("epochs", epochs)
    executions_per_trial = _positive_int("executions_per_trial", executions_per_trial)
    batch_size = _positive_int("batch_size", batch_size)
    seed = _positive_int("seed", seed, minimum=0)
    if confirm_seeds != 0:
        confirm_seeds = _positive_int("confirm_seeds", confirm_seeds, minimum=2)
    tuner_cls = _tuner_class(tuner)
    space = LossSpace.coerce(space)
    task = space.task

    # ---- data: checked before anything trains ---------------------------------------------------------
    if data_module.is_dataset(x):
        if y is not None:
            raise ValueError("`y` must be None when `x` is a tf.data.Dataset (it yields the labels).")
        if validation_data is None:
            raise ValueError("`validation_data` is required when `x` is a tf.data.Dataset.")
        y_train = data_module.labels_from_dataset(x, "x")
        x_head = _dataset_head(x)
        fit_data = {"x": x}
    else:
        if y is None:
            raise ValueError("`y` is required when `x` is an array (pass the labels).")
        x, y = data_module.check_pair(x, y, "x", "y")
        if validation_data is None:
            x, y, x_val, y_val = _split(x, y, 0.2, seed)
            validation_data = (x_val, y_val)
        y_train, x_head, fit_data = y, _head(x), {"x": x, "y": y, "batch_size": batch_size}
    if data_module.is_dataset(validation_data):
        y_val = data_module.labels_from_dataset(validation_data, "validation_data")
        x_val_head = _dataset_head(validation_data)
    else:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("`validation_data` must be (x_val, y_val) or a tf.data.Dataset.")
        validation_data = data_module.check_pair(*validation_data, "validation_data[0]", "validation_data[1]")
        y_val, x_val_head = validation_data[1], _head(validation_data[0])

    hypermodel = LossHyperModel(build_model, space, class_counts=None, from_logits=from_logits,
                                optimizer=optimizer, metrics=metrics, seed=seed)
    outputs, last_activation = _probe_model(hypermodel, {"x": x_head, "validation_data": x_val_head})
    num_outputs = outputs.shape[-1] if outputs.ndim > 1 else 1
    data_module.check_outputs(outputs, task, from_logits, last_activation)
    class_counts = data_module.check_labels(y_train, task, num_outputs, "y")
    data_module.check_labels(y_val, task, num_outputs, "validation_data (labels)")
    hypermodel.class_counts = class_counts
    objective = objectives.resolve(objective, task, hypermodel.metric_names(num_outputs), space.loss_is_tuned)

    # ---- the tuner -------------------------------------------------------------------------------------
    project_dir = os.path.join(directory, project_name)
    logdir = os.path.join(project_dir, "logs")
    tuner_kwargs = dict(
        hypermodel=hypermodel, objective=objective, directory=directory, project_name=project_name,
        overwrite=overwrite, executions_per_trial=executions_per_trial,
        seed=seed + 1,  # KerasTuner treats seed 0 as "unseeded"
        max_consecutive_failed_trials=max_trials + 1,  # failed trials are recorded; the search goes on
    )
    if issubclass(tuner_cls, keras_tuner.Hyperband):
        tuner_kwargs["max_epochs"] = epochs
    else:
        tuner_kwargs["max_trials"] = max_trials
    cls = type(f"Losstune{tuner_cls.__name__}", (LosstuneTunerMixin, tuner_cls), {})
    context = {"space": space.to_dict(), "task": task, "objective": {"name": objective.name,
               "direction": objective.direction}, "class_counts": class_counts, "from_logits": bool(from_logits),
               "max_trials": max_trials, "epochs": epochs, "seed": seed, "logdir": "logs"}
    _check_resumable(project_dir, context, overwrite)
    tuner_obj = cls(**tuner_kwargs)
    log = _SearchLog(logdir, space, task, bool(from_logits), num_outputs, class_counts, objective,
                     None if issubclass(tuner_cls, keras_tuner.Hyperband) else max_trials, stream)
    tuner_obj._losstune_start(log)
    is_worker = dist_utils.has_chief_oracle() and not dist_utils.is_chief_oracle()
    if not is_worker:
        config_module.write_json_atomic(os.path.join(project_dir, CONTEXT_FILE), context)
        tb.write_hparams_config(logdir, tuner_obj.oracle.get_space().space, objective.name)

    with _frozen_heap(), _quiet_trial_tracebacks():
        tuner_obj.search(**fit_data, validation_data=validation_data, epochs=epochs,
                         callbacks=list(callbacks or []), verbose=verbose, shuffle=True)

    result = SearchResult.from_directory(project_dir)
    if is_worker:
        return result
    if result.best_trial is None:
        raise RuntimeError(
            f"every trial of the search failed, so there is no best loss. " + "; ".join(
                f"trial {t.trial_id} ({t.describe_loss()}): {t.message or t.status}" for t in result.trials[:5])
        )
    if confirm_seeds:
        context["confirmation"] = confirm(hypermodel, result, fit_data, validation_data, epochs, confirm_seeds,
                                          seed, verbose)
        config_module.write_json_atomic(os.path.join(project_dir, CONTEXT_FILE), context)
        result = SearchResult.from_directory(project_dir)
    tb.write_summary(logdir, result.to_markdown(), result.best_score, result.baseline_score)
    result.export()
    return result


@contextlib.contextmanager
def _frozen_heap():
    """Keep what exists before the search (TensorFlow, Keras, the data) out of the garbage collector's scans.

    KerasTuner runs two full collections before every trial (`clear_session`'s and its own); each walks the
    whole TensorFlow heap, about 0.35 s per collection on 2 cores. Frozen objects are still freed when their
    reference count drops; only cycles among them wait for `gc.unfreeze()` at the end. A caller that froze the
    heap itself is left alone.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def _quiet_trial_tracebacks():
    """Keep KerasTuner from printing each failed trial's traceback on stderr.

    KerasTuner 1.4.x (`BaseTuner._try_run_and_update_trial`) calls `traceback.print_exc()` when the
    private flag `keras_tuner.src.config.DEBUG` is true, which is its default. The traceback is still stored
    in the trial (and written by losstune to the trial's traceback.txt). tests/test_kerastuner_internals.py
    fails if the flag disappears.
    """
    saved = kt_config.DEBUG
    kt_config.DEBUG = False
    try:
        yield
    finally:
        kt_config.DEBUG = saved


def _check_resumable(project_dir, context, overwrite):
    path = os.path.join(project_dir, CONTEXT_FILE)
    if overwrite or not os.path.isfile(path):
        return
    saved = config_module.read_config(path)
    for key in ("space", "task", "objective", "from_logits"):
        if saved.get(key) != context[key]:
            raise ValueError(
                f"{project_dir} holds a search with a different `{key}` ({saved.get(key)!r}); resume it with "
                f"the same arguments, pass overwrite=True to start afresh, or use another directory."
            )


def _trial_hp(result, record):
    """KerasTuner HyperParameters holding a finished trial's values (to rebuild its model)."""
    with open(os.path.join(result.directory, f"trial_{record.trial_id}", "trial.json"), encoding="utf-8") as fh:
        state = json.load(fh)
    return keras_tuner.HyperParameters.from_config(state["hyperparameters"])


def confirm(hypermodel, result, fit_data, validation_data, epochs, seeds, seed, verbose=0):
    """Retrain best and baseline with `seeds` fresh seeds; paired difference with a 95% t interval."""
    name, direction = result.objective["name"], result.objective["direction"]
    pick = max if direction == "max" else min
    scores = {"best": [], "baseline": []}
    runs = {"best": result.best_trial, "baseline": result.baseline_trial}
    if runs["baseline"] is None:
        raise RuntimeError("confirm_seeds: the baseline trial did not complete, so there is nothing to compare.")
    for k in range(seeds):
        for label, record in runs.items():
            hypermodel.execution = 1000 + k  # seeds the search never used
            hp = _trial_hp(result, record)
            model = hypermodel.build(hp)
            history = hypermodel.fit(hp, model, **fit_data, validation_data=validation_data, epochs=epochs,
                                     verbose=verbose, shuffle=True)
            scores[label].append(float(pick(history.history[name])))
    hypermodel.execution = 0
    return {"seeds": seeds, "objective": name, "best_scores": scores["best"], "baseline_scores": scores["baseline"],
            **paired_difference(scores["best"], scores["baseline"])}


def paired_difference(best, baseline):
    """Means, spreads and a 95% Student-t confidence interval of the paired difference best - baseline."""
    best, base = np.asarray(best, dtype="float64"), np.asarray(baseline, dtype="float64")
    diff = best - base
    n = len(diff)
    df = n - 1
    t = _T975[max(d for d in _T975 if d <= df)] if df <= 30 else 1.96
    half = t * float(diff.std(ddof=1)) / math.sqrt(n)
    return {
        "best_mean": float(best.mean()), "best_std": float(best.std(ddof=1)),
        "baseline_mean": float(base.mean()), "baseline_std": float(base.std(ddof=1)),
        "diff_mean": float(diff.mean()), "diff_ci": [float(diff.mean() - half), float(diff.mean() + half)],
    }
