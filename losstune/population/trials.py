"""A HyperModel's trials trained as populations: grouped by architecture, each group trained together, or
one by one (each as its serial trial) with one line saying why when it cannot be."""

from __future__ import annotations

import logging

import keras
import keras_tuner
import numpy as np

from losstune.failures import error_line
from losstune.population.driver import train_population
from losstune.population.eligibility import NotVectorizable, architecture_key


def same_architecture(members):
    """`members` grouped by `architecture_key` (in order of first appearance): only equal ones share a
    population."""
    groups = {}
    for member in members:
        groups.setdefault(architecture_key(member.model), []).append(member)
    return list(groups.values())


def executions_together(hypermodel, fit):
    """Whether the executions of a round (KerasTuner's executions_per_trial) train at the same time, as members
    of one population: with folds (cut from arrays), each pass over the folds; else wherever each seed can
    iterate the input on its own (arrays, a tf.data.Dataset; not a PyDataset, whose epoch hooks are shared)."""
    return bool(hypermodel.folds) or not isinstance(fit["x"], keras.utils.PyDataset)


def train_members(hypermodel, by_execution, fit, stream, verbose=0):
    """Train the members of one or several executions together, one population per architecture; a group that
    cannot be one population trains one member at a time, with one line on `stream` saying why:
    "population: training {n} trial(s) one by one: {reason}".

    * With folds, each pass over the folds (executions e, ..., e + k - 1, e a multiple of k) is one population,
      folds as members (`_train_fold_pass`).
    * Else, where `executions_together`, every execution at once, repeats as members: each member draws the
      data order of its own execution's seed (`train_population(seed=[...])`), as its serial trial does.
    * Else one execution after another.

    Args:
        hypermodel: a `LossHyperModel` (its `execution_data`, `seed_for`, `fold_split`, `build` and `fit` are
            called with each execution explicitly; its `execution` attribute is neither read nor set here).
        by_execution: {execution: members}, each member built by `hypermodel` for its execution (its seed,
            and with folds its fold) and carrying the `hyperparameters` its model was built from (a member
            that trains alone is rebuilt from them).
        fit: x, y, validation_data, epochs, batch_size and shuffle as given to the search (folds are cut
            here); x may be any input `model.fit` takes.
        stream: where the fallback line goes.
        verbose: 0 silent; else the population's plan and epochs, and `fit`'s own output when alone.

    Returns:
        `by_execution`, its members with `history` and `failure` filled.
    """
    executions = sorted(by_execution)
    if hypermodel.folds:
        passes = {}
        for e in executions:
            passes.setdefault(e // hypermodel.folds, {})[e] = by_execution[e]
        runs = list(passes.values())
    elif executions_together(hypermodel, fit):
        runs = [by_execution]
    else:
        runs = [{e: by_execution[e]} for e in executions]
    for run in runs:
        (_train_fold_pass if hypermodel.folds else _train_repeats)(hypermodel, run, fit, stream, verbose)
    return by_execution


def _train_repeats(hypermodel, by_execution, fit, stream, verbose):
    """The members of executions without folds, each with its execution's seed, as one population per
    architecture (repeats as members when there are several executions)."""
    executions, members, execution_of = _flatten(by_execution)
    x, y, validation = hypermodel.execution_data(fit["x"], fit.get("y"), fit.get("validation_data"), executions[0])

    def train(group):
        train_population(group, x, y, validation_data=validation, epochs=fit["epochs"],
                         batch_size=fit.get("batch_size"), shuffle=fit.get("shuffle", True),
                         seed=[hypermodel.seed_for(execution_of[id(m)]) for m in group], verbose=1 if verbose else 0)

    return _train_groups(hypermodel, members, execution_of, fit, stream, verbose, train)


def _train_fold_pass(hypermodel, by_execution, fit, stream, verbose):
    """Folds as members: the members of the executions of one pass over the folds trained together over the
    whole (x, y), one population per architecture, each member holding out its execution's fold and validating
    on it (`train_population(holdout=)`). Each member starts from its own execution's initial weights; the
    batches, and the random layers' draws (Dropout's mask: one for all members, from the first member's seed
    state), follow the first execution's seed (in fold-by-fold training each fold draws both from its own
    seed)."""
    executions, members, execution_of = _flatten(by_execution)
    x, y = fit["x"], fit["y"]
    held = {e: hypermodel.fold_split(y, e)[1] for e in executions}
    # A member keeps (k - 1) / k of each batch: batches k / (k - 1) times larger give it about `batch_size`
    # examples per step and as many steps per epoch as fold-by-fold training has.
    folds = hypermodel.folds
    batch_size = int(round((fit.get("batch_size") or 32) * folds / (folds - 1)))

    def train(group):
        holdout = np.zeros((len(group), len(y)), dtype=bool)
        for row, member in enumerate(group):
            holdout[row, held[execution_of[id(member)]]] = True
        train_population(group, x, y, epochs=fit["epochs"], batch_size=batch_size,
                         shuffle=fit.get("shuffle", True), seed=hypermodel.seed_for(executions[0]),
                         holdout=holdout, verbose=1 if verbose else 0)

    return _train_groups(hypermodel, members, execution_of, fit, stream, verbose, train)


def _flatten(by_execution):
    """(executions in order, their members in that order, {id(member): its execution})."""
    executions = sorted(by_execution)
    members = [m for e in executions for m in by_execution[e]]
    return executions, members, {id(m): e for e in executions for m in by_execution[e]}


def _train_groups(hypermodel, members, execution_of, fit, stream, verbose, train):
    """`train(group)` for each same-architecture group of `members`; a group it refuses or fails trains one
    member at a time (each with its own execution, `execution_of[id(member)]`), after one line on `stream`."""
    logging.getLogger("tensorflow").addFilter(_EXPECTED_RETRACING)
    for member in members:  # a deferred re-weighting, as the HyperModel's `fit` schedules it when alone
        member.schedule = hypermodel.loss_schedule(member.hyperparameters, fit["epochs"])
    for group in same_architecture(members):
        untouched = True
        try:
            train(group)
            continue
        except NotVectorizable as err:  # refused before any weight was touched
            reason = err.reason
        except Exception as err:  # noqa: BLE001  (any engine failure: train these alone)
            reason, untouched = f"the population failed ({error_line(err)})", False
        print(f"population: training {len(group)} trial(s) one by one: {reason}", file=stream, flush=True)
        for member in group:
            _train_alone(hypermodel, member, fit, execution_of[id(member)], verbose, untouched)
    return members


def _train_alone(hypermodel, member, fit, execution, verbose, untouched):
    """`member` trained as its serial trial, from a fresh model: a population that failed mid-training may
    have moved its weights. A member without `hyperparameters` keeps its model when the population never
    touched it, and fails otherwise."""
    member.history, member.failure, member.stopped_epoch = {}, None, None
    if member.hyperparameters is not None:
        member.model = hypermodel.build(member.hyperparameters, execution)
    elif not untouched:
        member.failure = "the population failed and the member has no hyperparameters to rebuild its model from"
        return member
    return fit_alone(hypermodel, member, fit, execution, verbose)


def fit_alone(hypermodel, member, fit, execution, verbose=0):
    """A member trained as its serial trial would be (the HyperModel's `fit` for `execution`), the outcome
    kept on the Member: `history`, or `failure` when the HyperModel fails the trial."""
    try:
        history = hypermodel.fit(member.hyperparameters, member.model, **{"shuffle": True, **fit},
                                 execution=execution, callbacks=member.callbacks, verbose=verbose)
        member.history = dict(history.history)
    except keras_tuner.errors.FailedTrialError as err:
        member.failure = str(err)
    return member


class _ExpectedRetracing(logging.Filter):
    """Each population traces its own step once; TensorFlow's 'excessive retracing' warning about the new
    functions of each population says nothing the user can act on."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


_EXPECTED_RETRACING = _ExpectedRetracing()
