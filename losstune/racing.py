"""After the search: more repeats for the top candidates (the race), and the pick against the baseline over
fresh seeds (`confirm_seeds`). Both retrain through retrain.retrain_executions, with the search's score rule
and, where the search trains populations, as populations (their repeats as members).
"""

from __future__ import annotations

import math
import os

from losstune import layout, predictions
from losstune import tensorboard_log as tb
from losstune.population import executions_together
from losstune.retrain import Candidate, retrain_executions
from losstune.stats import paired_difference, sign

RACE_REPEATS = 3  # repeats every raced candidate ends with: the fewest that give a standard error
CONFIRM_EXECUTION = 1000  # confirmation seed k is execution 1000 + k: seeds (and folds) the search never used


def race_candidates(result, size):
    """The `size` best counted trials by mean, and the best simple candidate (the baseline or a recipe) so the
    pick can be checked against it."""
    done = sorted(result.counted, key=lambda t: -sign(result.objective["direction"]) * t.score)
    candidates = done[:size]
    simple = [t for t in done if t.is_baseline or t.recipe is not None]
    if simple and simple[0] not in candidates:
        candidates.append(simple[0])
    return candidates


def race(hypermodel, result, fit, size, *, scoring, together, stream, verbose=0):
    """Extra repeats for the top candidates, so that the pick rests on means, not on one lucky run.

    Repeat k of every candidate is execution k (its seed and fold), as the search's own executions are, so
    differences between candidates are paired; with `together` the candidates' pending repeats train as
    populations (every repeat at once where `executions_together`).
    A repeat that diverges scores NaN (the candidate cannot be the pick). Each score is saved as it comes, so
    an interrupted race resumes.
    """
    candidates = race_candidates(result, size)
    target = max([RACE_REPEATS] + [len(t.scores) for t in candidates])
    logdir = os.path.join(result.directory, result.context.logdir)
    records = {}
    for t in candidates:
        folder = layout.trial_dir(result.directory, t.trial_id)
        records[t.trial_id] = (layout.Repeats.load(folder)
                               or layout.Repeats([t.score], result.context.score_rule, [t.ece or float("nan")]))
    pending = list(range(min(len(r.scores) for r in records.values()), target))
    # Where the search's populations train several executions at once (repeats or folds as members), every
    # pending repeat trains in one go; else one repeat at a time, each saved as it comes.
    rounds = [pending] if together and executions_together(hypermodel, fit) else [[e] for e in pending]
    for executions in rounds:
        runs = [(e, [t for t in candidates if len(records[t.trial_id].scores) <= e]) for e in executions]
        trainings = []
        for e, due in runs:
            validation = predictions.validation_arrays(hypermodel, fit, e)  # once per execution: its fold
            trainings.append((e, [_candidate(result, t, e, validation) for t in due]))
        outcome_lists = retrain_executions(hypermodel, trainings, fit, scoring=scoring, together=together,
                                           stream=stream, verbose=verbose)
        for (execution, due), outcomes in zip(runs, outcome_lists):
            for t, outcome in zip(due, outcomes):
                _record(result, t, records[t.trial_id], outcome, execution, target, scoring, logdir, stream)


def _record(result, trial, record, outcome, execution, target, scoring, logdir, stream):
    """Keep a raced repeat's score (saved at once, so an interrupted race resumes) and report it."""
    record.add(outcome.score, outcome.ece)
    record.save(layout.trial_dir(result.directory, trial.trial_id))
    mean, se = record.mean_se
    print(f"[race] trial {trial.trial_id} repeat {execution + 1}/{target}  {trial.describe_loss()}  "
          f"{scoring.objective}={outcome.score:.4f}  mean {mean:.4f}" + (f" ± {se:.4f}" if se is not None else ""),
          file=stream, flush=True)
    tb.update_trial_score(os.path.join(logdir, trial.trial_id), mean, step=execution)


def _candidate(result, trial, execution, validation):
    """A raced trial's repeat: its hyperparameters, and its validation predictions kept (where arrays)."""
    folder = layout.trial_dir(result.directory, trial.trial_id)
    callbacks = ([predictions.ValidationPredictions(layout.predictions_file(folder, execution), *validation)]
                 if validation is not None else [])
    return Candidate(f"trial {trial.trial_id}", layout.trial_hyperparameters(result.directory, trial.trial_id),
                     callbacks)


def confirm(hypermodel, result, fit, seeds, *, scoring, together, stream, verbose=0):
    """Retrain the pick and the baseline with `seeds` fresh seeds, scored by the search's rule.

    Returns the record `SearchContext.confirmation` keeps: per-seed scores (None where a training diverged),
    the seeds on which each diverged, and, over the seeds where both trained, means, spreads and a 95%
    Student-t interval of the paired difference (absent when fewer than 2 such seeds remain).
    """
    runs = {"best": result.best_trial, "baseline": result.baseline_trial}
    if runs["baseline"] is None:
        raise RuntimeError("confirm_seeds: the baseline trial did not complete, so there is nothing to compare.")
    hps = {label: layout.trial_hyperparameters(result.directory, t.trial_id) for label, t in runs.items()}
    scores = {label: [] for label in runs}
    runs = [(CONFIRM_EXECUTION + k, [Candidate(label, hp) for label, hp in hps.items()]) for k in range(seeds)]
    for outcomes in retrain_executions(hypermodel, runs, fit, scoring=scoring, together=together, stream=stream,
                                       verbose=verbose):
        for label, outcome in zip(hps, outcomes):
            scores[label].append(outcome.score)
    record = {"seeds": seeds, "objective": scoring.objective, "score_rule": scoring.rule,
              "best_scores": [s if math.isfinite(s) else None for s in scores["best"]],
              "baseline_scores": [s if math.isfinite(s) else None for s in scores["baseline"]],
              "diverged": {label: [k for k, s in enumerate(values) if not math.isfinite(s)]
                           for label, values in scores.items()}}
    pairs = [(b, a) for b, a in zip(scores["best"], scores["baseline"]) if math.isfinite(b) and math.isfinite(a)]
    if len(pairs) >= 2:
        record.update(paired_difference([b for b, _ in pairs], [a for _, a in pairs]), paired=len(pairs))
    return record
