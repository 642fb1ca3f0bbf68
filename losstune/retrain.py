"""Train candidates with their executions' seeds (and folds) and score them: the one path that the executions of
a population round, racing and `confirm_seeds` all take.

A candidate is a trial's hyperparameters (and, inside a search, the callbacks of its execution). Execution k
fixes the initial weights, the data order and, with folds, the fold (LossHyperModel.seed_for,
`execution_data`), so candidates retrained with the same k are paired. Several candidates, and several
executions, train together as populations where `together` is set (population.train_members; a model that
cannot be vectorized trains one by one, with one line saying why). A training whose loss or gradients go
non-finite is a failed repeat: its score is NaN, its reason kept, and the others go on."""

from __future__ import annotations

from dataclasses import dataclass, field

from losstune import population
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


def retrain_executions(hypermodel, runs, fit, *, scoring, together, stream, verbose=0):
    """Train every run, a pair (execution, candidates), each candidate with its execution's seed and fold: a
    list of Outcome lists, one per run, in order.

    Args:
        hypermodel: the search's LossHyperModel (`build(hp, execution)`, `fit(..., execution=)`).
        runs: pairs (execution, candidates): the repeat index, passed on (never set on the hypermodel), and
            `Candidate`s.
        fit: x, y, batch_size (or a dataset as x), validation_data and epochs, as given to the search.
        scoring: the search's `Scoring`.
        together: train as populations (one per architecture) instead of one after the other.
        stream: where a population's fallback line goes.

    With `together`, the runs train as populations (`population.train_members`): the executions of a pass
    over the folds at once (folds as members), or, without folds, every execution at once where each seed can
    iterate the input (repeats as members: `population.executions_together`).
    """
    members = {execution: [population.Member(hypermodel.build(c.hyperparameters, execution), list(c.callbacks),
                                             name=c.name, hyperparameters=c.hyperparameters) for c in candidates]
               for execution, candidates in runs}
    if together:
        population.train_members(hypermodel, members, fit, stream, verbose)
    else:
        for execution, group in members.items():
            for member in group:
                population.fit_alone(hypermodel, member, fit, execution, verbose)
    return [[Outcome(scoring.score(m.history, m.failure), scoring.calibration_score(m.history, m.failure),
                     m.failure, dict(m.history)) for m in members[execution]] for execution, _ in runs]
