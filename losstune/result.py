"""SearchResult: a finished (or interrupted) search read back from its directory.

Everything comes from the files KerasTuner and losstune write (`trial_*/trial.json`, `losstune.json`), so the
same code serves right after `search()`, in `losstune show DIR`, and on every distributed worker.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np

from losstune import importance as whatmattered
from losstune import families, lossfile, plots, stats, tasks
from losstune.files import read_json, write_json_atomic
from losstune.lossspace import LossSpace, TrialLoss
from losstune.tuner import failure_reason, stored_trials

CONTEXT_FILE = "losstune.json"
BEST_FILE = "best_loss.json"


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

    # What must match for a search to resume in the same directory.
    RESUME_KEYS = ("space", "task", "objective", "from_logits")

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
    recipe_index: int = 0  # its place in the space's list (simpler first)
    stopped: dict | None = None  # stopped early by the median rule: {"epoch", "value", "median", ...}

    @property
    def shown_status(self):
        return "STOPPED" if self.stopped and self.status == "COMPLETED" else self.status

    @property
    def simplicity(self):
        """0 for the baseline, 1 + i for the space's i-th recipe, then every searched trial: what the pick
        prefers when two candidates cannot be told apart."""
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


def find_search_directory(directory):
    """The project directory of a search, given it or the `directory` the search was started with."""
    directory = os.fspath(directory)
    if os.path.isfile(os.path.join(directory, CONTEXT_FILE)):
        return directory
    inside = sorted(glob.glob(os.path.join(glob.escape(directory), "*", CONTEXT_FILE)))
    if len(inside) == 1:
        return os.path.dirname(inside[0])
    if len(inside) > 1:
        names = [os.path.basename(os.path.dirname(p)) for p in inside]
        raise ValueError(f"{directory!r} holds several searches {names}; name one, e.g. "
                         f"{os.path.join(directory, names[0])!r}.")
    raise ValueError(f"{directory!r} is not a losstune search directory (no {CONTEXT_FILE} in it or in a "
                     f"folder inside it); pass the directory given to the search.")


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
        self.baseline_trial = next((t for t in trials if t.is_baseline and t.status == "COMPLETED"), None)
        self.best_mean_trial, self.best_trial, self.pick_note = _pick(trials, self.objective["direction"])
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
        for stored in stored_trials(directory):
            loss = space.trial_loss(stored.values)
            is_baseline = "baseline" not in seen and loss == baseline
            index = next((i for i, r in enumerate(recipes) if r == loss and i not in seen), None)
            seen |= {"baseline"} if is_baseline else ({index} if index is not None else set())
            record = TrialRecord(stored.trial_id, loss, stored.score, stored.status, failure_reason(stored.message),
                                 is_baseline, recipe=None if index is None else space.recipes[index][0],
                                 recipe_index=index or 0, stopped=stored.stopped)
            if stored.repeats is not None and stored.status == "COMPLETED":
                record.scores = list(stored.repeats.scores)
                record.score, record.se = stored.repeats.mean_se
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
        return [t for t in self.trials if t.status == "COMPLETED"]

    @property
    def failed(self):
        return [t for t in self.trials if t.status in ("FAILED", "INVALID")]

    def warnings(self):
        """What the user should know about this search's scores, each with what to do about it."""
        return _warnings(self)

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
            "class_weights": cfg.get("class_weights"),
            "class_counts": self.context.class_counts,
            "objective": dict(self.objective),
            "score": best.score,
            "score_se": best.se,
            "score_repeats": list(best.scores),
            "score_rule": self.context.score_rule,
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
        lines = [f"{'trial':>5}  {'status':<9}  {name + ' (± SE, repeats)':>30}  loss"]
        for t in self.trials:
            marks = ((" [baseline]" if t.is_baseline else "") + (f" [recipe: {t.recipe}]" if t.recipe else "")
                     + (" [best]" if t is self.best_trial else ""))
            why = f"  ({t.message})" if t.status != "COMPLETED" and t.message else ""
            if t.stopped:
                why = f"  (stopped early at epoch {t.stopped['epoch'] + 1}: below the median of earlier trials)"
            lines.append(f"{t.trial_id:>5}  {t.shown_status:<9}  {t.describe_score():>30}  "
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
        text = f"best {name} = {best.describe_score()}: {best.describe_loss()}"
        if self.pick_note:
            text += f"\n  {self.pick_note}"
        sign = 1 if self.objective["direction"] == "max" else -1
        unraced = [t for t in self.completed if t.score is not None and len(t.scores) < len(best.scores)
                   and sign * (t.score - best.score) > 0]
        if unraced:
            text += (f"\n  {len(unraced)} trial(s) with fewer repeats scored above the pick (trial "
                     f"{', '.join(t.trial_id for t in unraced[:5])}); a single run does not compete with means "
                     f"over {len(best.scores)} repeats; pass a larger `race` to repeat more of them.")
        if base is not None:
            text += (f"\nbaseline {name} = {base.describe_score()}: {base.describe_loss()} "
                     f"(best - baseline = {self.best_score - self.baseline_score:+.4f})")
        if self.confirmation:
            c = self.confirmation
            text += (f"\nconfirmed over {c['seeds']} seeds: best {c['best_mean']:.4f} +/- {c['best_std']:.4f}, "
                     f"baseline {c['baseline_mean']:.4f} +/- {c['baseline_std']:.4f}, difference "
                     f"{c['diff_mean']:+.4f} (95% CI [{c['diff_ci'][0]:+.4f}, {c['diff_ci'][1]:+.4f}])")
        for warning in self.warnings():
            text += f"\nwarning: {warning}"
        return text

    def to_markdown(self):
        """Best vs baseline, and each failed trial with its reason (the TensorBoard summary's text)."""
        rows = ["| | loss | " + self.objective["name"] + " |", "|---|---|---|"]
        for label, t in (("best", self.best_trial), ("baseline", self.baseline_trial)):
            if t is not None:
                rows.append(f"| {label} | {t.describe_loss()} | {t.describe_score()} |")
        for t in self.failed:
            rows.append(f"| trial {t.trial_id} {t.status} | {t.describe_loss()} | {t.message or '-'} |")
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


def _pick(trials, direction):
    """(best by mean, the pick, a note): the honest pick among the best-repeated completed trials.

    Only trials with the most repeats compete (after racing, the top candidates; otherwise all), so a lucky
    single run cannot beat means over several. The best mean wins unless a simpler candidate (the baseline,
    then the space's recipes in order) is within one standard error of the paired difference: then the simpler
    one is the pick, and the note says so (the one-standard-error rule).
    """
    done = [t for t in trials if t.status == "COMPLETED" and t.score is not None and math.isfinite(t.score)]
    if not done:
        return None, None, ""
    most = max(len(t.scores) for t in done)
    pool = [t for t in done if len(t.scores) == most] if most > 1 else done
    sign = 1 if direction == "max" else -1
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


_BOUNDED_ABOVE = ("auc", "f1", "accuracy", "acc", "precision", "recall", "iou")
_SMALL_CLASS = 5  # validation examples of a class below which its per-class metric moves in big steps


def _warnings(result):
    found = []
    done = [t for t in result.trials if t.status == "COMPLETED" and t.score is not None and math.isfinite(t.score)]
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
        sign = 1 if direction == "max" else -1
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
