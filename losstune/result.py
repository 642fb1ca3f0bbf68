"""SearchResult: a finished (or interrupted) search read back from its directory.

Everything comes from the files KerasTuner and losstune write (`trial_*/trial.json`, `losstune.json`), so the
same code serves right after `search()`, in `losstune show DIR`, and on every distributed worker.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from dataclasses import asdict, dataclass

from losstune import config as config_module
from losstune.space import LossSpace

CONTEXT_FILE = "losstune.json"
BEST_FILE = "best_loss.json"


@dataclass
class TrialRecord:
    trial_id: str
    family: str
    params: dict
    power: float | None
    score: float | None
    status: str
    message: str = ""
    is_baseline: bool = False

    def describe_loss(self):
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(self.params.items()))
        weights = f", class_weights power={_fmt(self.power)}" if self.power else ""
        return f"{self.family}({params}{weights})"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Keras wraps errors raised inside a layer's call: a header line, the real error, then an argument listing.
_KERAS_CALL_HEADER = re.compile(r"^Exception encountered when calling .*\.$")
_KERAS_ARGUMENTS = re.compile(r"^Arguments received by ")


def failure_reason(message):
    """The one line that says why a trial failed, from KerasTuner's stored traceback (or a plain message).

    The exception text follows the last stack frame; its class name is dropped, and for Keras's wrapped call
    errors the header ("Exception encountered when calling ...") and the argument listing are skipped, so
    what is left is the line that says what is incompatible.
    """
    lines = _ANSI.sub("", message or "").strip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    if frames:
        start = frames[-1] + 1
        while start < len(lines) and lines[start].startswith("    "):
            start += 1  # the frame's source line and its ^^^ markers
        lines = lines[start:]
    text = []
    for line in lines:
        if _KERAS_ARGUMENTS.match(line):
            break
        text.append(line.strip())
    if text:
        head, sep, tail = text[0].partition(": ")
        if sep and head.replace(".", "").replace("_", "").isalnum():
            text[0] = tail  # "ValueError: ..." -> "..."
    text = [line for line in text if line and not _KERAS_CALL_HEADER.match(line)]
    return text[0] if text else ""


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


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

    def __init__(self, directory, context, trials, confirmation=None):
        self.directory = directory
        self.context = context
        self.space = LossSpace.from_dict(context["space"], source=os.path.join(directory, CONTEXT_FILE))
        self.task = context["task"]
        self.objective = context["objective"]
        self.trials = trials
        self.confirmation = confirmation
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
        path = os.path.join(directory, CONTEXT_FILE)
        context = config_module.read_config(path)
        space = LossSpace.from_dict(context["space"], source=path)
        baseline = space.baseline_loss()
        trials, seen_baseline = [], False
        for trial_file in sorted(glob.glob(os.path.join(directory, "trial_*", "trial.json"))):
            with open(trial_file, encoding="utf-8") as fh:
                state = json.load(fh)
            values = state.get("hyperparameters", {}).get("values", {})
            loss = space.trial_loss(values)
            is_baseline = not seen_baseline and loss == baseline
            seen_baseline = seen_baseline or is_baseline
            score = state.get("score")
            trials.append(TrialRecord(
                trial_id=state["trial_id"], family=loss.family, params=loss.params, power=loss.power,
                score=None if score is None else float(score), status=state.get("status", "UNKNOWN"),
                message=failure_reason(state.get("message")),
                is_baseline=is_baseline,
            ))
        confirmation = context.get("confirmation")
        return cls(directory, context, trials, confirmation)

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

    def _trial_loss(self, record):
        from losstune.space import TrialLoss

        return TrialLoss(record.family, record.params, record.power)

    @property
    def best_loss(self):
        """The best trial's loss, a `keras.losses.Loss` ready for `model.compile`."""
        best = self._require_best()
        return self._trial_loss(best).build(
            self.task, class_counts=self.context.get("class_counts"), from_logits=self.context["from_logits"]
        )

    @property
    def best_config(self):
        """The exported config of the best loss (a plain dict; what `export` writes)."""
        best = self._require_best()
        loss = self.best_loss
        cfg = loss.get_config()
        baseline = self.baseline_trial
        return {
            "schema_version": config_module.SCHEMA_VERSION,
            "format": config_module.FORMAT,
            "loss": config_module.loss_to_dict(loss),
            "family": best.family,
            "task": self.task,
            "params": dict(best.params),
            "from_logits": self.context["from_logits"],
            "class_weight_power": best.power,
            "class_weights": cfg.get("class_weights"),
            "class_counts": self.context.get("class_counts"),
            "objective": dict(self.objective),
            "score": best.score,
            "trial_id": best.trial_id,
            "baseline": None if baseline is None else {
                "family": baseline.family, "params": baseline.params, "class_weight_power": baseline.power},
            "baseline_score": self.baseline_score,
            "versions": config_module.library_versions(),
        }

    def export(self, path=None):
        """Write the best loss config as JSON (atomically); default: `<directory>/best_loss.json`."""
        path = path or os.path.join(self.directory, BEST_FILE)
        return config_module.export_loss(self.best_config, path)

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
        rows = ["| | loss | " + self.objective["name"] + " |", "|---|---|---|"]
        for label, t in (("best", self.best_trial), ("baseline", self.baseline_trial)):
            if t is not None:
                rows.append(f"| {label} | {t.describe_loss()} | {t.score:.4f} |")
        return "\n".join(rows)

    def trials_as_dicts(self):
        return [asdict(t) for t in self.trials]

    def __repr__(self):
        return f"SearchResult({self.directory!r}, trials={len(self.trials)}, best={self.best_score}, baseline={self.baseline_score})"
