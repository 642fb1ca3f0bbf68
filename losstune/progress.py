"""What the terminal shows as trials end: one status line per trial."""

from __future__ import annotations

from losstune import layout
from losstune.stats import sign


def stopped_note(stopped):
    """Where and why a pruning rule stopped a trial, in words ("" when it was not stopped)."""
    if not stopped:
        return ""
    if "rung" in stopped:  # successive halving
        return (f"stopped early at epoch {stopped['epoch'] + 1}: {stopped['value']:.4f} ranked {stopped['rank']} "
                f"at the rung, where the {stopped['rung']} go on")
    return (f"stopped early at epoch {stopped['epoch'] + 1}: {stopped['value']:.4f} worse than the median "
            f"{stopped['median']:.4f} of earlier trials")


def status_line(trial, description, objective, *, ended=None, max_trials=None, worker=None, repeats=None,
                stopped=None, message="", traceback_file=None):
    """`[done/max] trial <id>  <loss>  <outcome>  best so far ...` for a KerasTuner trial that just ended.

    `ended`: the oracle's ended trials (None for a distributed worker, whose oracle client knows only its own:
    the line then names the worker and shows no best); `repeats` and `stopped`: the trial's records (layout).
    """
    if ended is not None:
        scored = [t for t in ended if t.status == layout.COMPLETED and t.score is not None]
        best_text = "  no best yet"
        if scored:
            best = max(scored, key=lambda t: sign(objective.direction) * t.score)
            best_text = f"  best so far {best.score:.4f} (trial {best.trial_id})"
        where = f"{len(ended)}/{max_trials}" if max_trials else f"{len(ended)}"  # the bracket counts ended trials
    else:
        where, best_text = worker, ""
    if trial.status == layout.COMPLETED and trial.score is not None:
        outcome = f"{objective.name}={trial.score:.4f}"
        if repeats is not None and len(repeats.scores) > 1:
            outcome += f" ± {repeats.mean_se[1]:.4f} ({len(repeats.scores)} repeats)"
        if stopped:
            outcome += "  STOPPED EARLY" + stopped_note(stopped)[len("stopped early"):]
    else:
        outcome = f"{trial.status}: {message or 'no score'}"
        if traceback_file:
            outcome += f" (traceback: {traceback_file})"
    return f"[{where}] trial {trial.trial_id}  {description}  {outcome}{best_text}"
