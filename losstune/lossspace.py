"""LossSpace: loss families and their search ranges, as KerasTuner hyperparameters.

A space is a task, a baseline family, a set of families each with a range per hyperparameter, and the
optional class-weight modifier. `declare(hp)` turns it into KerasTuner hyperparameters: one
`Choice("loss")` over the family names and, inside `hp.conditional_scope("loss", [family])`, one
hyperparameter per tuned parameter, named `family/param` so two families never share a name (the
HParams dashboard refuses duplicates). The class-weight power, `class_weights/power`, is active for
every family the modifier applies to.

Every hyperparameter's default is the baseline's value, so "all defaults" *is* the baseline trial
(KerasTuner's grid search starts there; `losstune.search` puts it first for the other tuners).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import resources

import keras_tuner

from losstune import families as families_module
from losstune import tasks
from losstune.class_weights import class_weights_from_counts

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LOSS_HP = "loss"
POWER_HP = "class_weights/power"
START_HP = "class_weights/start"
_SAMPLINGS = ("linear", "log", "reverse_log")
_POWER = families_module.Hyperparameter(
    "power", "float", 0.0, low=0.0, high=2.0, search=(0.0, 1.0),
    doc="w_c ~ n_c ** -power: 0 = unweighted, 1 = inverse frequency",
)
_START = families_module.Hyperparameter(
    "start", "float", 0.0, low=0.0, high=0.95, search=(0.0, 0.9),
    doc="the fraction of the epochs trained unweighted before the class weights switch on (deferred "
        "re-weighting, Cao et al. 2019): 0 = weighted from the start",
)
_SPACE_KEYS = ("task", "baseline", "families", "class_weights", "recipes", "description", "prior")
_RECIPE_KEYS = ("family", "params", "class_weights", "name")


@dataclass(frozen=True)
class ParamRange:
    """How one hyperparameter is searched: a fixed `value`, a range `low..high`, or a list of `values`."""

    value: object = None
    low: float | None = None
    high: float | None = None
    sampling: str = "linear"
    step: float | None = None
    values: tuple | None = None

    @property
    def fixed(self):
        return self.low is None and self.values is None

    def contains(self, value):
        if self.fixed:
            return value == self.value
        if self.values is not None:
            return value in self.values
        return self.low <= value <= self.high

    def to_spec(self):
        if self.fixed:
            return self.value
        if self.values is not None:
            return {"values": list(self.values)}
        spec = {"min": self.low, "max": self.high, "sampling": self.sampling}
        if self.step is not None:
            spec["step"] = self.step
        return spec

    def default(self, preferred):
        """The baseline value: `preferred` (the family default) when the range holds it, else its start."""
        if self.fixed:
            return self.value
        if preferred is not None and self.contains(preferred):
            return preferred
        return self.values[0] if self.values is not None else self.low


def _parse_range(where, hyper: families_module.Hyperparameter, spec) -> ParamRange:
    """A TOML/dict spec -> ParamRange, validated against the family's valid range."""
    family = where

    def valid(value, key):
        try:
            return hyper.validate(family, value)
        except ValueError as err:
            raise ValueError(f"{key}: {err}") from None

    key = f"{where}.{hyper.name}"
    if not isinstance(spec, dict):
        return ParamRange(value=valid(spec, key))
    unknown = set(spec) - {"min", "max", "sampling", "step", "values"}
    if unknown:
        raise ValueError(
            f"{key}: unknown keys {sorted(unknown)}; a range takes min, max, sampling, step, "
            f"or values = [...]."
        )
    if "values" in spec:
        if set(spec) != {"values"}:
            raise ValueError(f"{key}: `values` cannot be combined with {sorted(set(spec) - {'values'})}.")
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise ValueError(f"{key}: `values` must be a non-empty list, got {values!r}.")
        return ParamRange(values=tuple(valid(v, key) for v in values))
    if hyper.kind not in ("float", "int"):
        raise ValueError(
            f"{key}: a {hyper.kind} hyperparameter takes a fixed value or values = [...], not a range."
        )
    if "min" not in spec or "max" not in spec:
        raise ValueError(f"{key}: a range needs both `min` and `max`, got {spec!r}.")
    low, high = valid(spec["min"], key), valid(spec["max"], key)
    if low > high:
        raise ValueError(f"{key}: `min` ({low!r}) must be <= `max` ({high!r}).")
    sampling = spec.get("sampling", "linear")
    if sampling not in _SAMPLINGS:
        raise ValueError(f"{key}: `sampling` must be one of {list(_SAMPLINGS)}, got {sampling!r}.")
    if sampling == "log" and low <= 0:
        raise ValueError(f"{key}: sampling 'log' needs `min` > 0, got {low!r}.")
    step = spec.get("step")
    if step is not None:
        step = valid_step(key, step, hyper.kind)
    return ParamRange(low=low, high=high, sampling=sampling, step=step)


def valid_step(key, step, kind):
    if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
        raise ValueError(f"{key}: `step` must be a number > 0, got {step!r}.")
    if kind == "int" and step != int(step):
        raise ValueError(f"{key}: `step` of an integer hyperparameter must be an integer, got {step!r}.")
    return step


@dataclass(frozen=True)
class TrialLoss:
    """The loss of one trial: a family, its parameters, the class-weight power (None: unweighted) and when
    the class weights switch on (`start`: a fraction of the epochs; None or 0: from the start)."""

    family: str
    params: dict
    power: float | None
    start: float | None = None

    @property
    def deferred(self):
        """True when re-weighting switches on after the start of training: the class weights (a power), or
        the family's own re-weighting (class-balanced's beta)."""
        if not self.start:
            return False
        return bool(self.power) or families_module.get(self.family).reweighting_off is not None

    def build(self, task, *, class_counts=None, from_logits=False):
        """The `keras.losses.Loss` of this trial for `task` (a Task or its name)."""
        task = tasks.get(task)
        class_weights = None
        if self.power is not None and self.power > 0:
            class_weights = class_weights_from_counts(class_counts, self.power, task.name)
        return families_module.get(self.family).build(
            self.params, task=task.name, from_logits=from_logits,
            class_counts=class_counts, class_weights=class_weights,
        )

    def describe(self):
        """One line: `focal(gamma=2), class_weights power=1`."""
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(self.params.items()))
        weights = f", class_weights power={_fmt(self.power)}" if self.power else ""
        if self.deferred:
            weights += f"{'' if self.power else ', re-weighted'} from {self.start:.0%} of the epochs"
        return f"{self.family}({params}{weights})"


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class LossSpace:
    """A search space over loss families.

    Args:
        families: mapping family name -> mapping hyperparameter name -> spec, where a spec is a fixed value,
            `{"min": a, "max": b, "sampling": "linear"|"log"|"reverse_log", "step": s}` or
            `{"values": [...]}`. Hyperparameters left out stay at the family default.
        task: "binary", "multiclass", "multilabel", "pairs", "embedding" or "regression".
        baseline: the family of the baseline trial (default: the first family). It is run at its
            default hyperparameters (clipped into the space's range) and without class weights.
        class_weights: optional `{"power": spec}`: the class-weight modifier for the families it applies to.
        recipes: known strong starting points, tried right after the baseline: a list of
            `{"family": name, "params": {...}, "class_weights": {"power": p}, "name": "..."}`; parameters left
            out take the space's defaults, and every value must lie in the space's ranges.
        source: where the space came from, for error messages.
        prior: the class prior a search's scores estimate performance under by default: "validation" (the
            validation set's own class frequencies) or "balanced" (equal class frequencies: each validation
            example weighted by n / (C n_c); binary and multiclass). `search(prior=...)` overrides it.
    """

    def __init__(self, families, task, baseline=None, class_weights=None, recipes=None, source="LossSpace",
                 description="", prior="validation"):
        self.source = source
        self.description = description
        try:
            self.task = tasks.get(task)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
        try:
            self.prior = self.task.check_prior(prior)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
        task = self.task.name
        if not isinstance(families, dict) or not families:
            raise ValueError(f"{source}: `families` must name at least one loss family, got {families!r}.")
        self.families = {}
        for name, specs in families.items():
            if name not in families_module.available():
                raise ValueError(
                    f"{source}: unknown loss family {name!r} in [families]; "
                    f"available: {families_module.available()}."
                )
            fam = families_module.get(name)
            if task not in fam.tasks:
                raise ValueError(
                    f"{source}: family {name!r} does not fit task {task!r}; it fits {list(fam.tasks)}. "
                    f"Families for {task!r}: {self.task.families()}."
                )
            specs = specs or {}
            if not isinstance(specs, dict):
                raise ValueError(f"{source}: families.{name} must be a table of hyperparameters, got {specs!r}.")
            ranges = {}
            for pname, spec in specs.items():
                try:
                    hyper = fam.hyperparameter(pname)
                except ValueError as err:
                    raise ValueError(f"{source}: families.{name}: {err}") from None
                ranges[pname] = _parse_range(f"{source}: families.{name}", hyper, spec)
            self.families[name] = ranges
        self.baseline = baseline if baseline is not None else next(iter(self.families))
        if self.baseline not in self.families:
            raise ValueError(
                f"{source}: `baseline` must be one of the space's families {list(self.families)}, "
                f"got {self.baseline!r}."
            )
        self.power = self.start = None
        self.weighted = None  # the families the modifier applies to (None: every family that takes weights)
        if class_weights:
            self._parse_class_weights(source, class_weights)
        if recipes is not None and not isinstance(recipes, list):
            raise ValueError(f"{source}: `recipes` must be a list of tables ([[recipes]]), got {recipes!r}.")
        self.recipes = [self._parse_recipe(f"{source}: recipes[{i}]", r) for i, r in enumerate(recipes or [])]

    def _parse_class_weights(self, source, class_weights):
        """The [class_weights] table: the power's range and the families it applies to."""
        task = self.task.name
        if not isinstance(class_weights, dict) or set(class_weights) - {"power", "families", "start"}:
            raise ValueError(f"{source}: [class_weights] takes `power` and optionally `start` and `families`, got "
                             f"{class_weights!r}.")
        if "families" in class_weights:
            named = class_weights["families"]
            takes = [n for n in self.families if families_module.get(n).weightable]
            if not isinstance(named, list) or not named or any(n not in takes for n in named):
                raise ValueError(f"{source}: class_weights.families must list some of the space's families "
                                 f"that take class weights {takes}, got {named!r}.")
            self.weighted = list(named)
        if not self.task.class_weighted:
            raise ValueError(f"{source}: [class_weights] applies to classification tasks, not {task!r}.")
        if "power" in class_weights:
            self.power = _parse_range(f"{source}: class_weights", _POWER, class_weights["power"])
        if "start" in class_weights:
            if self.power is None:
                raise ValueError(f"{source}: class_weights.start defers the class weights of `power`; give a power.")
            self.start = _parse_range(f"{source}: class_weights", _START, class_weights["start"])

    def _parse_recipe(self, where, recipe):
        """A recipe table -> (name, TrialLoss), every value checked against the space's own ranges."""
        if not isinstance(recipe, dict):
            raise ValueError(f"{where}: a recipe is a table with `family` and optional `params`, `class_weights`.")
        unknown = set(recipe) - set(_RECIPE_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {list(_RECIPE_KEYS)}.")
        family = recipe.get("family")
        if family not in self.families:
            raise ValueError(f"{where}: `family` must be one of the space's families {list(self.families)}, "
                             f"got {family!r}.")
        params = recipe.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError(f"{where}: `params` must be a table, got {params!r}.")
        ranges = self.families[family]
        for pname, value in params.items():
            if pname not in ranges:
                raise ValueError(f"{where}: {family} parameter {pname!r} is not in this space's "
                                 f"[families.{family}] (it has {sorted(ranges) or 'none'}); add it there first.")
            value = families_module.get(family).hyperparameter(pname).validate(family, value)
            if not ranges[pname].contains(value):
                raise ValueError(f"{where}: {family}.{pname} = {value!r} lies outside the space's range "
                                 f"{ranges[pname].to_spec()!r}.")
        loss = self._complete(family, params, None)
        weights = recipe.get("class_weights")
        if weights is not None:
            loss = self._complete(family, params, *self._recipe_weights(where, family, weights))
        name = recipe.get("name") or loss.describe()
        if not isinstance(name, str):
            raise ValueError(f"{where}: `name` must be a string, got {name!r}.")
        return name, loss

    def _recipe_weights(self, where, family, weights):
        """A recipe's `class_weights = {power = p, start = s}` -> (power, start), checked against the space."""
        if not isinstance(weights, dict) or "power" not in weights or set(weights) - {"power", "start"}:
            raise ValueError(f"{where}: `class_weights` must be {{power = p}} or {{power = p, start = s}}, got "
                             f"{weights!r}.")
        if self.power is None or family not in self.weightable():
            raise ValueError(f"{where}: class weights do not apply here (the space has no [class_weights] "
                             f"range for {family}).")
        if "start" in weights and self.start is None:
            raise ValueError(f"{where}: class_weights.start needs a `start` range in the space's [class_weights].")
        out = []
        for key, hyper, rng in (("power", _POWER, self.power), ("start", _START, self.start)):
            if key not in weights:
                out.append(None)
                continue
            value = hyper.validate("class_weights", weights[key])
            if not rng.contains(value):
                raise ValueError(f"{where}: class_weights.{key} = {value!r} lies outside the space's range "
                                 f"{rng.to_spec()!r}.")
            out.append(value)
        return out

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data, source="LossSpace"):
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a search space is a table, got {type(data).__name__}.")
        unknown = set(data) - set(_SPACE_KEYS)
        if unknown:
            raise ValueError(f"{source}: unknown keys {sorted(unknown)}; allowed: {list(_SPACE_KEYS)}.")
        if "task" not in data:
            raise ValueError(f"{source}: missing `task`; one of {list(tasks.TASKS)}.")
        return cls(
            families=data.get("families"), task=data["task"], baseline=data.get("baseline"),
            class_weights=data.get("class_weights"), recipes=data.get("recipes"), source=source,
            description=data.get("description", ""), prior=data.get("prior", "validation"),
        )

    @classmethod
    def from_toml(cls, path_or_name):
        """Load a space from a `.toml` file, or a bundled space by name (see `losstune.spaces.available()`)."""
        path = str(path_or_name)
        if not path.endswith(".toml") and os.sep not in path and "/" not in path:
            if path not in bundled_names():
                raise ValueError(
                    f"unknown search space {path!r}: not a bundled space and not a path to a .toml file; "
                    f"bundled spaces: {bundled_names()}."
                )
            text = (_bundled_files() / f"{path}.toml").read_text(encoding="utf-8")
            return cls.from_toml_text(text, source=f"search_spaces/{path}.toml")
        if not os.path.isfile(path):
            raise ValueError(f"space file {path!r} does not exist.")
        with open(path, "rb") as fh:
            text = fh.read()
        return cls.from_toml_text(text.decode("utf-8"), source=path)

    @classmethod
    def from_toml_text(cls, text, source="<toml>"):
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            # The decoder's message carries the line and column: "... (at line 3, column 9)".
            raise ValueError(f"{source}: malformed TOML: {err}") from None
        return cls.from_dict(data, source=source)

    @classmethod
    def coerce(cls, space):
        """A LossSpace from a LossSpace, a bundled name, a path, or a dict."""
        if isinstance(space, LossSpace):
            return space
        if isinstance(space, dict):
            return cls.from_dict(space)
        if isinstance(space, (str, os.PathLike)):
            return cls.from_toml(space)
        raise ValueError(
            f"`space` must be a bundled space name, a path to a .toml file or a losstune.LossSpace, got {space!r}."
        )

    # ---------------------------------------------------------------------------------------------
    def tuned(self):
        """(hyperparameter name, family, Hyperparameter, ParamRange) for every non-fixed parameter."""
        rows = []
        for name, ranges in self.families.items():
            fam = families_module.get(name)
            for pname, rng in ranges.items():
                if not rng.fixed:
                    rows.append((f"{name}/{pname}", name, fam.hyperparameter(pname), rng))
        return rows

    @property
    def loss_is_tuned(self):
        """True when trials can differ in their loss (more than one family or any tuned parameter)."""
        return len(self.families) > 1 or bool(self.tuned()) or (self.power is not None and not self.power.fixed)

    def weightable(self):
        """The space's families that the class-weight modifier applies to."""
        takes = [n for n in self.families if families_module.get(n).weightable]
        return takes if self.weighted is None else [n for n in takes if n in self.weighted]

    def declare(self, hp) -> TrialLoss:
        """Declare this space's hyperparameters on `hp` and return the trial's loss choice."""
        names = list(self.families)
        order = [self.baseline] + [n for n in names if n != self.baseline]
        family = hp.Choice(LOSS_HP, order, default=self.baseline) if len(names) > 1 else hp.Fixed(LOSS_HP, names[0])
        params = {}
        for name, ranges in self.families.items():
            fam = families_module.get(name)
            with hp.conditional_scope(LOSS_HP, [name]):
                for pname, rng in ranges.items():
                    value = _declare_one(hp, f"{name}/{pname}", fam.hyperparameter(pname), rng)
                    if name == family:
                        params[pname] = value
        power = start = None
        weightable = self.weightable()
        if self.power is not None and weightable:
            with hp.conditional_scope(LOSS_HP, weightable):
                value = _declare_one(hp, POWER_HP, _POWER, self.power, preferred=0.0)
                deferral = _declare_one(hp, START_HP, _START, self.start, preferred=0.0) if self.start else None
            if family in weightable:
                power, start = value, deferral
        return TrialLoss(family=family, params=params, power=power, start=start)

    def _complete(self, family, params, power, start=None):
        """The TrialLoss of `family` with `params`; the space's defaults fill in the rest."""
        fam = families_module.get(family)
        full = {p: r.default(fam.hyperparameter(p).default) for p, r in self.families[family].items()}
        full.update(params)
        if family in self.weightable():
            if power is None and self.power is not None:
                power = self.power.default(0.0)
            if start is None and self.start is not None:
                start = self.start.default(0.0)
        return TrialLoss(family, full, power, start)

    def baseline_loss(self) -> TrialLoss:
        return self._complete(self.baseline, {}, None)

    def recipe_losses(self):
        """The recipes' TrialLosses, in the order the space lists them (simplest first)."""
        return [loss for _, loss in self.recipes]

    def trial_values(self, loss: TrialLoss) -> dict:
        """The KerasTuner hyperparameter values of `loss` (active hyperparameters only): what the oracle stores."""
        hp = keras_tuner.HyperParameters()
        hp.values[LOSS_HP] = loss.family
        for pname, value in loss.params.items():
            hp.values[f"{loss.family}/{pname}"] = value
        if loss.power is not None:
            hp.values[POWER_HP] = loss.power
        if loss.start is not None:
            hp.values[START_HP] = loss.start
        self.declare(hp)  # a declared hyperparameter keeps a value set before; conditions follow the family
        return {k: v for k, v in hp.values.items() if hp.is_active(k)}

    def trial_loss(self, values) -> TrialLoss:
        """The TrialLoss of a trial's hyperparameter values (as KerasTuner stores them)."""
        family = values.get(LOSS_HP, self.baseline)
        prefix = f"{family}/"
        params = {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}
        fam = families_module.get(family)
        for pname, rng in self.families.get(family, {}).items():
            params.setdefault(pname, rng.default(fam.hyperparameter(pname).default))
        weighted = family in self.weightable()
        power = values.get(POWER_HP) if weighted else None
        start = values.get(START_HP) if weighted and self.start is not None else None
        return TrialLoss(family, params, power, start)

    def to_dict(self):
        """The space as plain data (what `from_dict` reads back)."""
        data = {
            "task": self.task.name,
            "baseline": self.baseline,
            "families": {n: {p: r.to_spec() for p, r in ranges.items()} for n, ranges in self.families.items()},
        }
        if self.description:
            data["description"] = self.description
        if self.prior != "validation":
            data["prior"] = self.prior
        if self.power is not None:
            data["class_weights"] = {"power": self.power.to_spec()}
            if self.start is not None:
                data["class_weights"]["start"] = self.start.to_spec()
            if self.weighted is not None:
                data["class_weights"]["families"] = list(self.weighted)
        if self.recipes:
            data["recipes"] = [_recipe_spec(name, loss) for name, loss in self.recipes]
        return data

    def __repr__(self):
        return f"LossSpace(task={self.task.name!r}, families={list(self.families)}, baseline={self.baseline!r})"


def _declare_one(hp, name, hyper, rng: ParamRange, preferred=None):
    default = rng.default(hyper.default if preferred is None else preferred)
    if rng.fixed:
        return hp.Fixed(name, rng.value)
    if rng.values is not None:
        return hp.Choice(name, list(rng.values), default=default)
    if hyper.kind == "int":
        return hp.Int(name, int(rng.low), int(rng.high), step=int(rng.step or 1), sampling=rng.sampling, default=int(default))
    return hp.Float(name, rng.low, rng.high, step=rng.step, sampling=rng.sampling, default=float(default))


def _bundled_files():
    return resources.files("losstune.search_spaces")


def bundled_names():
    """Names of the search spaces shipped in the package (`search_spaces/*.toml`)."""
    return sorted(p.name[: -len(".toml")] for p in _bundled_files().iterdir() if p.name.endswith(".toml"))


def _recipe_spec(name, loss):
    spec = {"family": loss.family, "params": dict(loss.params), "name": name}
    if loss.power is not None:
        spec["class_weights"] = {"power": loss.power}
        if loss.start is not None:
            spec["class_weights"]["start"] = loss.start
    return spec
