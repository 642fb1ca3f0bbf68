"""The loss-family registry, built from the loss classes' own declarations.

A `LossFamily` is what a search space tunes: a name, the tasks it fits, its hyperparameters (type, valid
range, default, suggested search range) and a factory that returns a ready `keras.losses.Loss`. Every family
of `losstune.losses` is registered here from its class (`LossFamily.from_class`); the facts live on the
class only (see `losstune.losses.base.LosstuneLoss`).

    >>> import losstune
    >>> losstune.families.available()
    ['asymmetric', 'class_balanced', 'contrastive', 'crossentropy', ...]
    >>> fam = losstune.families.get("focal")
    >>> loss = fam.build({"gamma": 2.0}, task="multiclass")
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from losstune import losses
from losstune.losses import base
from losstune.losses.hyperparameters import Hyperparameter  # noqa: F401  (part of this module's API)


@dataclass(frozen=True)
class LossFamily:
    """A tunable family of losses.

    `factory(params, task, from_logits, class_counts, class_weights)` returns a `keras.losses.Loss`;
    `params` holds every hyperparameter (defaults filled in, validated).
    `weightable` says whether the class-weight modifier applies (classification losses).
    `needs_class_counts` says whether the factory itself uses the class counts (LDAM, logit adjustment,
    class-balanced). `loss_class` is the loss class that declares the family (None for a family registered
    with a hand-written factory). `reweighting_off` holds the hyperparameter values that turn the family's own
    re-weighting off (deferred re-weighting trains with them first), or None.
    """

    name: str
    tasks: tuple
    hyperparameters: tuple
    factory: Callable
    paper: str = ""
    needs_class_counts: bool = False
    weightable: bool = True
    summary: str = ""
    loss_class: type | None = None
    reweighting_off: dict | None = None
    _by_name: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_by_name", {h.name: h for h in self.hyperparameters})

    @classmethod
    def from_class(cls, loss_class) -> "LossFamily":
        """The family a `LosstuneLoss` subclass declares."""
        return cls(
            name=loss_class.family, tasks=tuple(loss_class.tasks), hyperparameters=tuple(loss_class.hyperparameters),
            factory=factory(loss_class), paper=loss_class.paper, needs_class_counts=loss_class.needs_class_counts,
            weightable=loss_class.weightable, summary=loss_class.summary, loss_class=loss_class,
            reweighting_off=loss_class.reweighting_off,
        )

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


def factory(loss_class) -> Callable:
    """The factory of a loss class: passes each loss the context arguments its constructor takes."""
    takes = loss_class.context_arguments()

    def build(params, *, task, from_logits, class_counts, class_weights):
        context = {"task": task, "from_logits": from_logits, "class_counts": class_counts,
                   "class_weights": class_weights}
        return loss_class(**{k: context[k] for k in takes}, **params)

    return build


_REGISTRY: dict[str, LossFamily] = {}


def register(family) -> LossFamily:
    """Add a family: a `LossFamily`, or a `LosstuneLoss` subclass that declares one."""
    if isinstance(family, type) and issubclass(family, base.LosstuneLoss):
        family = LossFamily.from_class(family)
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


def markdown_table() -> str:
    """The README's table of families, written from the registry."""
    rows = [
        "| family | tasks | hyperparameters: valid range, suggested search range; default | class weights | paper |",
        "|---|---|---|---|---|",
    ]
    for name in available():
        fam = get(name)
        cells = []
        for h in fam.hyperparameters:
            search = h.search_text() if h.kind in ("float", "int") else ""
            default = {"None": "none", "True": "true", "False": "false"}.get(str(h.default), str(h.default))
            cells.append(f"`{h.name}` {h.valid_text()}" + (f", search {search}" if search else "")
                         + f"; default {default}")
        rows.append(f"| `{name}` | {', '.join(fam.tasks)} | {'<br>'.join(cells) or '—'} | "
                    f"{'yes' if fam.weightable else '—'} | {fam.paper or '—'} |")
    return "\n".join(rows) + "\n"


for _cls in losses.family_classes():
    register(_cls)
