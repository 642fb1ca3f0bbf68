"""Pictures of what mattered: the score against each hyperparameter per family, and the importance bars.

Drawn with matplotlib's object API (`matplotlib.figure.Figure` on the Agg canvas): no pyplot, no global
backend switch, no display needed, so it works in a headless search and inside a user's notebook alike.
matplotlib is imported when a picture is drawn, not when losstune is imported.
"""

from __future__ import annotations

import io

import numpy as np

from losstune.importance import ALL, FAMILY, label

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]
_DPI = 100


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def score_figure(obs, objective, best_id=None, baseline_id=None):
    """The score (trial means, with their standard error where there were repeats) against each of a
    scope's hyperparameters; None when the scope has no completed trial or no searched hyperparameter."""
    if obs.trials == 0 or not obs.names:
        return None
    k = len(obs.names)
    fig = _figure(3.4 * k + 0.4, 3.2)
    axes = fig.subplots(1, k, sharey=True, squeeze=False)[0]
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, obs.trials)
    se = np.where(np.isfinite(obs.se), obs.se, 0.0)
    best = np.array([t == best_id for t in obs.trial_ids])
    base = np.array([t == baseline_id for t in obs.trial_ids])
    by_family = FAMILY in obs.names  # the `all` scope: one color per family in every panel
    if by_family:
        codes = obs.columns[obs.names.index(FAMILY)].astype(int)
        colors = [_COLORS[c % len(_COLORS)] for c in codes]
    else:
        colors = _COLORS[0]
    for ax, name, column, cats, log in zip(axes, obs.names, obs.columns, obs.categories, obs.log):
        x = column + jitter if cats is not None else column
        if se.any():
            ax.errorbar(x, obs.scores, yerr=se, fmt="none", ecolor="#999999", elinewidth=1, capsize=0)
        ax.scatter(x, obs.scores, s=28, c=colors, alpha=0.75, label=None if by_family else "trial")
        if base.any():
            ax.plot(x[base], obs.scores[base], "s", ms=9, mfc="none", mec="#333333", mew=1.5, label="baseline")
        if best.any():
            ax.plot(x[best], obs.scores[best], "*", ms=14, color=_COLORS[1], label="best")
        if cats is not None:
            ax.set_xticks(range(len(cats)))
            ax.set_xticklabels(cats, rotation=30 if len(cats) > 3 else 0, ha="right" if len(cats) > 3 else "center",
                               fontsize=8)
            ax.set_xlim(-0.5, len(cats) - 0.5)
        elif log and np.all(column > 0):
            ax.set_xscale("log")
        ax.set_xlabel(label(name))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(objective)
    if base.any() or best.any():
        axes[0].legend(fontsize=7, loc="best")
    title = "all families" if obs.scope == ALL else obs.scope
    fig.suptitle(f"{objective} by hyperparameter: {title} ({obs.trials} trials)", fontsize=10)
    fig.tight_layout()
    return fig


def importance_figure(report):
    """Horizontal bars: each scope's share of the explained variation per hyperparameter; a scope or a
    parameter without a number says why in place of its bar."""
    rows = []  # (scope index, text, share or None, note)
    for i, g in enumerate(report.groups):
        scope = "all families" if g.scope == ALL else g.scope
        if not g.params:
            rows.append((i, scope, None, g.note or "nothing searched"))
        for p in g.params:
            rows.append((i, f"{scope}: {p.label}", p.share, p.note))
    fig = _figure(7.0, 0.32 * len(rows) + 1.2)
    ax = fig.add_subplot(1, 1, 1)
    ys = np.arange(len(rows))[::-1]
    for y, (i, text, share, note) in zip(ys, rows):
        if share is not None:
            ax.barh(y, share, color=_COLORS[i % len(_COLORS)], height=0.7)
            ax.text(share + 0.01, y, f"{share:.2f}", va="center", fontsize=8)
        else:
            ax.text(0.01, y, note, va="center", fontsize=8, color="#666666", style="italic")
    ax.set_yticks(ys)
    ax.set_yticklabels([r[1] for r in rows], fontsize=8)
    ax.set_xlim(0, 1.15)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("share of the explained variation (permutation importance)")
    ax.set_title(f"What mattered for {report.objective}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def figures(tables, report, objective, best_id=None, baseline_id=None):
    """{name: Figure}: `importance`, then `scores_<scope>` for each scope with something to show."""
    out = {"importance": importance_figure(report)}
    for scope, obs in tables.items():
        fig = score_figure(obs, objective, best_id, baseline_id)
        if fig is not None:
            out[f"scores_{scope}"] = fig
    return out


def to_png(fig):
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def to_array(fig):
    """The figure as an RGB image (uint8, H x W x 3), as `tf.summary.image` takes it."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
