"""The loss-family registry.

A `LossFamily` is what a search space tunes: a name, the tasks it fits, its hyperparameters (type, valid
range, default, suggested search range) and a factory that returns a ready `keras.losses.Loss`.

    >>> import losstune
    >>> losstune.families.available()
    ['asymmetric', 'class_balanced', 'contrastive', 'crossentropy', ...]
    >>> fam = losstune.families.get("focal")
    >>> loss = fam.build({"gamma": 2.0}, task="multiclass")
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from losstune.losses import base


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter of a loss family.

    `kind` is "float", "int", "bool" or "choice". For numbers, `low`/`high` bound the valid range
    (inclusive unless `low_inclusive`/`high_inclusive` say otherwise; None = unbounded) and
    `search` is the suggested search range `(min, max)` with `sampling` "linear", "log" or
    "reverse_log". For "choice", `values` lists the allowed values (also the suggested search values).
    """

    name: str
    kind: str
    default: Any
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    search: tuple | None = None
    sampling: str = "linear"
    values: tuple | None = None
    doc: str = ""

    def validate(self, family: str, value):
        """Return the value in its canonical Python type, or raise ValueError naming everything."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{family}: `{self.name}` must be true or false, got {value!r}.")
            return value
        if self.kind == "choice":
            return base.check_choice(family, self.name, value, self.values)
        value = base.check_number(
            family, self.name, value, self.low, self.high, self.low_inclusive, self.high_inclusive
        )
        if self.kind == "int":
            if value != int(value):
                raise ValueError(f"{family}: `{self.name}` must be an integer, got {value!r}.")
            return int(value)
        return value


@dataclass(frozen=True)
class LossFamily:
    """A tunable family of losses.

    `factory(params, task, from_logits, class_counts, class_weights)` returns a `keras.losses.Loss`;
    `params` holds every hyperparameter (defaults filled in, validated).
    `weightable` says whether the class-weight modifier applies (classification losses).
    `needs_class_counts` says whether the factory itself uses the class counts (LDAM, logit adjustment,
    class-balanced, weighted BCE's default).
    """

    name: str
    tasks: tuple
    hyperparameters: tuple
    factory: Callable
    paper: str = ""
    needs_class_counts: bool = False
    weightable: bool = True
    summary: str = ""
    _by_name: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_by_name", {h.name: h for h in self.hyperparameters})

    def hyperparameter(self, name) -> Hyperparameter:
        if name not in self._by_name:
            raise ValueError(
                f"{self.name}: unknown hyperparameter {name!r}; "
                f"allowed: {sorted(self._by_name) or 'none'}."
            )
        return self._by_name[name]

    def defaults(self) -> dict:
        return {h.name: h.default for h in self.hyperparameters}

    def resolve(self, params=None) -> dict:
        """Defaults updated with `params`, each validated against its valid range."""
        values = self.defaults()
        for name, value in (params or {}).items():
            values[name] = self.hyperparameter(name).validate(self.name, value)
        return values

    def check_task(self, task):
        if task not in self.tasks:
            raise ValueError(
                f"{self.name}: does not fit task {task!r}; it fits {list(self.tasks)}."
            )
        return task

    def build(
        self,
        params=None,
        *,
        task=None,
        from_logits=False,
        class_counts=None,
        class_weights=None,
    ):
        """A `keras.losses.Loss` for `task` (default: the family's first task) with `params`.

        Missing hyperparameters take their defaults; `class_counts` (training examples per class, or
        positives per label for multilabel) feeds the families that need them; `class_weights`
        (one positive float per class) multiplies each sample's loss by its class's weight.
        """
        task = self.check_task(task or self.tasks[0])
        values = self.resolve(params)
        if class_weights is not None and not self.weightable:
            raise ValueError(f"{self.name}: `class_weights` do not apply to this family.")
        if class_counts is not None:
            class_counts = [float(c) for c in class_counts]
            if any(not math.isfinite(c) or c < 0 for c in class_counts):
                raise ValueError(
                    f"{self.name}: `class_counts` must be counts >= 0, got {class_counts!r}."
                )
        if self.needs_class_counts and class_counts is None:
            raise ValueError(
                f"{self.name}: needs `class_counts` (training examples per class) to build."
            )
        return self.factory(
            values,
            task=task,
            from_logits=bool(from_logits),
            class_counts=class_counts,
            class_weights=class_weights,
        )


_REGISTRY: dict[str, LossFamily] = {}


def register(family: LossFamily) -> LossFamily:
    if family.name in _REGISTRY:
        raise ValueError(f"a loss family named {family.name!r} is already registered.")
    unknown = set(family.tasks) - set(base.TASKS)
    if unknown:
        raise ValueError(f"{family.name}: unknown tasks {sorted(unknown)}; allowed: {list(base.TASKS)}.")
    _REGISTRY[family.name] = family
    return family


def available(task=None) -> list:
    """Names of the registered families, sorted; only those that fit `task` when given."""
    return sorted(name for name, fam in _REGISTRY.items() if task is None or task in fam.tasks)


def get(name) -> LossFamily:
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss family {name!r}; available: {available()}.")
    return _REGISTRY[name]


# The families themselves are declared next to their losses; importing the modules registers them.
from losstune.losses import classification as _classification  # noqa: E402,F401
from losstune.losses import metric_learning as _metric_learning  # noqa: E402,F401
from losstune.losses import regression as _regression  # noqa: E402,F401
