"""losstune.search(): a KerasTuner search over losses, checked before it starts and logged to TensorBoard.

`search()` reads as its steps: check the arguments and data, plan the search (model probe, class counts,
objective, the search record), run the tuner, race the top candidates and confirm the pick over fresh seeds
(racing.py), and report.
"""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass
from typing import TextIO

import keras
import keras_tuner
import numpy as np

from losstune import inputs, objectives, predictions, racing, sampling
from losstune import tensorboard_log as tb
from losstune import tuner as tuner_module
from losstune.checks import positive_int
from losstune.failures import failure_reason
from losstune.hypermodel import LossHyperModel
from losstune.lossspace import LossSpace
from losstune.population import auto_size, vectorizable
from losstune.pruning import PRUNERS
from losstune.result import SearchContext, SearchResult
from losstune.retrain import Scoring
from losstune.sampling import PRIORS
from losstune.stats import SCORE_RULES


@dataclass(frozen=True)
class Settings:
    """The search's checked arguments that its steps after the check read."""

    tuner_cls: type
    max_trials: int
    epochs: int
    executions_per_trial: int
    batch_size: int
    seed: int
    race: int
    folds: int | None
    population: int | str  # K >= 1 or "auto" (resolved when the run starts)
    prune: str | None
    score: str
    confirm_seeds: int
    verbose: int
    stream: TextIO
    prior: str | None = None  # None: the space's own (LossSpace.prior)

    @property
    def hyperband(self):
        return issubclass(self.tuner_cls, keras_tuner.Hyperband)

    def __post_init__(self):
        """Arguments checked against each other (each alone is checked by `_settings`)."""
        if self.prune and self.hyperband:
            raise ValueError("`prune`: Hyperband already stops trials early (its brackets); pass prune=None with it.")
        if self.population not in (1, "auto") and self.hyperband:
            raise ValueError("`population`: Hyperband gives its trials different epoch budgets, and a population "
                             "trains its members for the same epochs; for successive halving in populations pass "
                             "tuner=\"random\" (or \"bayesian\") with prune=\"halving\", or population=1 with "
                             "Hyperband.")


def _settings(tuner, max_trials, epochs, executions_per_trial, batch_size, seed, race, folds, population, prune,
              score, confirm_seeds, verbose, stream, prior):
    """Check every argument alone (naming it, the value and what is allowed) into a `Settings`."""
    if not (isinstance(population, str) and population == "auto"):
        if isinstance(population, str):
            raise ValueError(f"`population` must be an integer >= 1 or \"auto\", got {population!r}.")
        population = positive_int("population", population)
    if prune is not None and prune not in PRUNERS:
        raise ValueError(f"`prune` must be None or one of {list(PRUNERS)}, got {prune!r}.")
    if score not in SCORE_RULES:
        raise ValueError(f"`score` must be one of {list(SCORE_RULES)}, got {score!r}.")
    if prior is not None and prior not in PRIORS:
        raise ValueError(f"`prior` must be None or one of {list(PRIORS)}, got {prior!r}.")
    return Settings(
        tuner_cls=tuner_module.tuner_class(tuner), max_trials=positive_int("max_trials", max_trials),
        epochs=positive_int("epochs", epochs),
        executions_per_trial=positive_int("executions_per_trial", executions_per_trial),
        batch_size=positive_int("batch_size", batch_size), seed=positive_int("seed", seed, minimum=0),
        race=positive_int("race", race, minimum=0),
        folds=None if folds is None else positive_int("folds", folds, minimum=2), population=population,
        prune=prune, score=score,
        confirm_seeds=0 if confirm_seeds == 0 else positive_int("confirm_seeds", confirm_seeds, minimum=2),
        verbose=verbose, stream=stream or sys.stdout, prior=prior,
    )


@dataclass
class _Data:
    """The checked training and validation data, as `fit` takes them, and what the checks need."""

    fit: dict  # x, y, batch_size, shuffle (arrays) or x, shuffle (a dataset: tf.data or PyDataset)
    validation: object  # (x_val, y_val) or a dataset
    y_train: np.ndarray
    y_val: np.ndarray


def _check_data(x, y, validation_data, batch_size, seed, folds):
    """Shapes, values and pairing of the training and validation data (labels are checked in `_plan`)."""
    inputs.check_not_generator(x, "x")
    inputs.check_not_generator(validation_data, "validation_data")
    if folds:
        if validation_data is not None:
            raise ValueError("`validation_data` and `folds` exclude each other: with folds=k every trial "
                             "validates on the held-out fold of (x, y); pass one of them (to fold over both, "
                             "concatenate them: x=np.concatenate([x, x_val]), y=np.concatenate([y, y_val])).")
        if inputs.is_dataset(x):
            raise ValueError(f"`folds` needs x and y as arrays to cut the folds from, got a {type(x).__name__} as "
                             f"`x`.")
        if y is None:
            raise ValueError("`y` is required when `x` is an array (pass the labels).")
        x, y = inputs.check_pair(x, y, "x", "y")
        # The probe and the label checks see one fold's validation part; training cuts each fold itself.
        return _Data({"x": x, "y": y, "batch_size": batch_size, "shuffle": True}, None, y, y)
    if inputs.is_dataset(x):
        kind = type(x).__name__
        if y is not None:
            raise ValueError(f"`y` must be None when `x` is a dataset ({kind}): it yields the labels.")
        if validation_data is None:
            raise ValueError(f"`validation_data` is required when `x` is a dataset ({kind}).")
        # `fit` shuffles a PyDataset's batch order (its default, shuffle=True); a tf.data pipeline orders itself.
        fit = {"x": x, "shuffle": isinstance(x, keras.utils.PyDataset)}
        y_train = inputs.labels_from_dataset(x, "x")
    else:
        if y is None:
            raise ValueError("`y` is required when `x` is an array (pass the labels).")
        x, y = inputs.check_pair(x, y, "x", "y")
        if validation_data is None:
            x, y, x_val, y_val = inputs.holdout_split(x, y, 0.2, seed)
            validation_data = (x_val, y_val)
        fit, y_train = {"x": x, "y": y, "batch_size": batch_size, "shuffle": True}, y
    if inputs.is_dataset(validation_data):
        y_val = inputs.labels_from_dataset(validation_data, "validation_data")
    else:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("`validation_data` must be (x_val, y_val), a tf.data.Dataset or a keras.utils.PyDataset.")
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
                + failure_reason(str(err) or traceback.format_exc())
            ) from None
        outputs.append(np.asarray(keras.ops.convert_to_numpy(out)))
    last = getattr(model.layers[-1], "activation", None) if model.layers else None
    return outputs[0], getattr(last, "__name__", None)


def _population_size(settings, hypermodel, random_first=0):
    """The population size: `settings.population`, or for "auto" `population.auto_size` within the tuner's
    limit; 1, with one line saying why, when the baseline's model cannot be trained as a population.

    `random_first`: how many trials the tuner's oracle draws at random before its model guides it
    (`tuner.random_trials_first`); a Bayesian search's rounds may be that large at no cost in quality."""
    size, stream = settings.population, settings.stream
    if size == 1:
        return 1
    why_not = None
    if size == "auto" and settings.hyperband:
        why_not = "Hyperband gives its trials different epoch budgets"
    else:
        model = hypermodel.build(keras_tuner.HyperParameters(), execution=0)
        why_not = vectorizable(model)
    if why_not:
        print(f"population: training trials one by one: {why_not}", file=stream, flush=True)
        return 1
    if size != "auto":
        return size
    limit = settings.max_trials
    if issubclass(settings.tuner_cls, keras_tuner.BayesianOptimization):
        # KerasTuner's Bayesian oracle draws its first max(3 x dimensions, 3) trials at random (a space of 8
        # hyperparameters: 24), so rounds that large cost nothing. Once the Gaussian process guides it, a
        # round's members are proposed from the same fit, without each other's scores: keep at least 4 rounds.
        limit = min(limit, max(2, limit // 4, random_first or 0))
    # Each trial trains its folds (a pass over them) or its repeats as members of the same population.
    members = settings.folds or settings.executions_per_trial
    size, why = auto_size(model, settings.batch_size, limit, members_per_trial=members)
    print(f"population: auto: {size} trials at once ({why})", file=stream, flush=True)
    return size


@dataclass
class _Plan:
    hypermodel: LossHyperModel
    objective: keras_tuner.Objective
    num_outputs: int
    context: SearchContext

    @property
    def scoring(self):
        calibration = self.hypermodel.task.calibration
        return Scoring(self.objective.name, self.objective.direction, self.context.score_rule,
                       calibration=f"val_{calibration}" if calibration else None)


def _plan(build_model, space, data, settings, *, objective, from_logits, optimizer, metrics):
    """Probe the model on both data sets, check the labels, measure the class counts, resolve the objective."""
    task = space.task
    hypermodel = LossHyperModel(build_model, space, class_counts=None, from_logits=from_logits,
                                optimizer=optimizer, metrics=metrics, seed=settings.seed, folds=settings.folds)
    features = {"x": inputs.first_features(data.fit["x"])}
    if data.validation is not None:
        features["validation_data"] = inputs.first_features(
            data.validation if inputs.is_dataset(data.validation) else data.validation[0])
    outputs, last_activation = _probe_model(hypermodel, features)
    num_outputs = outputs.shape[-1] if outputs.ndim > 1 else 1
    task.check_outputs(outputs, from_logits, last_activation)
    class_counts = task.check_labels(data.y_train, num_outputs, "y")
    validation_counts = task.check_labels(data.y_val, num_outputs, "validation_data (labels)")
    if settings.folds and validation_counts is not None:
        validation_counts = [c / settings.folds for c in validation_counts]  # what one fold holds, on average
    elif task.class_weighted:
        _say_small_validation(validation_counts, settings.stream)
    hypermodel.class_counts = class_counts
    prior = task.check_prior(space.prior if settings.prior is None else settings.prior)
    hypermodel.metric_class_weights = task.prior_weights(validation_counts, prior)
    objective = objectives.resolve(objective, task, hypermodel.metric_names(num_outputs), space.loss_is_tuned)
    context = SearchContext(
        space=space.to_dict(), task=task.name, objective={"name": objective.name, "direction": objective.direction},
        class_counts=class_counts, from_logits=bool(from_logits), max_trials=settings.max_trials,
        epochs=settings.epochs, seed=settings.seed, score_rule=settings.score, validation_counts=validation_counts,
        prior=prior,
    )
    return _Plan(hypermodel, objective, num_outputs, context)


def _say_small_validation(validation_counts, stream):
    """Before anything trains: a validation set whose rarest classes hold a handful of examples scores trials by
    chance (benchmarks/README.md, "prior_splits": 47 examples picked a loss 0.13 below the best on the test
    set, where 5-fold searches ranked the best first on every split); say so, and what to do."""
    small = sampling.small_classes(validation_counts)
    if small:
        print(f"validation: classes {small} have fewer than {sampling.SMALL_CLASS} examples (counts "
              f"{[int(validation_counts[c]) for c in small]}), so trial scores turn on a few predictions; folds=k "
              f"over the training and validation data together scores every trial on all of them.",
              file=stream, flush=True)


def _run(plan, data, settings, project_dir, *, space, callbacks, overwrite):
    """KerasTuner's loop with losstune's mixin, K trials at a time where populations run; returns K."""
    directory, project_name = os.path.split(project_dir)
    log = tuner_module.TrialLog(
        logdir=os.path.join(project_dir, plan.context.logdir), space=space, from_logits=plan.context.from_logits,
        num_outputs=plan.num_outputs, class_counts=plan.context.class_counts, objective=plan.objective,
        max_trials=None if settings.hyperband else settings.max_trials, stream=settings.stream,
        scoring=plan.scoring, prune=settings.prune, epochs=settings.epochs,
        validation_for=lambda execution: predictions.validation_arrays(
            plan.hypermodel, dict(data.fit, validation_data=data.validation), execution),
    )
    budget = {"max_epochs": settings.epochs} if settings.hyperband else {"max_trials": settings.max_trials}
    fit = dict(data.fit, validation_data=data.validation, epochs=settings.epochs, callbacks=list(callbacks or []),
               verbose=settings.verbose)
    with tuner_module.running():
        tuner = tuner_module.make_tuner(
            settings.tuner_cls, log, hypermodel=plan.hypermodel, objective=plan.objective, directory=directory,
            project_name=project_name, overwrite=overwrite,
            executions_per_trial=settings.executions_per_trial * (settings.folds or 1),
            seed=settings.seed + 1,  # KerasTuner treats seed 0 as "unseeded"
            max_consecutive_failed_trials=settings.max_trials + 1,  # failed trials are recorded; the search goes on
            **budget,
        )
        if not tuner_module.is_worker():
            plan.context.save(project_dir)
            tb.write_hparams_config(log.logdir, tuner.oracle.get_space().space, plan.objective.name,
                                    plan.hypermodel.task.calibration)
        size = _population_size(settings, plan.hypermodel, tuner_module.random_trials_first(tuner))
        if size > 1:
            tuner.search_population(size, **fit)
        else:
            tuner.search(**fit)
    return size


def _after_search(plan, data, settings, project_dir, size):
    """Race the top candidates to an honest pick, then confirm it against the baseline over fresh seeds."""
    result = SearchResult.from_directory(project_dir)
    if result.best_trial is None:
        raise RuntimeError(
            "every trial of the search failed, so there is no best loss. " + "; ".join(
                f"trial {t.trial_id} ({t.describe_loss()}): {t.message or t.status}" for t in result.trials[:5])
        )
    fit = dict(data.fit, validation_data=data.validation, epochs=settings.epochs)
    how = dict(scoring=plan.scoring, together=size > 1, stream=settings.stream, verbose=settings.verbose)
    if settings.race:
        racing.race(plan.hypermodel, result, fit, settings.race, **how)
        result = SearchResult.from_directory(project_dir)
    if settings.confirm_seeds:
        plan.context.confirmation = racing.confirm(plan.hypermodel, result, fit, settings.confirm_seeds, **how)
        plan.context.save(project_dir)
        result = SearchResult.from_directory(project_dir)
    return result


def _report(result, logdir):
    """The TensorBoard summary run and the best loss's config file."""
    tb.write_summary(logdir, result.to_markdown(), result.best_score, result.baseline_score,
                     texts=result.summary_texts(), images=result.summary_images())
    result.export()
    return result


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
    prior=None,
):
    """Search the loss for `build_model` on (x, y) and return a `SearchResult`.

    Args:
        build_model: `callable(hp) -> keras.Model` (uncompiled is fine; it may declare its own
            hyperparameters), or a `keras.Model` cloned per trial with the same initial weights.
        x, y: numpy arrays (x may be a list/tuple/dict of arrays), or a dataset of (features, labels) batches
            as x with y=None: a `tf.data.Dataset` (augmentation in its `map` is drawn once per batch for all
            members of a population) or a `keras.utils.PyDataset`. Generators are refused (read only once).
        validation_data: (x_val, y_val) or a dataset; default: 20% of (x, y), held out with `seed`.
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
        confirm_seeds: after the search, retrain the best and the baseline loss with this many fresh seeds,
            scored by `score` (as populations where the search trains populations), and report means, spreads
            and a 95% confidence interval of the paired difference; a seed on which a loss diverges is
            reported and left out of the pairs (0: skip; else >= 2).
        stream: where the one-line status per trial goes (default: stdout).
        score: how a training's per-epoch validation curve becomes its score: "last_quarter" (the mean of the
            last quarter of the epochs; chosen by measurement, see benchmarks/README.md), "best" (the best
            epoch, KerasTuner's own rule), "last", or "mean_last_3" / "mean_last_5" / "mean_last_10".
        folds: None, or k >= 2: score each trial by stratified k-fold cross-validation over (x, y) instead of
            a validation set (each fold is a repeat: k trainings per trial); excludes `validation_data`.
        race: after the search, the `race` best trials by mean, and the best of the baseline and the recipes,
            get extra repeats until each has at least 3 (paired: repeat k of every trial shares its seed and
            fold); the pick is the best mean, unless it cannot be told from the best of the baseline and the
            recipes: then that one (the best of m searched trials must lead it by more than the expected
            maximum of m standard normals, at least one, times the standard error; among recipes within one
            standard error, the space's first). 0: off.
        prune: None; "median": stop a training whose objective at an epoch is worse than the median of the
            completed trials at that epoch (after 4 completed trials and a quarter of the epochs); or
            "halving": successive halving (ASHA's rungs): after epochs // 3**k epochs (k = 1, 2, ..., none
            before a quarter of the epochs: one rung at a third), only the best third of the trainings that
            reached that rung go on (populations rank their members
            against each other too). The baseline is never stopped; a stopped trial keeps the score of the
            epochs it trained and counts in no comparison. In a population, stopped members leave the stack,
            so both rules save real time there; spend what they save on more trials (`max_trials`).
        population: K > 1 trains K trials at once: the model mapped over K stacked copies of its weights
            (population.py), each member an ordinary trial with the same initial weights, data order and
            result as when trained alone; each batch of the input is drawn once and fed to every member.
            A round's repeats (`executions_per_trial`, `folds`) and the race's train as members of the same
            population: K trials x k repeats at once (memory for "auto" counts them).
            Needs equal epochs for every trial (not Hyperband); a model or optimizer that cannot be
            vectorized trains serially, with one line saying why. "auto": as many as `max_trials`, at most
            32; with Bayesian optimization as many as its oracle draws at random first (at least a quarter of
            `max_trials`); as many as fit in half the free memory (`population.auto_size`); 1 where a
            population cannot run.
        prior: the class prior the scores estimate performance under: "validation" (the validation set's own
            class frequencies) or "balanced" (equal class frequencies: the objective metric weights each
            validation example of class c by n / (C n_c); binary and multiclass); None: the space's own
            (`prior` in its TOML file, else "validation"). Say "balanced" when the model will meet classes
            about equally often, or when every class matters equally (the long-tailed literature's test sets).
    """
    # 1. check: every argument and the data, before anything trains
    settings = _settings(tuner, max_trials, epochs, executions_per_trial, batch_size, seed, race, folds, population,
                         prune, score, confirm_seeds, verbose, stream, prior)
    space = LossSpace.coerce(space)
    data = _check_data(x, y, validation_data, settings.batch_size, settings.seed, settings.folds)

    # 2. plan: the model probed on both data sets, class counts, objective, the search record
    plan = _plan(build_model, space, data, settings, objective=objective, from_logits=from_logits,
                 optimizer=optimizer, metrics=metrics)
    project_dir = os.path.join(directory, project_name)
    if not overwrite:
        plan.context.check_resumable(project_dir)

    # 3. run: KerasTuner's loop with losstune's mixin
    size = _run(plan, data, settings, project_dir, space=space, callbacks=callbacks, overwrite=overwrite)
    if tuner_module.is_worker():  # the chief races, confirms and reports
        return SearchResult.from_directory(project_dir)

    # 4. race the top candidates to an honest pick; confirm it against the baseline over fresh seeds
    result = _after_search(plan, data, settings, project_dir, size)

    # 5. report: the TensorBoard summary and the best loss's config file
    return _report(result, os.path.join(project_dir, plan.context.logdir))
