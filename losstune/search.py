"""losstune.search(): a KerasTuner search over losses, checked before it starts and logged to TensorBoard.

`search()` reads as its steps: check the arguments and data, plan the search (model probe, class counts,
objective, the search record), run the tuner, confirm the pick over fresh seeds if asked, and report.
"""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass

import keras
import keras_tuner
import numpy as np

from losstune import inputs, objectives
from losstune import tensorboard_log as tb
from losstune import tuner as tuner_module
from losstune.hypermodel import LossHyperModel
from losstune.lossspace import LossSpace
from losstune.result import SearchContext, SearchResult
from losstune.population import Member, auto_size, vectorizable
from losstune.pruning import PRUNERS
from losstune.stats import SCORE_RULES, curve_score, paired_difference


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


@dataclass
class _Data:
    """The checked training and validation data, as `fit` takes them, and what the checks need."""

    fit: dict  # x, y, batch_size (arrays) or x (a tf.data.Dataset)
    validation: object  # (x_val, y_val) or a tf.data.Dataset
    y_train: np.ndarray
    y_val: np.ndarray


def _check_data(x, y, validation_data, batch_size, seed, folds):
    """Shapes, values and pairing of the training and validation data (labels are checked in `_plan`)."""
    if folds:
        if validation_data is not None:
            raise ValueError("`validation_data` and `folds` exclude each other: with folds=k every trial "
                             "validates on the held-out fold of (x, y); pass one of them.")
        if inputs.is_dataset(x):
            raise ValueError("`folds` needs x and y as arrays to cut the folds from, got a tf.data.Dataset as `x`.")
        if y is None:
            raise ValueError("`y` is required when `x` is an array (pass the labels).")
        x, y = inputs.check_pair(x, y, "x", "y")
        # The probe and the label checks see one fold's validation part; training cuts each fold itself.
        return _Data({"x": x, "y": y, "batch_size": batch_size}, None, y, y)
    if inputs.is_dataset(x):
        if y is not None:
            raise ValueError("`y` must be None when `x` is a tf.data.Dataset (it yields the labels).")
        if validation_data is None:
            raise ValueError("`validation_data` is required when `x` is a tf.data.Dataset.")
        fit, y_train = {"x": x}, inputs.labels_from_dataset(x, "x")
    else:
        if y is None:
            raise ValueError("`y` is required when `x` is an array (pass the labels).")
        x, y = inputs.check_pair(x, y, "x", "y")
        if validation_data is None:
            x, y, x_val, y_val = inputs.holdout_split(x, y, 0.2, seed)
            validation_data = (x_val, y_val)
        fit, y_train = {"x": x, "y": y, "batch_size": batch_size}, y
    if inputs.is_dataset(validation_data):
        y_val = inputs.labels_from_dataset(validation_data, "validation_data")
    else:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("`validation_data` must be (x_val, y_val) or a tf.data.Dataset.")
        validation_data = inputs.check_pair(*validation_data, "validation_data[0]", "validation_data[1]")
        y_val = validation_data[1]
    return _Data(fit, validation_data, y_train, y_val)


def _probe_model(hypermodel, features):
    """Build the baseline's model once and run it on a few examples of each of `features` ({argument: x}).

    Returns the outputs on the first and the last layer's activation name. Features the model cannot take
    (a missing column, a wrong shape) are refused here, naming the argument, before anything trains.
    """
    hp = keras_tuner.HyperParameters()
    hypermodel.space.declare(hp)
    model = hypermodel.user_model(hp)
    outputs = []
    for name, x_head in features.items():
        try:
            out = model(x_head, training=False)
        except Exception as err:  # noqa: BLE001  (any error of the forward pass is the input's fault here)
            expects = getattr(model, "input_shape", None)
            raise ValueError(
                f"`{name}`: the model cannot take these features ({inputs.describe_shapes(x_head)}); "
                + (f"it expects input shape {expects}: " if expects is not None else "")
                + tuner_module.failure_reason(str(err) or traceback.format_exc())
            ) from None
        outputs.append(np.asarray(keras.ops.convert_to_numpy(out)))
    last = getattr(model.layers[-1], "activation", None) if model.layers else None
    return outputs[0], getattr(last, "__name__", None)


def _population_arg(value):
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"`population` must be an integer >= 1 or \"auto\", got {value!r}.")
        return value
    return _positive_int("population", value)


def _population_size(size, hypermodel, stream, *, tuner_cls, max_trials, batch_size, dataset):
    """The population size: `size`, or for "auto" `population.auto_size` within the tuner's limit; 1, with one
    line saying why, when the baseline's model cannot be trained as a population."""
    if size == 1:
        return 1
    why_not = None
    if size == "auto" and issubclass(tuner_cls, keras_tuner.Hyperband):
        why_not = "Hyperband gives its trials different epoch budgets"
    elif size == "auto" and dataset:
        why_not = "x is a tf.data.Dataset (a population draws its batches from arrays)"
    else:
        model = hypermodel.build(keras_tuner.HyperParameters())
        why_not = vectorizable(model)
    if why_not:
        print(f"population: training trials one by one: {why_not}", file=stream, flush=True)
        return 1
    if size != "auto":
        return size
    limit = max_trials
    if issubclass(tuner_cls, keras_tuner.BayesianOptimization):
        # A round's members see only a pessimistic guess of each other's scores: keep at least 4 rounds.
        limit = min(max_trials, max(2, max_trials // 4))
    size, why = auto_size(model, batch_size, limit)
    print(f"population: auto: {size} trials at once ({why})", file=stream, flush=True)
    return size


@dataclass
class _Plan:
    hypermodel: LossHyperModel
    objective: keras_tuner.Objective
    num_outputs: int
    context: SearchContext


def _plan(build_model, space, data, objective, from_logits, optimizer, metrics, seed, max_trials, epochs, folds,
          score):
    """Probe the model on both data sets, check the labels, measure the class counts, resolve the objective."""
    task = space.task
    hypermodel = LossHyperModel(build_model, space, class_counts=None, from_logits=from_logits,
                                optimizer=optimizer, metrics=metrics, seed=seed, folds=folds)
    features = {"x": inputs.first_features(data.fit["x"])}
    if data.validation is not None:
        features["validation_data"] = inputs.first_features(
            data.validation if inputs.is_dataset(data.validation) else data.validation[0])
    outputs, last_activation = _probe_model(hypermodel, features)
    num_outputs = outputs.shape[-1] if outputs.ndim > 1 else 1
    task.check_outputs(outputs, from_logits, last_activation)
    class_counts = task.check_labels(data.y_train, num_outputs, "y")
    validation_counts = task.check_labels(data.y_val, num_outputs, "validation_data (labels)")
    if folds and validation_counts is not None:
        validation_counts = [c / folds for c in validation_counts]  # what one fold holds, on average
    hypermodel.class_counts = class_counts
    objective = objectives.resolve(objective, task, hypermodel.metric_names(num_outputs), space.loss_is_tuned)
    context = SearchContext(
        space=space.to_dict(), task=task.name, objective={"name": objective.name, "direction": objective.direction},
        class_counts=class_counts, from_logits=bool(from_logits), max_trials=max_trials, epochs=epochs, seed=seed,
        score_rule=score, validation_counts=validation_counts,
    )
    return _Plan(hypermodel, objective, num_outputs, context)


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
    score="last_quarter",
    folds=None,
    race=3,
    prune=None,
    population=1,
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
        executions_per_trial: trainings per trial (repeats) with seeds seed, seed+1, ...; the trial's score is
            their mean, with its standard error.
        seed: initial weights, data order and the tuner's sampling all follow it.
        directory, project_name: the search lives in `directory/project_name`; run again to resume.
        overwrite: start afresh instead of resuming.
        optimizer, metrics, callbacks, batch_size, verbose: as in `model.compile` / `model.fit`.
        from_logits: whether the model outputs logits.
        confirm_seeds: after the search, retrain the best and the baseline loss with this many fresh seeds
            and report means, spreads and a 95% confidence interval of the difference (0: skip; else >= 2).
        stream: where the one-line status per trial goes (default: stdout).
        score: how a training's per-epoch validation curve becomes its score: "last_quarter" (the mean of the
            last quarter of the epochs; chosen by measurement, see benchmarks/README.md), "best" (the best
            epoch, KerasTuner's own rule), "last", or "mean_last_3" / "mean_last_5" / "mean_last_10".
        folds: None, or k >= 2: score each trial by stratified k-fold cross-validation over (x, y) instead of
            a validation set (each fold is a repeat: k trainings per trial); excludes `validation_data`.
        race: after the search, the `race` best trials by mean, and the best of the baseline and the recipes,
            get extra repeats until each has at least 3 (paired: repeat k of every trial shares its seed and
            fold); the pick is the best mean, or a simpler candidate within one standard error of it. 0: off.
        prune: None, or "median": stop a training whose objective at an epoch is worse than the median of the
            completed trials at that epoch (after 4 completed trials and a quarter of the epochs); the baseline
            is never stopped; a stopped trial keeps the score of the epochs it trained.
        population: K > 1 trains K trials at once: the model mapped over K stacked copies of its weights
            (population.py), each member an ordinary trial with the same initial weights, data order and
            result as when trained alone. Needs arrays (not a tf.data.Dataset) and equal epochs for every
            trial (not Hyperband); a model or optimizer that cannot be vectorized trains serially, with one
            line saying why. "auto": as many as `max_trials`, at most 32, a quarter of `max_trials` with
            Bayesian optimization, and as many as fit in half the free memory (`population.auto_size`); 1
            where a population cannot run.
    """
    # 1. check: every argument and the data, before anything trains
    stream = stream or sys.stdout
    max_trials = _positive_int("max_trials", max_trials)
    epochs = _positive_int("epochs", epochs)
    executions_per_trial = _positive_int("executions_per_trial", executions_per_trial)
    batch_size = _positive_int("batch_size", batch_size)
    seed = _positive_int("seed", seed, minimum=0)
    race = _positive_int("race", race, minimum=0)
    if folds is not None:
        folds = _positive_int("folds", folds, minimum=2)
    population = _population_arg(population)
    if prune is not None and prune not in PRUNERS:
        raise ValueError(f"`prune` must be None or one of {list(PRUNERS)}, got {prune!r}.")
    if score not in SCORE_RULES:
        raise ValueError(f"`score` must be one of {list(SCORE_RULES)}, got {score!r}.")
    if confirm_seeds != 0:
        confirm_seeds = _positive_int("confirm_seeds", confirm_seeds, minimum=2)
    tuner_cls = tuner_module.tuner_class(tuner)
    if prune and issubclass(tuner_cls, keras_tuner.Hyperband):
        raise ValueError("`prune`: Hyperband already stops trials early (its brackets); pass prune=None with it.")
    if population not in (1, "auto") and issubclass(tuner_cls, keras_tuner.Hyperband):
        raise ValueError("`population`: Hyperband gives its trials different epoch budgets, and a population "
                         "trains its members for the same epochs; pass population=1 with Hyperband.")
    if population not in (1, "auto") and inputs.is_dataset(x):
        raise ValueError("`population` needs x and y as arrays: a population draws its members' batches "
                         "itself; pass population=1 for a tf.data.Dataset.")
    space = LossSpace.coerce(space)
    data = _check_data(x, y, validation_data, batch_size, seed, folds)

    # 2. plan: the model probed on both data sets, class counts, objective, the search record
    plan = _plan(build_model, space, data, objective, from_logits, optimizer, metrics, seed, max_trials, epochs,
                 folds, score)
    project_dir = os.path.join(directory, project_name)
    if not overwrite:
        plan.context.check_resumable(project_dir)

    # 3. run: KerasTuner's loop with losstune's mixin
    hyperband = issubclass(tuner_cls, keras_tuner.Hyperband)
    log = tuner_module.TrialLog(
        logdir=os.path.join(project_dir, plan.context.logdir), space=space, from_logits=bool(from_logits),
        num_outputs=plan.num_outputs, class_counts=plan.context.class_counts, objective=plan.objective,
        max_trials=None if hyperband else max_trials, stream=stream, score_rule=score, prune=prune, epochs=epochs,
    )
    budget = {"max_epochs": epochs} if hyperband else {"max_trials": max_trials}
    worker = tuner_module.is_worker()
    with tuner_module.running():
        tuner_obj = tuner_module.make_tuner(
            tuner_cls, log, hypermodel=plan.hypermodel, objective=plan.objective, directory=directory,
            project_name=project_name, overwrite=overwrite, executions_per_trial=executions_per_trial * (folds or 1),
            seed=seed + 1,  # KerasTuner treats seed 0 as "unseeded"
            max_consecutive_failed_trials=max_trials + 1,  # failed trials are recorded; the search goes on
            **budget,
        )
        if not worker:
            plan.context.save(project_dir)
            tb.write_hparams_config(log.logdir, tuner_obj.oracle.get_space().space, plan.objective.name)
        population = _population_size(population, plan.hypermodel, stream, tuner_cls=tuner_cls,
                                      max_trials=max_trials, batch_size=batch_size, dataset=inputs.is_dataset(x))
        if population > 1:
            tuner_obj.search_population(population, **data.fit, validation_data=data.validation, epochs=epochs,
                                        callbacks=list(callbacks or []), verbose=verbose)
        else:
            tuner_obj.search(**data.fit, validation_data=data.validation, epochs=epochs,
                             callbacks=list(callbacks or []), verbose=verbose, shuffle=True)
    result = SearchResult.from_directory(project_dir)
    if worker:
        return result
    if result.best_trial is None:
        raise RuntimeError(
            "every trial of the search failed, so there is no best loss. " + "; ".join(
                f"trial {t.trial_id} ({t.describe_loss()}): {t.message or t.status}" for t in result.trials[:5])
        )

    # 4. race the top candidates to an honest pick; confirm it against the baseline over fresh seeds
    if race:
        _race(plan.hypermodel, result, data, epochs, race, verbose, stream, population)
        result = SearchResult.from_directory(project_dir)
    if confirm_seeds:
        plan.context.confirmation = confirm(plan.hypermodel, result, data.fit, data.validation, epochs,
                                            confirm_seeds, verbose)
        plan.context.save(project_dir)
        result = SearchResult.from_directory(project_dir)

    # 5. report: the TensorBoard summary and the best loss's config file
    tb.write_summary(log.logdir, result.to_markdown(), result.best_score, result.baseline_score,
                     texts=result.summary_texts(), images=result.summary_images())
    result.export()
    return result


RACE_REPEATS = 3  # repeats every raced candidate ends with: the fewest that give a standard error


def _race(hypermodel, result, data, epochs, race, verbose, stream, population=1):
    """Extra repeats for the top candidates, so that the pick rests on means, not on one lucky run.

    Repeat k of every candidate uses the seed and fold of execution k, as the search's own executions do, so
    differences between candidates are paired; with `population` > 1 the candidates' repeat k train together.
    Each score is saved as it comes (an interrupted race resumes).
    """
    name, direction = result.objective["name"], result.objective["direction"]
    sign = 1 if direction == "max" else -1
    done = sorted((t for t in result.completed if t.score is not None and np.isfinite(t.score)),
                  key=lambda t: -sign * t.score)
    candidates = done[:race]
    simple = [t for t in done if t.is_baseline or t.recipe is not None]
    if simple and simple[0] not in candidates:
        candidates.append(simple[0])  # the best simple candidate, so the pick can be checked against it
    target = max([RACE_REPEATS] + [len(t.scores) for t in candidates])
    logdir = os.path.join(result.directory, result.context.logdir)
    repeats = {}
    for t in candidates:
        trial_dir = os.path.join(result.directory, f"trial_{t.trial_id}")
        repeats[t.trial_id] = (tuner_module.Repeats.load(trial_dir)
                               or tuner_module.Repeats([t.score], result.context.score_rule), trial_dir)
    fit = dict(data.fit, validation_data=data.validation, epochs=epochs)
    for execution in range(min(len(r.scores) for r, _ in repeats.values()), target):
        due = [t for t in candidates if len(repeats[t.trial_id][0].scores) == execution]
        hypermodel.execution = execution
        members = []
        for t in due:
            hp = tuner_module.trial_hyperparameters(result.directory, t.trial_id)
            members.append(Member(hypermodel.build(hp), name=f"trial {t.trial_id}"))
            members[-1].hyperparameters = hp
        if population > 1:
            tuner_module.train_members(hypermodel, members, fit, execution, stream, verbose)
        else:
            for member in members:
                tuner_module.fit_alone(hypermodel, member, fit, verbose)
        for t, member in zip(due, members):
            record, trial_dir = repeats[t.trial_id]
            curve = member.history.get(name, [])
            # a candidate that diverges on some seed cannot be the pick
            value = float("nan") if member.failure else curve_score(curve, record.rule, direction)
            record.scores.append(value)
            record.save(trial_dir)
            mean, se = record.mean_se
            print(f"[race] trial {t.trial_id} repeat {execution + 1}/{target}  {t.describe_loss()}  "
                  f"{name}={value:.4f}  mean {mean:.4f}" + (f" ± {se:.4f}" if se is not None else ""),
                  file=stream, flush=True)
            tb.update_trial_score(os.path.join(logdir, t.trial_id), mean, step=execution)
    hypermodel.execution = 0


def confirm(hypermodel, result, fit_data, validation_data, epochs, seeds, verbose=0):
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
            hp = tuner_module.trial_hyperparameters(result.directory, record.trial_id)
            model = hypermodel.build(hp)
            history = hypermodel.fit(hp, model, **fit_data, validation_data=validation_data, epochs=epochs,
                                     verbose=verbose, shuffle=True)
            scores[label].append(float(pick(history.history[name])))
    hypermodel.execution = 0
    return {"seeds": seeds, "objective": name, "best_scores": scores["best"], "baseline_scores": scores["baseline"],
            **paired_difference(scores["best"], scores["baseline"])}
