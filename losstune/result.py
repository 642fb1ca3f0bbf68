"""SearchResult: a finished (or interrupted) search read back from its directory.

Everything comes from the files KerasTuner and losstune write (`trial_*/trial.json`, `losstune.json`), so the
same code serves right after `search()`, in `losstune show DIR`, and on every distributed worker.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np

from losstune import importance as whatmattered
from losstune import layout, lossfile, pick, plots, predictions, sampling, tasks
from losstune.failures import failure_reason
from losstune.files import read_json, write_json_atomic
from losstune.layout import BEST_FILE, CONTEXT_FILE, find_search_directory
from losstune.progress import stopped_note
from losstune.lossspace import LossSpace, TrialLoss


@dataclass
class SearchContext:
    """What `losstune.json` records about a search: enough to read it back without the caller's objects.

    `search()` writes it before the first trial (and again with the confirmation); everything that reads a
    search directory reads it through `load`.
    """

    space: dict
    task: str
    objective: dict  # {"name": ..., "direction": "min" | "max"}
    class_counts: list | None
    from_logits: bool
    max_trials: int
    epochs: int
    seed: int
    logdir: str = "logs"
    confirmation: dict | None = None
    score_rule: str = "best"  # how a repeat's validation curve became its score (stats.curve_score)
    validation_counts: list | None = None  # validation examples per class, for the small-class warning
    prior: str = "validation"  # the class prior the scores estimate performance under (sampling.PRIORS)

    # What must match for a search to resume in the same directory.
    RESUME_KEYS = ("space", "task", "objective", "from_logits", "prior")

    def save(self, project_dir):
        write_json_atomic(os.path.join(project_dir, CONTEXT_FILE), dataclasses.asdict(self))

    @classmethod
    def load(cls, project_dir):
        data = read_json(os.path.join(project_dir, CONTEXT_FILE))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def check_resumable(self, project_dir):
        """Refuse to resume a search in `project_dir` that was started with other arguments."""
        if not os.path.isfile(os.path.join(project_dir, CONTEXT_FILE)):
            return
        saved = SearchContext.load(project_dir)
        for key in self.RESUME_KEYS:
            if getattr(saved, key) != getattr(self, key):
                raise ValueError(
                    f"{project_dir} holds a search with a different `{key}` ({getattr(saved, key)!r}); resume it "
                    f"with the same arguments, pass overwrite=True to start afresh, or use another directory."
                )


@dataclass
class TrialRecord:
    """One trial of a search: its loss, its score (the mean over its repeats) and how it ended."""

    trial_id: str
    loss: TrialLoss
    score: float | None
    status: str
    message: str = ""
    is_baseline: bool = False
    scores: list = dataclasses.field(default_factory=list)  # one per repeat (seed, fold; racing adds more)
    se: float | None = None  # standard error of `score` (None with a single repeat)
    recipe: str | None = None  # the name of the space's recipe this trial is
    recipe_index: int = 0  # its place in the space's list (it breaks ties of means)
    stopped: dict | None = None  # stopped early by a pruning rule: {"epoch", "value", "median" or "rung", ...}
    ece: float | None = None  # expected calibration error on validation, mean over repeats (tasks with one)
    se_seed: float | None = None  # the part of `se` from the repeats' spread
    se_sample: float | None = None  # the part of `se` from the validation sample (bootstrap of `runs`)
    runs: list | None = dataclasses.field(default=None, repr=False)  # kept (y_true, y_pred) per repeat

    @property
    def shown_status(self):
        return "STOPPED" if self.stopped and self.status == layout.COMPLETED else self.status

    @property
    def is_simple(self):
        """The baseline or one of the space's recipes: what the pick falls back to (pick.py)."""
        return self.is_baseline or self.recipe is not None

    @property
    def simplicity(self):
        """0 for the baseline, 1 + i for the space's i-th recipe, then every searched trial: the order that
        breaks a tie of means."""
        return 0 if self.is_baseline else (1 + self.recipe_index if self.recipe is not None else 1000)

    def describe_score(self):
        if self.score is None:
            return "-"
        if self.se is None:
            return f"{self.score:.4f}"
        return f"{self.score:.4f} ± {self.se:.4f} ({len(self.scores)})"

    @property
    def family(self):
        return self.loss.family

    @property
    def params(self):
        return self.loss.params

    @property
    def power(self):
        return self.loss.power

    def describe_loss(self):
        return self.loss.describe()


class SearchResult:
    """Best vs baseline, the trials table, and the best loss, ready for `model.compile`."""

    def __init__(self, directory, context: SearchContext, trials, space=None):
        self.directory = directory
        self.context = context
        self.space = space or LossSpace.from_dict(context.space, source=os.path.join(directory, CONTEXT_FILE))
        self.task = tasks.get(context.task)
        self.objective = context.objective
        self.trials = trials
        self.confirmation = context.confirmation
        self.baseline_trial = next((t for t in trials if t.is_baseline and t.status == layout.COMPLETED), None)
        self.sample_error = pick.SampleError(self.objective["name"], context.prior)
        for t in trials:
            if layout.counts(t) and t.runs:
                t.se_seed = t.se if t.se_seed is None else t.se_seed
                t.se_sample = self.sample_error.single(t)
                parts = [s for s in (t.se_seed, t.se_sample) if s is not None]
                t.se = math.sqrt(sum(s * s for s in parts)) if parts else None
        self.best_mean_trial, self.best_trial, self.pick_note = pick.pick(trials, self.objective["direction"],
                                                                          self.sample_error)
        self._cache = {}  # importance and its tables: computed once

    # --- reading back ------------------------------------------------------------------------------------
    @classmethod
    def from_directory(cls, directory):
        """Read a search back from its directory: the `directory` given to `search()` (or `--directory`), or
        the project directory inside it (`directory/project_name`, the one holding `losstune.json`)."""
        directory = find_search_directory(directory)
        context = SearchContext.load(directory)
        space = LossSpace.from_dict(context.space, source=os.path.join(directory, CONTEXT_FILE))
        baseline = space.baseline_loss()
        recipes = space.recipe_losses()
        trials, seen = [], set()
        for stored in layout.stored_trials(directory):
            loss = space.trial_loss(stored.values)
            is_baseline = "baseline" not in seen and loss == baseline
            index = next((i for i, r in enumerate(recipes) if r == loss and i not in seen), None)
            seen |= {"baseline"} if is_baseline else ({index} if index is not None else set())
            record = TrialRecord(stored.trial_id, loss, stored.score, stored.status, failure_reason(stored.message),
                                 is_baseline, recipe=None if index is None else space.recipes[index][0],
                                 recipe_index=index or 0, stopped=stored.stopped)
            if stored.repeats is not None and stored.status == layout.COMPLETED:
                record.scores = list(stored.repeats.scores)
                record.score, record.se = stored.repeats.mean_se
                record.ece = stored.repeats.mean_ece
                record.runs = predictions.load(layout.trial_dir(directory, stored.trial_id), len(record.scores))
            trials.append(record)
        return cls(directory, context, trials, space)  # the space parsed once

    # --- the answers ---------------------------------------------------------------------------------------
    @property
    def best_score(self):
        return None if self.best_trial is None else self.best_trial.score

    @property
    def baseline_score(self):
        return None if self.baseline_trial is None else self.baseline_trial.score

    @property
    def completed(self):
        """The trials KerasTuner completed (stopped early ones included)."""
        return [t for t in self.trials if t.status == layout.COMPLETED]

    @property
    def counted(self):
        """The trials that take part in comparisons (layout.counts): completed, not stopped early, scored."""
        return [t for t in self.trials if layout.counts(t)]

    @property
    def failed(self):
        return [t for t in self.trials if t.status in layout.NOT_SCORED]

    def scores_by_prior(self, trial):
        """{prior: the objective recomputed from `trial`'s kept validation predictions (the models after
        training; mean over its repeats)} for each class prior its task allows; {} without predictions or
        for an objective sampling.py does not know."""
        metric = sampling.metric_fn(self.objective["name"])
        if metric is None or not trial.runs:
            return {}
        return {prior: float(np.mean([metric(y, p, w) for y, p, w in sampling.with_prior(trial.runs, prior)]))
                for prior in self.task.priors}

    def prior_text(self):
        """Which class prior the scores estimate, and the pick and the baseline under each prior."""
        words = {"validation": "the validation set's own class frequencies",
                 "balanced": "balanced classes (each validation example of class c weighted by n / (C n_c))"}
        text = f"scores estimate {self.objective['name']} under {words[self.context.prior]}"
        rows = [(label, self.scores_by_prior(t)) for label, t in (("pick", self.best_trial),
                                                                   ("baseline", self.baseline_trial)) if t]
        if len(self.task.priors) > 1 and all(scores for _, scores in rows):
            text += "; after training, " + "; ".join(
                f"{label} " + ", ".join(f"{v:.4f} ({p})" for p, v in scores.items()) for label, scores in rows)
        return text

    def warnings(self):
        """What the user should know about this search's scores, each with what to do about it."""
        return pick.warnings(self)

    def _require_best(self):
        if self.best_trial is None:
            reasons = "; ".join(f"trial {t.trial_id}: {t.message or t.status}" for t in self.trials[:5])
            raise RuntimeError(
                f"no trial of the search in {self.directory} completed, so there is no best loss"
                + (f" ({reasons})" if reasons else "") + "."
            )
        return self.best_trial

    @property
    def best_loss(self):
        """The best trial's loss, a `keras.losses.Loss` ready for `model.compile`."""
        best = self._require_best()
        return best.loss.build(self.task, class_counts=self.context.class_counts,
                               from_logits=self.context.from_logits)

    @property
    def best_config(self):
        """The exported config of the best loss (a plain dict; what `export` writes)."""
        best = self._require_best()
        loss = self.best_loss
        cfg = loss.get_config()
        baseline = self.baseline_trial
        return {
            "schema_version": lossfile.SCHEMA_VERSION,
            "format": lossfile.FORMAT,
            "loss": lossfile.loss_to_dict(loss),
            "family": best.family,
            "task": self.task.name,
            "params": dict(best.params),
            "from_logits": self.context.from_logits,
            "class_weight_power": best.power,
            "class_weights_start": best.loss.start if best.loss.deferred else None,
            "class_weights": cfg.get("class_weights"),
            "class_counts": self.context.class_counts,
            "objective": dict(self.objective),
            "score": best.score,
            "score_se": best.se,
            "score_repeats": list(best.scores),
            "score_rule": self.context.score_rule,
            "prior": self.context.prior,
            "calibration": {"metric": "expected calibration error (validation, 15 bins)", "best": best.ece,
                            "baseline": None if baseline is None else baseline.ece},
            "pick": self.pick_note,
            "warnings": self.warnings(),
            "trial_id": best.trial_id,
            "baseline": None if baseline is None else {
                "family": baseline.family, "params": baseline.params, "class_weight_power": baseline.power},
            "baseline_score": self.baseline_score,
            "versions": lossfile.library_versions(),
        }

    def export(self, path=None):
        """Write the best loss config as JSON (atomically); default: `<directory>/best_loss.json`."""
        path = path or os.path.join(self.directory, BEST_FILE)
        return lossfile.export_loss(self.best_config, path)

    # --- display -----------------------------------------------------------------------------------------
    def table(self):
        """The trials table with best vs baseline, as text."""
        name = self.objective["name"]
        ece = any(t.ece is not None for t in self.trials)
        lines = [f"{'trial':>5}  {'status':<9}  {name + ' (± SE, repeats)':>30}  " + ("  ECE   " if ece else "")
                 + "loss"]
        for t in self.trials:
            marks = ((" [baseline]" if t.is_baseline else "") + (f" [recipe: {t.recipe}]" if t.recipe else "")
                     + (" [best]" if t is self.best_trial else ""))
            why = f"  ({t.message})" if t.status != layout.COMPLETED and t.message else ""
            if t.stopped:
                why = f"  ({stopped_note(t.stopped)})"
            calibration = (f"{t.ece:.4f}  " if t.ece is not None else f"{'-':<6}  ") if ece else ""
            lines.append(f"{t.trial_id:>5}  {t.shown_status:<9}  {t.describe_score():>30}  {calibration}"
                         f"{t.describe_loss()}{marks}{why}")
        lines.append("")
        lines.append(whatmattered.summary_text(self.family_summary(), self.objective["name"]))
        lines.append("")
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self):
        name = self.objective["name"]
        if self.best_trial is None:
            return f"no completed trial ({len(self.failed)} failed)."
        best, base = self.best_trial, self.baseline_trial
        text = f"best {name} = {best.describe_score()}: {best.describe_loss()}\n  " + self.prior_text()
        if self.pick_note:
            text += f"\n  {self.pick_note}"
        note = pick.unraced_note(self.trials, best, self.objective["direction"])
        if note:
            text += f"\n  {note}"
        if base is not None:
            text += (f"\nbaseline {name} = {base.describe_score()}: {base.describe_loss()} "
                     f"(best - baseline = {self.best_score - self.baseline_score:+.4f})")
        if self.confirmation:
            text += "\n" + _confirmation_text(self.confirmation)
        for warning in self.warnings():
            text += f"\nwarning: {warning}"
        return text

    def to_markdown(self):
        """Best vs baseline, and each failed trial with its reason (the TensorBoard summary's text)."""
        rows = ["| | loss | " + self.objective["name"] + " | ECE |", "|---|---|---|---|"]
        for label, t in (("best", self.best_trial), ("baseline", self.baseline_trial)):
            if t is not None:
                ece = "-" if t.ece is None else f"{t.ece:.4f}"
                rows.append(f"| {label} | {t.describe_loss()} | {t.describe_score()} | {ece} |")
        for t in self.failed:
            rows.append(f"| trial {t.trial_id} {t.status} | {t.describe_loss()} | {t.message or '-'} | - |")
        notes = ([self.pick_note] if self.pick_note else []) + [f"warning: {w}" for w in self.warnings()]
        return "\n".join(rows + [""] + notes) if notes else "\n".join(rows)

    # --- what mattered -------------------------------------------------------------------------------------
    def importance(self, min_trials=whatmattered.MIN_TRIALS):
        """How much of the score's variation each hyperparameter explains: across families (the family
        choice and the class-weight power), then per family for its own parameters; each with the number of
        completed trials it rests on, "not enough trials" below `min_trials`. An `importance.ImportanceReport`
        (`print` it, index it: `report["focal"]["gamma"].share`, or `.to_dict()`); see losstune/importance.py
        for the method."""
        key = ("importance", min_trials)
        if key not in self._cache:
            self._cache[key] = whatmattered.importance(self.trials, self.space, self.objective["name"], min_trials,
                                                       tables=self._observations())
        return self._cache[key]

    def family_summary(self):
        """Per family of the space: completed trials, best, median, sd and worst trial mean, the best loss
        (a list of `importance.FamilySummary`)."""
        return whatmattered.family_summaries(self.trials, self.space, self.objective["direction"])

    def _observations(self):
        if "observations" not in self._cache:
            self._cache["observations"] = whatmattered.observations(self.trials, self.space)
        return self._cache["observations"]

    def figures(self):
        """{name: matplotlib Figure}: `importance` (the bars) and `scores_<scope>` (the score against each
        hyperparameter, for `all` families and each family with completed trials)."""
        best, base = self.best_trial, self.baseline_trial
        return plots.figures(self._observations(), self.importance(), self.objective["name"],
                             best.trial_id if best else None, base.trial_id if base else None)

    def save_plots(self, directory=None):
        """Write the figures as PNG files (`plot_<name>.png`) into `directory` (default: the search's
        directory, beside `best_loss.json`); returns their paths."""
        directory = directory or self.directory
        os.makedirs(directory, exist_ok=True)
        paths = []
        for name, fig in self.figures().items():
            path = os.path.join(directory, f"plot_{name}.png")
            tmp = path + ".tmp"
            with open(tmp, "wb") as fh:
                fh.write(plots.to_png(fig))
            os.replace(tmp, path)
            paths.append(path)
        return paths

    def summary_texts(self):
        """The TensorBoard summary run's markdown tables besides best vs baseline: per family, importance."""
        texts = {"per_family": whatmattered.summary_markdown(self.family_summary(), self.objective["name"])}
        try:
            texts["importance_table"] = self.importance().to_markdown()
        except Exception as err:  # noqa: BLE001 -- never lose a finished search's report to it
            warnings.warn(f"losstune: importance could not be computed ({type(err).__name__}: {err}).", stacklevel=2)
        return texts

    def summary_images(self):
        """The figures as RGB arrays for the TensorBoard summary run ({`plots/<name>`: uint8 H x W x 3}). A drawing
        error costs the pictures, with a warning, never the search's result."""
        try:
            return {f"plots/{name}": plots.to_array(fig) for name, fig in self.figures().items()}
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"losstune: the summary pictures could not be drawn ({type(err).__name__}: {err}); "
                          f"`losstune show DIR --plots` draws them again.", stacklevel=2)
            return {}

    def __repr__(self):
        return f"SearchResult({self.directory!r}, trials={len(self.trials)}, best={self.best_score}, baseline={self.baseline_score})"


def _confirmation_text(c):
    """The confirmation over fresh seeds in one or two lines (racing.confirm's record)."""
    diverged = {label: seeds for label, seeds in c.get("diverged", {}).items() if seeds}
    text = ""
    if "diff_mean" in c:
        paired = c.get("paired", c["seeds"])
        text = (f"confirmed over {paired} seeds: best {c['best_mean']:.4f} +/- {c['best_std']:.4f}, "
                f"baseline {c['baseline_mean']:.4f} +/- {c['baseline_std']:.4f}, difference "
                f"{c['diff_mean']:+.4f} (95% CI [{c['diff_ci'][0]:+.4f}, {c['diff_ci'][1]:+.4f}])")
    else:
        text = f"not confirmed: fewer than 2 of the {c['seeds']} confirmation seeds trained both losses to the end"
    for label, seeds in diverged.items():
        text += (f"\n  the {label} loss diverged on {len(seeds)} of {c['seeds']} confirmation seeds "
                 f"(seed {', '.join(str(k) for k in seeds)}): a loss that diverges on some seeds is a risk")
    return text
