"""SearchResult: a finished (or interrupted) search read back from its directory.

Everything comes from the files KerasTuner and losstune write (`trial_*/trial.json`, `losstune.json`), so the
same code serves right after `search()`, in `losstune show DIR`, and on every distributed worker.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
from dataclasses import dataclass

from losstune import lossfile, tasks
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
    """One trial of a search: its loss, its score and how it ended."""

    trial_id: str
    loss: TrialLoss
    score: float | None
    status: str
    message: str = ""
    is_baseline: bool = False

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

    def __init__(self, directory, context: SearchContext, trials):
        self.directory = directory
        self.context = context
        self.space = LossSpace.from_dict(context.space, source=os.path.join(directory, CONTEXT_FILE))
        self.task = tasks.get(context.task)
        self.objective = context.objective
        self.trials = trials
        self.confirmation = context.confirmation
        done = [t for t in trials if t.status == "COMPLETED" and t.score is not None and math.isfinite(t.score)]
        sign = 1 if self.objective["direction"] == "max" else -1
        self.best_trial = max(done, key=lambda t: (sign * t.score, -int(t.trial_id))) if done else None
        self.baseline_trial = next((t for t in trials if t.is_baseline and t.status == "COMPLETED"), None)

    # --- reading back ------------------------------------------------------------------------------------
    @classmethod
    def from_directory(cls, directory):
        """Read a search back from its directory: the `directory` given to `search()` (or `--directory`), or
        the project directory inside it (`directory/project_name`, the one holding `losstune.json`)."""
        directory = find_search_directory(directory)
        context = SearchContext.load(directory)
        space = LossSpace.from_dict(context.space, source=os.path.join(directory, CONTEXT_FILE))
        baseline = space.baseline_loss()
        trials, seen_baseline = [], False
        for stored in stored_trials(directory):
            loss = space.trial_loss(stored.values)
            is_baseline = not seen_baseline and loss == baseline
            seen_baseline = seen_baseline or is_baseline
            trials.append(TrialRecord(stored.trial_id, loss, stored.score, stored.status,
                                      failure_reason(stored.message), is_baseline))
        return cls(directory, context, trials)

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
        lines = [f"{'trial':>5}  {'status':<9}  {name:>14}  loss"]
        for t in self.trials:
            score = "-" if t.score is None else f"{t.score:.4f}"
            marks = (" [baseline]" if t.is_baseline else "") + (" [best]" if t is self.best_trial else "")
            why = f"  ({t.message})" if t.status != "COMPLETED" and t.message else ""
            lines.append(f"{t.trial_id:>5}  {t.status:<9}  {score:>14}  {t.describe_loss()}{marks}{why}")
        lines.append("")
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self):
        name = self.objective["name"]
        if self.best_trial is None:
            return f"no completed trial ({len(self.failed)} failed)."
        text = f"best {name} = {self.best_score:.4f}: {self.best_trial.describe_loss()}"
        if self.baseline_trial is not None:
            gain = self.best_score - self.baseline_score
            text += f"\nbaseline {name} = {self.baseline_score:.4f}: {self.baseline_trial.describe_loss()} (best - baseline = {gain:+.4f})"
        if self.confirmation:
            c = self.confirmation
            text += (f"\nconfirmed over {c['seeds']} seeds: best {c['best_mean']:.4f} +/- {c['best_std']:.4f}, "
                     f"baseline {c['baseline_mean']:.4f} +/- {c['baseline_std']:.4f}, difference "
                     f"{c['diff_mean']:+.4f} (95% CI [{c['diff_ci'][0]:+.4f}, {c['diff_ci'][1]:+.4f}])")
        return text

    def to_markdown(self):
        """Best vs baseline, and each failed trial with its reason (the TensorBoard summary's text)."""
        rows = ["| | loss | " + self.objective["name"] + " |", "|---|---|---|"]
        for label, t in (("best", self.best_trial), ("baseline", self.baseline_trial)):
            if t is not None:
                rows.append(f"| {label} | {t.describe_loss()} | {t.score:.4f} |")
        for t in self.failed:
            rows.append(f"| trial {t.trial_id} {t.status} | {t.describe_loss()} | {t.message or '-'} |")
        return "\n".join(rows)

    def __repr__(self):
        return f"SearchResult({self.directory!r}, trials={len(self.trials)}, best={self.best_score}, baseline={self.baseline_score})"
