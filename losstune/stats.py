"""The statistics of a search: means, standard errors and Student-t intervals over repeats."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

# Two-sided 95% Student-t quantiles by degrees of freedom.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t975(df):
    """The two-sided 95% Student-t quantile for `df` degrees of freedom (conservative between table rows)."""
    if df < 1:
        raise ValueError(f"`df` must be >= 1, got {df!r}.")
    return _T975[max(d for d in _T975 if d <= df)] if df <= 30 else 1.96


def selection_margin(m):
    """How many standard errors the best of `m` equally good candidates leads by chance: the expected maximum
    of m standard normals (Blom's approximation, within 0.03 of the exact value), and at least 1 (the
    one-standard-error rule). 1.43 for 8 candidates, 1.87 for 20, 2.04 for 30."""
    if m < 1:
        raise ValueError(f"`m` must be >= 1, got {m!r}.")
    return max(1.0, NormalDist().inv_cdf((m - 0.375) / (m + 0.25)))


def paired_difference(best, baseline):
    """Means, spreads and a 95% Student-t confidence interval of the paired difference best - baseline."""
    best, base = np.asarray(best, dtype="float64"), np.asarray(baseline, dtype="float64")
    diff = best - base
    n = len(diff)
    half = t975(n - 1) * float(diff.std(ddof=1)) / math.sqrt(n)
    return {
        "best_mean": float(best.mean()), "best_std": float(best.std(ddof=1)),
        "baseline_mean": float(base.mean()), "baseline_std": float(base.std(ddof=1)),
        "diff_mean": float(diff.mean()), "diff_ci": [float(diff.mean() - half), float(diff.mean() + half)],
    }


def mean_se(values):
    """(mean, standard error of the mean) of repeated scores; the SE is None for a single value."""
    values = np.asarray(values, dtype="float64")
    if values.size == 0:
        raise ValueError("`values` must hold at least one score.")
    if values.size == 1:
        return float(values[0]), None
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def sign(direction):
    """+1 where larger scores are better ("max"), -1 where smaller are ("min"): `sign * score` is larger-better."""
    if direction not in ("max", "min"):
        raise ValueError(f"`direction` must be 'max' or 'min', got {direction!r}.")
    return 1 if direction == "max" else -1


def best_of(values, direction):
    """The best of `values` for `direction`."""
    return max(values, key=lambda v: sign(direction) * v)


SCORE_RULES = ("last_quarter", "best", "last", "mean_last_3", "mean_last_5", "mean_last_10")


def curve_score(curve, rule, direction):
    """One score from a per-epoch validation curve.

    "last_quarter" (losstune's default): the mean of the last quarter of the epochs (at least one); measured in
    benchmarks/README.md ("Trial score rule and recipes") against the others on long-tailed validation data:
    the best rank correlation with the test score, the smallest optimistic bias and the least seed noise.
    "best": the best epoch's value (KerasTuner's own rule: a maximum over noisy epochs, which rewards volatile
    trials); "last": the last epoch's; "mean_last_k": the mean of the last k epochs (all of them when there
    are fewer). Non-finite values make the score NaN, so the trial cannot win.
    """
    values = np.asarray(curve, dtype="float64")
    if values.size == 0:
        return float("nan")
    if rule == "best":
        return float(values[int(np.argmax(sign(direction) * values))])
    if rule == "last":
        return float(values[-1])
    if rule == "last_quarter":
        return float(values[-max(1, math.ceil(values.size / 4)):].mean())
    if rule.startswith("mean_last_") and rule in SCORE_RULES:
        return float(values[-int(rule[len("mean_last_"):]):].mean())
    raise ValueError(f"`score` must be one of {list(SCORE_RULES)}, got {rule!r}.")
