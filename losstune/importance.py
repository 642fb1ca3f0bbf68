"""What mattered: how much of the score's variation each hyperparameter explains, and a summary per family.

Conditional spaces make one importance over every trial misleading (focal's gamma exists only in focal
trials), so the estimate is made in scopes:

- `all`: every completed trial, with the family choice and the class-weight power as the features (a family
  the modifier does not apply to trains unweighted, which is power 0, so it counts as 0);
- one scope per family: that family's completed trials, with its own searched parameters (and the
  class-weight power where it applies) as the features.

Method: scikit-learn's `RandomForestRegressor` (50 trees) fitted to the trial means, and permutation importance
(as `sklearn.inspection.permutation_importance` computes it) on out-of-bag predictions: each trial is predicted
by the trees whose bootstrap sample left it out (Breiman 2001), and a parameter's importance is how much that
held-out R^2 drops when the parameter's column is shuffled across all the scope's trials (10 shuffles).
Categorical columns (the family, a parameter's string values) are one-hot encoded inside the model and shuffled
as one column. `share`
normalises the positive drops to sum to 1 within a scope (the fraction of the explained variation);
`explained` is the held-out R^2 itself: how much of the score's variance the searched parameters explain at all
on trials the forests did not see (below `NOISE_R2`, 0.1: the scores look like noise with respect to these
parameters, and the shares say little).
Why this and not the others:

- held out, not on the training trials: a forest memorises its training trials with any column at hand, so
  a parameter with no effect gets a training-set importance whenever another effect is unexplained in the
  scope (tests/test_importance.py plants such a parameter). Out of bag rather than cross-fitted over 5 folds:
  one forest per scope instead of five, with the same shares on the planted tests and a fraction of the time
  (benchmarks/README.md);
- the forest's own impurity importances (MDI) favour features with many distinct values, so a continuous
  parameter would beat the family choice (a handful of categories) for no reason (Strobl et al. 2007);
  permutation importance has no such bias towards cardinality;
- Optuna's fANOVA evaluator (itself built on scikit-learn's forest) would add Optuna as a dependency for
  the same kind of answer (a share per parameter); scikit-learn is a dependency already.

Not enough trials: a scope with fewer than `MIN_TRIALS` (5) completed trials gets no number. The reason: with
n trials, a parameter's values can be ordered in n! ways, so a perfectly ordered relation between one
parameter and the score arises by chance with probability 1/n! -- 1/6 with 3 trials, 1/24 (4%) with 4,
1/120 (<1%) with 5. Below 5 a planted effect cannot be told from chance at the 1% level (an exact rank test),
and a forest of so few points is no estimate at all. A parameter that never varied in a scope explains
nothing there and is reported as such.

Deterministic: every forest, split and shuffle uses random_state 0 with one job.

Only the trials that count (layout.counts, the rule the pick and the warnings use too): failed trials have no
score, and trials stopped early carry a score-so-far that is not comparable with a full training.
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass, field

import numpy as np

from losstune import layout, stats
from losstune.lossspace import POWER_HP, START_HP

ALL = "all"  # the scope over every family
FAMILY = "family"  # the family choice's name in the `all` scope
MIN_TRIALS = 5
SEED = 0
NOISE_R2 = 0.1  # a held-out R^2 below this: the parameters explain (next to) nothing
N_TREES = 50
N_SHUFFLES = 10
METHOD = ("permutation importance (drop in held-out R^2 when a parameter is shuffled, 10 shuffles) of scikit-learn "
          "random forests fitted to the trial means, out-of-bag predictions")


def label(name):
    """How a hyperparameter is shown: `class_weights/power` -> `class-weight power`."""
    return {POWER_HP: "class-weight power", START_HP: "class-weight start"}.get(name, name)


def usable(trials):
    """The trials that count: completed (not stopped early), with a finite score (a trial mean)."""
    return [t for t in trials if layout.counts(t)]


# --- the data: one table of (parameters -> trial mean) per scope ---------------------------------------------
@dataclass
class Observations:
    """One scope's trials as numeric columns (categorical values as codes into `categories[i]`)."""

    scope: str
    names: list
    columns: list  # one float array per name
    categories: list  # per name: the labels of the codes (tuple) or None for a numeric parameter
    log: list  # per name: searched on a log scale (for plots)
    scores: np.ndarray
    se: np.ndarray  # standard error of each trial mean (nan: a single repeat)
    trial_ids: list

    @property
    def trials(self):
        return len(self.scores)


def _modifier_specs(space, family=None):
    """The class-weight modifier's tuned hyperparameters (power, deferral start) as table specs, for the
    `all` scope (family None) or a family the modifier applies to."""
    weighted = space.weightable()
    if not weighted or (family is not None and family not in weighted):
        return []
    out = []
    for name, rng, attribute in ((POWER_HP, space.power, "power"), (START_HP, space.start, "start")):
        if rng is not None and not rng.fixed:
            getter = (lambda a: lambda t: getattr(t.loss, a) or 0.0)(attribute)
            out.append((name, getter, None, rng.sampling == "log"))
    return out


def observations(trials, space):
    """{scope: Observations}: `all` first, then each of the space's families (and any other family a trial
    used), with every completed trial of the scope."""
    done = usable(trials)
    families = list(space.families) + sorted({t.family for t in done} - set(space.families))
    out = {}

    def table(scope, rows, specs):
        names, columns, categories, logs = [], [], [], []
        for name, getter, cats, log in specs:
            names.append(name)
            values = [getter(t) for t in rows]
            if cats is not None:
                cats = list(cats) + sorted({str(v) for v in values} - set(cats))
                columns.append(np.array([cats.index(str(v)) for v in values], dtype=float))
                cats = tuple(cats)
            else:
                columns.append(np.array(values, dtype=float))
            categories.append(cats)
            logs.append(log)
        return Observations(scope, names, columns, categories, logs,
                            np.array([t.score for t in rows], dtype=float),
                            np.array([np.nan if t.se is None else t.se for t in rows], dtype=float),
                            [t.trial_id for t in rows])

    top = []
    if len(families) > 1:
        top.append((FAMILY, lambda t: t.family, tuple(families), False))
    top += _modifier_specs(space)
    out[ALL] = table(ALL, done, top)
    for family in families:
        rows = [t for t in done if t.family == family]
        specs = []
        for pname, rng in space.families.get(family, {}).items():
            if rng.fixed:
                continue
            getter = (lambda p: lambda t: t.params.get(p))(pname)
            numeric = rng.values is None or all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                for v in rng.values)
            cats = None if numeric else tuple(str(v) for v in rng.values)
            specs.append((pname, getter, cats, rng.sampling == "log"))
        specs += _modifier_specs(space, family)
        out[family] = table(family, rows, specs)
    return out


# --- importance ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamImportance:
    """One hyperparameter in one scope. `share` is None when there is no number to give (see `note`)."""

    name: str
    trials: int
    share: float | None = None  # fraction of the explained variation (the scope's shares sum to 1)
    drop: float | None = None  # drop in R^2 when shuffled (mean over shuffles)
    drop_std: float | None = None
    note: str = ""

    @property
    def label(self):
        return label(self.name)

    def describe(self):
        return f"{self.share:.2f}" if self.share is not None else self.note


@dataclass(frozen=True)
class ImportanceGroup:
    """The importances of one scope (`all` or a family), with the number of trials they rest on."""

    scope: str
    trials: int
    params: tuple = ()
    explained: float | None = None  # out-of-bag R^2 of the forest (how much the parameters explain)
    note: str = ""

    def __getitem__(self, name):
        for p in self.params:
            if p.name == name or p.label == name:
                return p
        raise KeyError(f"{name!r} is not a searched hyperparameter of {self.scope!r}; it has "
                       f"{[p.name for p in self.params]}")

    @property
    def enough(self):
        return any(p.share is not None for p in self.params)

    def headline(self):
        title = "across families" if self.scope == ALL else self.scope
        text = f"{title} ({self.trials} completed trial{'s' if self.trials != 1 else ''})"
        if self.note:
            return f"{text}: {self.note}"
        if self.explained is not None:
            if self.explained >= NOISE_R2:
                text += f": the searched parameters explain {self.explained:.0%} of the score's variance (held out)"
            else:
                text += (f": held-out R^2 {self.explained:.2f}, the score's differences look like noise with "
                         f"respect to these parameters; the shares say little")
        return text


@dataclass(frozen=True)
class ImportanceReport:
    """`result.importance()`: the `all` scope, then one per family. Index it with a scope name."""

    overall: ImportanceGroup
    families: dict = field(default_factory=dict)
    objective: str = ""
    min_trials: int = MIN_TRIALS
    method: str = METHOD

    def __getitem__(self, scope):
        if scope in (ALL, "overall"):
            return self.overall
        return self.families[scope]

    @property
    def groups(self):
        return [self.overall] + list(self.families.values())

    def to_dict(self):
        return {
            "objective": self.objective, "method": self.method, "min_trials": self.min_trials,
            "scopes": {g.scope: {"trials": g.trials, "explained": g.explained, "note": g.note,
                                 "params": {p.name: {"share": p.share, "drop": p.drop, "drop_std": p.drop_std,
                                                     "trials": p.trials, "note": p.note} for p in g.params}}
                       for g in self.groups},
        }

    def text(self):
        lines = [f"What mattered for {self.objective}: each hyperparameter's share of the score's explained "
                 f"variation (held-out permutation importance of random forests)"]
        for g in self.groups:
            lines.append("  " + g.headline())
            if g.note:
                continue
            for p in g.params:
                bar = "#" * int(round(20 * p.share)) if p.share is not None else ""
                lines.append(f"    {p.label:<24} {p.describe():>6}  {bar}" if p.share is not None
                             else f"    {p.label:<24} {p.note}")
        return "\n".join(lines)

    def to_markdown(self):
        rows = [f"| scope | hyperparameter | share of explained variation | trials |", "|---|---|---|---|"]
        for g in self.groups:
            scope = "across families" if g.scope == ALL else g.scope
            if g.note or not g.params:
                rows.append(f"| {scope} | - | {g.note or 'nothing searched'} | {g.trials} |")
                continue
            for p in g.params:
                rows.append(f"| {scope} | {p.label} | {p.describe()} | {p.trials} |")
        explained = [f"{'across families' if g.scope == ALL else g.scope}: {g.explained:.2f}"
                     for g in self.groups if g.explained is not None]
        notes = [f"Method: {self.method}; fewer than {self.min_trials} completed trials: not enough trials."]
        if explained:
            notes.append("Held-out R^2 (how much of the score's variance the parameters explain): "
                         + ", ".join(explained) + ".")
        return "\n".join(rows + [""] + notes)

    __str__ = text


def estimate(obs: Observations, min_trials=MIN_TRIALS) -> ImportanceGroup:
    """The importance of each of `obs`'s parameters (see the module docstring for the method)."""
    n = obs.trials
    if not obs.names:
        return ImportanceGroup(obs.scope, n, note="no searched hyperparameter")
    if n < min_trials:
        why = f"not enough trials ({n} < {min_trials})"
        return ImportanceGroup(obs.scope, n, tuple(ParamImportance(name, n, note=why) for name in obs.names),
                               note=why)
    flat = {name: f"did not vary (every trial at {_value(obs, i, 0)})"
            for i, name in enumerate(obs.names) if np.unique(obs.columns[i]).size < 2}
    varying = [i for i, name in enumerate(obs.names) if name not in flat]
    if not varying:
        return ImportanceGroup(obs.scope, n, tuple(ParamImportance(name, n, note=flat[name]) for name in obs.names),
                               note="no searched hyperparameter varied")
    if np.ptp(obs.scores) == 0:
        why = f"the score did not vary (every trial {obs.scores[0]:.4g})"
        return ImportanceGroup(obs.scope, n, tuple(ParamImportance(name, n, note=why) for name in obs.names),
                               note=why)
    x = np.column_stack([obs.columns[i] for i in varying])
    categorical = [k for k, i in enumerate(varying) if obs.categories[i] is not None]
    drops, explained = _held_out_drops(x, obs.scores, categorical)
    mean = drops.mean(axis=1)
    std = drops.std(axis=1)
    positive = np.clip(mean, 0.0, None)
    total = float(positive.sum())
    rows = []
    for i, name in enumerate(obs.names):
        if name in flat:
            rows.append(ParamImportance(name, n, note=flat[name]))
            continue
        k = varying.index(i)
        share = float(positive[k] / total) if total > 0 else 0.0
        rows.append(ParamImportance(name, n, share, float(mean[k]), float(std[k])))
    return ImportanceGroup(obs.scope, n, tuple(rows), explained)


def _held_out_drops(x, y, categorical=()):
    """(drops, R^2): per feature and shuffle, the drop in held-out R^2 when the feature is shuffled across all
    the scope's trials, and the held-out R^2 itself. Each trial is predicted by the trees that did not see it
    (`_OutOfBag`), so a column is shuffled over every trial at once. Categorical columns (the family, a
    parameter's string values) are one-hot encoded inside the model, so a category in the middle of the codes
    costs no extra split, and a shuffle still moves the whole categorical column."""
    from sklearn.metrics import r2_score

    model = _out_of_bag(categorical).fit(x, y)
    copies = _shuffled_copies(x)
    predictions = model.predict_copies([x] + copies)
    explained = r2_score(y, predictions[0])
    drops = explained - np.array([r2_score(y, p) for p in predictions[1:]])
    return drops.reshape(x.shape[1], N_SHUFFLES), explained


def _shuffled_copies(x):
    """The copies of `x` that `sklearn.inspection.permutation_importance(..., n_repeats=N_SHUFFLES,
    random_state=SEED)` scores, feature by feature, shuffle after shuffle (its shuffles compound), made here
    so every copy is predicted in one call per tree: scikit-learn predicts each copy on its own, and that was
    most of a search's report time (benchmarks/README.md). The test suite checks the numbers against
    scikit-learn's."""
    seed = np.random.RandomState(SEED).randint(np.iinfo(np.int32).max + 1)
    copies = []
    for column in range(x.shape[1]):
        rng, permuted, order = np.random.RandomState(seed), x.copy(), np.arange(len(x))
        for _ in range(N_SHUFFLES):
            rng.shuffle(order)
            permuted[:, column] = permuted[order, column]
            copies.append(permuted.copy())
    return copies


@functools.lru_cache(maxsize=None)
def _out_of_bag_class():
    from sklearn.base import BaseEstimator, RegressorMixin

    class _OutOfBag(RegressorMixin, BaseEstimator):
        """Out-of-bag prediction as an estimator: `fit` trains one forest; `predict` on the same rows (in the
        same order, as `permutation_importance` passes them) predicts row i with the trees whose bootstrap
        sample left row i out (all trees, in the 1e-9-likely case that none did). Its R^2 is the out-of-bag
        R^2."""

        def __init__(self, categorical=()):
            self.categorical = categorical

        def _forest(self):
            from sklearn.compose import ColumnTransformer
            from sklearn.ensemble import RandomForestRegressor
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import OneHotEncoder

            forest = RandomForestRegressor(n_estimators=N_TREES, random_state=SEED, n_jobs=1)
            if not self.categorical:
                return forest
            onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
            encode = ColumnTransformer([("onehot", onehot, list(self.categorical))], remainder="passthrough")
            return make_pipeline(encode, forest)

        def fit(self, x, y):
            model = self._forest().fit(x, y)
            # the encoder (None without categorical columns) and the forest, as `predict_copies` uses them
            self.encode_, self.forest_ = (model[:-1], model[-1]) if self.categorical else (None, model)
            self.oob_ = np.ones((len(self.forest_.estimators_), len(y)), bool)  # tree t did not see row i
            for t, rows in enumerate(self.forest_.estimators_samples_):
                self.oob_[t, rows] = False
            self.n_rows_ = len(y)
            return self

        def predict(self, x):
            return self.predict_copies([x])[0]

        def predict_copies(self, copies):
            """Predictions (one row per copy) for copies of the fitted rows: row i by the trees that did not
            see it, every tree predicting every copy in one call."""
            if any(len(x) != self.n_rows_ for x in copies):
                raise ValueError("an out-of-bag model predicts the rows it was fitted on, in their order")
            stacked = np.concatenate(copies)
            if self.encode_ is not None:
                stacked = self.encode_.transform(stacked)
            stacked = np.asarray(stacked, dtype=np.float32)
            trees = np.stack([tree.predict(stacked) for tree in self.forest_.estimators_])
            trees = trees.reshape(len(self.forest_.estimators_), len(copies), self.n_rows_)
            held_out = self.oob_[:, None, :]
            counts = held_out.sum(axis=0)
            return np.where(counts > 0, (trees * held_out).sum(axis=0) / np.maximum(counts, 1), trees.mean(axis=0))

    return _OutOfBag


def _out_of_bag(categorical=()):
    """An `_OutOfBag` estimator (the class is made on first use: scikit-learn is imported when importance is
    computed, not with losstune)."""
    return _out_of_bag_class()(categorical)


def _value(obs, i, row):
    v = obs.columns[i][row]
    return obs.categories[i][int(v)] if obs.categories[i] is not None else f"{v:g}"


def importance(trials, space, objective="score", min_trials=MIN_TRIALS, tables=None) -> ImportanceReport:
    """The ImportanceReport of `trials` (TrialRecords) searched in `space` (a LossSpace)."""
    tables = tables if tables is not None else observations(trials, space)
    groups = {scope: estimate(obs, min_trials) for scope, obs in tables.items()}
    overall = groups.pop(ALL)
    return ImportanceReport(overall, groups, objective, min_trials)


# --- per-family summary --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FamilySummary:
    """One family's trials: how many, the best, median and spread of their trial means, the best loss."""

    family: str
    trials: int  # completed trials with a finite score
    not_completed: int = 0  # failed, invalid, stopped early or still running: not in the numbers
    best: float | None = None
    median: float | None = None
    worst: float | None = None
    std: float | None = None  # sample standard deviation of the trial means (None below 2 trials)
    best_trial: str | None = None
    best_params: dict | None = None
    best_power: float | None = None
    best_loss: str = ""  # the best trial's loss in one line

    def to_dict(self):
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def family_summaries(trials, space, direction="max"):
    """A FamilySummary per family of the space (in its order), then any other family a trial used."""
    done = usable(trials)
    names = list(space.families) + sorted({t.family for t in trials} - set(space.families))
    sign = stats.sign(direction)
    out = []
    for family in names:
        rows = [t for t in done if t.family == family]
        others = sum(1 for t in trials if t.family == family) - len(rows)
        if not rows:
            out.append(FamilySummary(family, 0, others))
            continue
        scores = [t.score for t in rows]
        best = max(rows, key=lambda t: (sign * t.score, -int(t.trial_id) if str(t.trial_id).isdigit() else 0))
        out.append(FamilySummary(
            family, len(rows), others, best=best.score, median=float(statistics.median(scores)),
            worst=min(scores, key=lambda v: sign * v),
            std=float(statistics.stdev(scores)) if len(scores) > 1 else None,
            best_trial=best.trial_id, best_params=dict(best.params), best_power=best.power,
            best_loss=best.loss.describe(),
        ))
    return out


def _num(v):
    return "-" if v is None else f"{v:.4f}"


def summary_text(summaries, objective="score"):
    """The per-family summary as a text table."""
    lines = [f"per family ({objective}: trial means)",
             f"{'family':<18} {'trials':>6} {'best':>8} {'median':>8} {'sd':>8} {'worst':>8}  best hyperparameters"]
    for s in summaries:
        extra = f" (+{s.not_completed} without a full score)" if s.not_completed else ""
        lines.append(f"{s.family:<18} {s.trials:>6} {_num(s.best):>8} {_num(s.median):>8} {_num(s.std):>8} "
                     f"{_num(s.worst):>8}  {s.best_loss or '-'}{extra}")
    return "\n".join(lines)


def summary_markdown(summaries, objective="score"):
    """The per-family summary as a markdown table (TensorBoard's text dashboard renders it)."""
    rows = [f"| family | trials | best {objective} | median | sd | worst | best hyperparameters |",
            "|---|---|---|---|---|---|---|"]
    for s in summaries:
        extra = f" (+{s.not_completed} without a full score)" if s.not_completed else ""
        rows.append(f"| {s.family} | {s.trials}{extra} | {_num(s.best)} | {_num(s.median)} | {_num(s.std)} | "
                    f"{_num(s.worst)} | {s.best_loss or '-'} |")
    return "\n".join(rows)
