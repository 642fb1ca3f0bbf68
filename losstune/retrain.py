"""Train candidates with one execution's seed (and fold) and score them: the one path that the executions of a
population round, racing and `confirm_seeds` all take.

A candidate is a trial's hyperparameters (and, inside a search, the callbacks of its execution). Execution k
fixes the initial weights, the data order and, with folds, the fold (LossHyperModel.seed_for,
`execution_data`), so candidates retrained with the same k are paired. Several candidates train together as a
population where `together` is set (population.train_members; a model that cannot be vectorized trains one by
one, with one line saying why). A training whose loss or gradients go non-finite is a failed repeat: its score
is NaN, its reason kept, and the others go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from losstune import inputs, population
from losstune.stats import curve_score


@dataclass(frozen=True)
class Scoring:
    """How a training becomes a score: the objective's per-epoch curve reduced by the search's score rule."""

    objective: str  # the name of a metric in the History, e.g. "val_macro_f1"
    direction: str  # "max" or "min"
    rule: str  # stats.SCORE_RULES
    calibration: str | None = None  # the calibration metric in the History (e.g. "val_ece"), where the task has one

    def score(self, history, failure=None):
        """The score of one training from its History dict; NaN for a failed training or an empty curve."""
        if failure:
            return float("nan")
        return curve_score(history.get(self.objective, []), self.rule, self.direction)

    def calibration_score(self, history, failure=None):
        """The training's calibration error by the same rule (smaller is better); NaN where it has none."""
        if failure or not self.calibration or not history.get(self.calibration):
            return float("nan")
        return curve_score(history[self.calibration], self.rule, "min")


@dataclass
class Candidate:
    """What to retrain: a trial's hyperparameters, under a name for messages, with its execution's callbacks."""

    name: str
    hyperparameters: object  # keras_tuner.HyperParameters
    callbacks: list = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    """One candidate's retraining: its score and calibration error (NaN when it failed), why it failed, its
    History dict."""

    score: float
    ece: float
    failure: str | None
    history: dict


def retrain(hypermodel, candidates, fit, execution, *, scoring, together, stream, verbose=0):
    """Train every candidate with execution `execution`'s seed and fold; one `Outcome` per candidate, in order.

    Args:
        hypermodel: the search's LossHyperModel (`build(hp, execution)`, `fit(..., execution=)`).
        candidates: `Candidate`s.
        fit: x, y, batch_size (or a dataset as x), validation_data and epochs, as given to the search.
        execution: the repeat index; it is passed on, never set on the hypermodel.
        scoring: the search's `Scoring`.
        together: train the candidates as populations (one per architecture) instead of one after the other.
        stream: where a population's fallback line goes.
    """
    return retrain_executions(hypermodel, [(execution, candidates)], fit, scoring=scoring, together=together,
                              stream=stream, verbose=verbose)[0]


def folds_together(hypermodel, fit):
    """Whether the executions of a pass over the folds train at once, folds as members: with folds, on arrays."""
    return bool(hypermodel.folds) and not inputs.is_dataset(fit.get("x"))


def retrain_executions(hypermodel, runs, fit, *, scoring, together, stream, verbose=0):
    """Every run, a pair (execution, candidates), as `retrain` trains one: a list of Outcome lists, in order.

    With `folds` on the hypermodel, arrays as input and `together`, the runs of one pass over the folds
    (executions e, ..., e + k - 1 with e a multiple of k: each fold once) train as one population, folds as
    members (`population.train_fold_members`): every batch of the whole (x, y) feeds all trials of all k folds.
    """
    members = {execution: [population.Member(hypermodel.build(c.hyperparameters, execution), list(c.callbacks),
                                             name=c.name, hyperparameters=c.hyperparameters) for c in candidates]
               for execution, candidates in runs}
    folds = hypermodel.folds
    if together and folds_together(hypermodel, fit):
        passes = {}
        for execution in members:
            passes.setdefault(execution // folds, {})[execution] = members[execution]
        for by_execution in passes.values():
            population.train_fold_members(hypermodel, by_execution, fit, stream, verbose)
    else:
        for execution, group in members.items():
            if together:
                population.train_members(hypermodel, group, fit, execution, stream, verbose)
            else:
                for member in group:
                    population.fit_alone(hypermodel, member, fit, execution, verbose)
    return [[Outcome(scoring.score(m.history, m.failure), scoring.calibration_score(m.history, m.failure),
                     m.failure, dict(m.history)) for m in members[execution]] for execution, _ in runs]
