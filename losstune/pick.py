"""The pick and the warnings: which trial a search recommends, and what the user should know about it.

Only trials that count (layout.counts: completed, not stopped early, a finite score) compete. result.py
reads a search back and presents it; the decisions it shows are made here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from losstune import families, layout, sampling, stats


class SampleError:
    """The validation sample's own error in trial scores, bootstrapped from the trials' kept validation
    predictions (`runs`: one (y_true, y_pred) per repeat; predictions.py) with sampling.py: class-stratified,
    paired between candidates, under the search's class prior. None wherever it cannot be measured (no kept
    predictions, an objective sampling.py does not know)."""

    N_BOOT = 500

    def __init__(self, objective, prior="validation"):
        # by name: the bootstrap's strata follow the metric (classes, or one stratum for regression)
        self.metric = objective if sampling.metric_fn(objective) is not None else None
        self.prior = prior
        self._single = {}

    def _runs(self, trial, repeats):
        runs = getattr(trial, "runs", None)
        if self.metric is None or not runs or len(runs) < repeats:
            return None
        return sampling.with_prior(runs[:repeats], self.prior)

    def single(self, trial):
        """The validation-sampling standard error of `trial`'s mean score, or None."""
        if trial.trial_id not in self._single:
            runs = self._runs(trial, len(trial.scores))
            self._single[trial.trial_id] = (None if runs is None else
                                            sampling.single_bootstrap(runs, self.metric, n_boot=self.N_BOOT).se_sample)
        return self._single[trial.trial_id]

    def paired(self, a, b):
        """The validation-sampling standard error of the paired difference of `a` and `b`, or None."""
        repeats = min(len(a.scores), len(b.scores))
        ra, rb = self._runs(a, repeats), self._runs(b, repeats)
        if ra is None or rb is None:
            return None
        try:
            return sampling.paired_bootstrap(ra, rb, self.metric, n_boot=self.N_BOOT).se_sample
        except ValueError:  # their repeats validated on different examples: not paired
            return None


@dataclass(frozen=True)
class Difference:
    """How much better `a` is than `b` (paired over their common repeats, in the objective's direction), and
    the standard errors of that gap: over seeds (folds), over the validation sample, and both together."""

    gap: float
    se_seed: float | None
    se_sample: float | None

    @property
    def se(self):
        parts = [s for s in (self.se_seed, self.se_sample) if s is not None]
        return math.sqrt(sum(s * s for s in parts)) if parts else None

    @property
    def dominant(self):
        """"validation sample" or "seeds": the larger source of error."""
        return "validation sample" if (self.se_sample or 0.0) >= (self.se_seed or 0.0) else "seeds"

    def describe_se(self):
        parts = [f"seeds {self.se_seed:.4f}" if self.se_seed is not None else None,
                 f"validation sample {self.se_sample:.4f}" if self.se_sample is not None else None]
        return f"{self.se:.4f}: " + ", ".join(p for p in parts if p)


def difference(a, b, direction, sample_error=None):
    """The paired `Difference` of trials `a` and `b` (repeat k of each shares its seed and fold)."""
    repeats = min(len(a.scores), len(b.scores))
    diff = stats.sign(direction) * (np.asarray(a.scores[:repeats]) - np.asarray(b.scores[:repeats]))
    gap, se_seed = stats.mean_se(diff)
    return Difference(gap, se_seed, sample_error.paired(a, b) if sample_error is not None else None)


def pick(trials, direction, sample_error=None):
    """(best by mean, the pick, a note): the honest pick among the best-repeated completed trials.

    Only trials with the most repeats compete (after racing, the top candidates; otherwise all), so a lucky
    single run cannot beat means over several. The fallback is the best simple candidate by mean (the baseline
    or one of the space's recipes), or, where that is a recipe, the first recipe in the space's order within
    one standard error of it (the space's order is its preference among recipes it cannot tell apart). The
    best trial is the pick unless it is simple or cannot be told from the best simple candidate: a searched
    trial must lead it by more than the lead the best of m searched trials shows by chance,
    `stats.selection_margin(m)` standard errors of their paired difference (at least one). Every standard
    error counts the seeds' spread and, where predictions are kept, the validation sample's own error
    (`sample_error`). The note says which way each comparison went, and when the pick cannot be told from the
    baseline.
    """
    done = [t for t in trials if layout.counts(t)]
    if not done:
        return None, None, ""
    most = max(len(t.scores) for t in done)
    pool = [t for t in done if len(t.scores) == most] if most > 1 else done
    sign = stats.sign(direction)

    def best_of(candidates):
        return max(candidates, key=lambda t: (sign * t.score, -t.simplicity, -int(t.trial_id)), default=None)

    best, leader = best_of(pool), best_of([t for t in pool if t.is_simple])
    if leader is None:
        return best, best, ""
    comparison = ""
    if best is not leader:
        searched = sum(not t.is_simple for t in done)
        margin = stats.selection_margin(searched)
        d = difference(best, leader, direction, sample_error)
        if d.se is None or d.gap > margin * d.se:
            return best, best, _baseline_note(best, pool, direction, sample_error)
        label = "the baseline" if leader.is_baseline else f"the recipe '{leader.recipe}'"
        comparison = (
            f"The best mean, trial {best.trial_id} ({best.describe_loss()}), leads {label} "
            f"(trial {leader.trial_id}) by {d.gap:+.4f} only, within "
            + ("one standard error" if margin == 1.0 else f"{margin:.2f} x the standard error")
            + f" ({d.describe_se()}) of the paired difference over {most} repeat(s)"
            + ("" if margin == 1.0 else f", the lead the best of {searched} searched trials shows by chance")
            + ", so it cannot be told apart from the simpler loss.")
    fallback, order_note = _first_recipe_within_one_se(leader, pool, direction, sample_error)
    if fallback is best:
        return best, best, _baseline_note(best, pool, direction, sample_error)
    label = "the baseline" if fallback.is_baseline else f"the recipe '{fallback.recipe}'"
    notes = [f"picked {label} (trial {fallback.trial_id}).", comparison, order_note,
             _baseline_note(fallback, pool, direction, sample_error)]
    return best, fallback, " ".join(n for n in notes if n)


def _first_recipe_within_one_se(leader, pool, direction, sample_error):
    """(the recipe listed first in the space among those within one standard error of `leader`, a note), or
    (`leader`, "") where `leader` is the baseline or no earlier recipe is that close."""
    if leader.is_baseline:
        return leader, ""
    for t in sorted((t for t in pool if t.recipe is not None and t.simplicity < leader.simplicity),
                    key=lambda t: t.simplicity):
        d = difference(leader, t, direction, sample_error)
        if d.se is not None and d.gap <= d.se:
            return t, (f"Among the recipes, '{t.recipe}' is listed before '{leader.recipe}' "
                       f"(trial {leader.trial_id}), which leads it by {d.gap:+.4f} only, within one standard error "
                       f"({d.describe_se()}): the space's order is its preference.")
    return leader, ""


def _baseline_note(chosen, pool, direction, sample_error):
    """A note when `chosen` cannot be told from the baseline (within one standard error); "" otherwise."""
    baseline = next((t for t in pool if t.is_baseline), None)
    if baseline is None or chosen is baseline:
        return ""
    d = difference(chosen, baseline, direction, sample_error)
    if d.se is None or d.gap > d.se:
        return ""
    return (f"The pick leads the baseline (trial {baseline.trial_id}) by {d.gap:+.4f} only, within one standard "
            f"error ({d.describe_se()}): it cannot be told apart from the baseline on this validation data.")


def unraced_note(trials, best, direction):
    """A note when trials with fewer repeats than the pick scored above it ("" if none)."""
    sign = stats.sign(direction)
    unraced = [t for t in trials if layout.counts(t) and len(t.scores) < len(best.scores)
               and sign * (t.score - best.score) > 0]
    if not unraced:
        return ""
    return (f"{len(unraced)} trial(s) with fewer repeats scored above the pick (trial "
            f"{', '.join(t.trial_id for t in unraced[:5])}); a single run does not compete with means over "
            f"{len(best.scores)} repeats; pass a larger `race` to repeat more of them.")


def _spread_warning(best, done, direction, sample_error):
    """A warning when the best mean cannot be told from the runner-up with as many repeats: the gap is
    within the standard error of their paired difference; says which source of error dominates."""
    if best is None:
        return []
    sign = stats.sign(direction)
    # compare like with like: means over as many repeats as the best's
    others = sorted((t for t in done if t is not best and len(t.scores) == len(best.scores)),
                    key=lambda t: -sign * t.score)
    if not others:
        return []
    d = difference(best, others[0], direction, sample_error)
    if d.se is None or d.gap >= d.se:
        return []
    if d.se_sample is None:
        return [f"the top trials differ by {d.gap:.4f}, less than the spread of their repeats (standard error "
                f"{d.se:.4f}); more repeats (executions_per_trial, folds) would be needed to separate them."]
    advice = ("the validation set is too small to separate them: search with folds=k over the training and "
              "validation data, or hold out a larger validation split" if d.dominant == "validation sample" else
              "more repeats (executions_per_trial, a larger race) would separate them")
    return [f"the top trials differ by {d.gap:.4f}, less than the standard error of their difference "
            f"({d.describe_se()}); the {d.dominant} dominates: {advice}."]


ECE_MARGIN = 0.05  # a pick this much worse calibrated than the baseline (absolute ECE) gets a warning
ECE_RATIO = 1.5  # ... and this many times worse


def _calibration_warning(pick, baseline):
    """A warning when the pick's probabilities are much worse calibrated than the baseline's."""
    if pick is None or baseline is None or pick is baseline or pick.ece is None or baseline.ece is None:
        return []
    if pick.ece - baseline.ece < ECE_MARGIN or pick.ece < ECE_RATIO * baseline.ece:
        return []
    return [f"the pick is worse calibrated than the baseline (expected calibration error {pick.ece:.3f} against "
            f"{baseline.ece:.3f} on validation): its probabilities over- or under-state its confidence; if you "
            f"use them (thresholds, risk scores, ranking across classes), recalibrate it (temperature scaling "
            f"on held-out data) or prefer a loss with a lower ECE from the table."]


_BOUNDED_ABOVE = ("auc", "f1", "accuracy", "acc", "precision", "recall", "iou")


def warnings(result):
    """What the user should know about the scores of `result` (a SearchResult), each with what to do."""
    found = []
    done = [t for t in result.trials if layout.counts(t)]
    name, direction = result.objective["name"], result.objective["direction"]
    words = name.lower().split("_")
    bound = 1.0 if direction == "max" and any(w in _BOUNDED_ABOVE for w in words) else None
    if bound is not None:
        at_bound = [t for t in done if t.score >= bound - 1e-6]
        if len(at_bound) >= 2:
            found.append(f"the objective saturated: {len(at_bound)} trials scored {name} = {bound:g}, so the "
                         f"search cannot rank them; use a larger or harder validation set, or folds=k.")
    counts = result.context.validation_counts
    if counts and result.task.class_weighted:
        small = sampling.small_classes(counts)
        if small:
            found.append(f"validation classes {small} have fewer than {sampling.SMALL_CLASS} examples "
                         f"(counts {[int(counts[c]) for c in small]}): {name} moves in big steps with each of "
                         f"their predictions; search with folds=k over the training data, or a larger "
                         f"validation split.")
    found += _spread_warning(result.best_mean_trial, done, direction, getattr(result, "sample_error", None))
    pick = result.best_trial
    found += _calibration_warning(pick, result.baseline_trial)
    if pick is not None:
        family = families.get(pick.family)
        for pname, rng in result.space.families.get(pick.family, {}).items():
            value = pick.params.get(pname)
            if rng.fixed or rng.values is not None or not isinstance(value, (int, float)):
                continue
            width = rng.high - rng.low
            hyper = family.hyperparameter(pname)
            at_bottom = value - rng.low <= 0.01 * width and not (hyper.low is not None and rng.low <= hyper.low)
            at_top = rng.high - value <= 0.01 * width and not (hyper.high is not None and rng.high >= hyper.high)
            if width > 0 and (at_bottom or at_top):  # only where the range could be widened
                edge = "bottom" if at_bottom else "top"
                found.append(f"{pick.family}/{pname} = {value:.4g} lies at the {edge} of its search range "
                             f"[{rng.low:g}, {rng.high:g}]: the best value may lie beyond it; widen the range "
                             f"in the space and search again.")
    return found
