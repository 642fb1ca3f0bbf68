"""The pick and the warnings: which trial a search recommends, and what the user should know about it.

Only trials that count (layout.counts: completed, not stopped early, a finite score) compete. result.py
reads a search back and presents it; the decisions it shows are made here.
"""

from __future__ import annotations

import numpy as np

from losstune import families, layout, stats


def pick(trials, direction):
    """(best by mean, the pick, a note): the honest pick among the best-repeated completed trials.

    Only trials with the most repeats compete (after racing, the top candidates; otherwise all), so a lucky
    single run cannot beat means over several. The best mean wins unless a simpler candidate (the baseline,
    then the space's recipes in order) is within one standard error of the paired difference: then the simpler
    one is the pick, and the note says so (the one-standard-error rule).
    """
    done = [t for t in trials if layout.counts(t)]
    if not done:
        return None, None, ""
    most = max(len(t.scores) for t in done)
    pool = [t for t in done if len(t.scores) == most] if most > 1 else done
    sign = stats.sign(direction)
    best = max(pool, key=lambda t: (sign * t.score, -t.simplicity, -int(t.trial_id)))
    if most < 2:
        return best, best, ""
    simpler = []
    for t in pool:
        if t.simplicity >= best.simplicity:
            continue
        diff = sign * (np.asarray(best.scores) - np.asarray(t.scores))  # paired: repeat k shares seed and fold
        gap, se = stats.mean_se(diff)
        if gap <= se:
            simpler.append((t, gap, se))
    if not simpler:
        return best, best, ""
    pick, gap, se = min(simpler, key=lambda c: (c[0].simplicity, -sign * c[0].score))
    label = "the baseline" if pick.is_baseline else f"the recipe '{pick.recipe}'"
    return best, pick, (
        f"picked {label} (trial {pick.trial_id}): the best mean, trial {best.trial_id} "
        f"({best.describe_loss()}), is better by {gap:+.4f} only, within one standard error ({se:.4f}) "
        f"of the paired difference over {most} repeats, so it cannot be told apart from the simpler loss."
    )


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


_BOUNDED_ABOVE = ("auc", "f1", "accuracy", "acc", "precision", "recall", "iou")
_SMALL_CLASS = 5  # validation examples of a class below which its per-class metric moves in big steps


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
        small = [c for c, n in enumerate(counts) if n < _SMALL_CLASS]
        if small:
            found.append(f"validation classes {small} have fewer than {_SMALL_CLASS} examples "
                         f"(counts {[int(counts[c]) for c in small]}): {name} moves in big steps with each of "
                         f"their predictions; search with folds=k over the training data, or a larger "
                         f"validation split.")
    best = result.best_mean_trial
    if best is not None and best.se is not None:
        sign = stats.sign(direction)
        # compare like with like: means over as many repeats as the best's
        others = sorted((t for t in done if t is not best and len(t.scores) == len(best.scores)),
                        key=lambda t: -sign * t.score)
        if others and abs(best.score - others[0].score) < best.se:
            found.append(f"the top trials differ by {abs(best.score - others[0].score):.4f}, less than the "
                         f"spread of their repeats (standard error {best.se:.4f}); more repeats "
                         f"(executions_per_trial, folds) would be needed to separate them.")
    pick = result.best_trial
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
