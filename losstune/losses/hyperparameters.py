"""The declaration of a loss hyperparameter, and the checks every loss constructor runs from it.

A loss class lists its hyperparameters once, as `Hyperparameter` objects (see `base.LosstuneLoss`): the
constructor validates from them, the class docstring's "Args" section and the registry
(`losstune.families`), the search spaces' checks and the README's family table are all derived from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

KINDS = ("float", "int", "bool", "choice")
SAMPLINGS = ("linear", "log", "reverse_log")


# --------------------------------------------------------------------------------------------------
# Validation at the boundary: every message names the family, the argument, the value and what is allowed.
# --------------------------------------------------------------------------------------------------
def interval(low=None, high=None, low_inclusive=True, high_inclusive=True, fmt=repr):
    """The interval as text: "[0.0, 1.0)", "(0.0, inf)" (the ends written by `fmt`)."""
    lo = "-inf" if low is None else fmt(low)
    hi = "inf" if high is None else fmt(high)
    return ("[" if low_inclusive and low is not None else "(") + f"{lo}, {hi}" + (
        "]" if high_inclusive and high is not None else ")"
    )


def check_number(family, name, value, low=None, high=None, low_inclusive=True, high_inclusive=True):
    """Return `value` as a float, or raise ValueError naming family, argument, value and allowed range."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{family}: `{name}` must be a finite number, got {value!r}.")
    value = float(value)
    too_low = low is not None and (value < low or (value == low and not low_inclusive))
    too_high = high is not None and (value > high or (value == high and not high_inclusive))
    if too_low or too_high:
        raise ValueError(
            f"{family}: `{name}` must be in {interval(low, high, low_inclusive, high_inclusive)}, got {value!r}."
        )
    return value


def check_choice(family, name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{family}: `{name}` must be one of {list(allowed)}, got {value!r}.")
    return value


def _number(x):
    """2.0 -> "2", 0.05 -> "0.05": numbers as a reader writes them."""
    return f"{x:g}"


# --------------------------------------------------------------------------------------------------
# The declaration.
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter of a loss: everything about it, in one place.

    `kind` is "float", "int", "bool" or "choice".

    * Valid range (what the constructor accepts): for numbers `low`/`high` (None = unbounded), inclusive
      unless `low_inclusive`/`high_inclusive` say otherwise; for "choice" the allowed `values`. A default
      of None makes None a valid value too ("off", e.g. focal's `alpha`).
    * Suggested search range (what a search space should try, from the paper's settings): `search =
      (min, max)` with `sampling` "linear", "log" or "reverse_log", or `search_values` (a few values to
      try; `search` is then their span). For "choice" and "bool", every allowed value.
    * `paper`: the setting the paper used, as text ("2", "{0.9, 0.99, 0.999, 0.9999}"); `doc`: one line
      on what the hyperparameter does.
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
    search_values: tuple | None = None
    paper: str = ""

    def __post_init__(self):
        where = f"hyperparameter {self.name!r}"
        if self.kind not in KINDS:
            raise ValueError(f"{where}: `kind` must be one of {list(KINDS)}, got {self.kind!r}.")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"{where}: `sampling` must be one of {list(SAMPLINGS)}, got {self.sampling!r}.")
        if self.kind == "choice" and not self.values:
            raise ValueError(f"{where}: a choice lists its allowed `values`.")
        if self.search_values is not None:
            object.__setattr__(self, "search_values", tuple(self.search_values))
            object.__setattr__(self, "search", (min(self.search_values), max(self.search_values)))
        if self.search is not None:
            object.__setattr__(self, "search", tuple(self.search))
            if len(self.search) != 2 or self.search[0] > self.search[1]:
                raise ValueError(f"{where}: `search` is (min, max), got {self.search!r}.")
            for v in self.search_values or self.search:
                self.validate(where, v)
            if self.sampling != "linear" and self.search[0] <= 0:
                raise ValueError(f"{where}: {self.sampling} sampling needs a search range above 0, got {self.search!r}.")
        if self.values is not None:
            object.__setattr__(self, "values", tuple(self.values))
        self.validate(where, self.default)

    def validate(self, family: str, value):
        """Return the value in its canonical Python type, or raise ValueError naming everything."""
        if value is None and self.default is None:
            return None
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{family}: `{self.name}` must be true or false, got {value!r}.")
            return value
        if self.kind == "choice":
            return check_choice(family, self.name, value, self.values)
        value = check_number(family, self.name, value, self.low, self.high, self.low_inclusive, self.high_inclusive)
        if self.kind == "int":
            if value != int(value):
                raise ValueError(f"{family}: `{self.name}` must be an integer, got {value!r}.")
            return int(value)
        return value

    # --- derived descriptions ----------------------------------------------------------------------
    def valid_text(self):
        """The valid range as text: "[0, inf)", "{hard, all}", "true / false"."""
        if self.kind == "bool":
            return "true / false"
        if self.kind == "choice":
            return "{" + ", ".join(str(v) for v in self.values) + "}"
        return interval(self.low, self.high, self.low_inclusive, self.high_inclusive, fmt=_number)

    def search_text(self):
        """The suggested search range as text: "0 to 5", "0.1 to 2 log", "{10, 30, 64}"; "" if none."""
        if self.search_values is not None:
            return "{" + ", ".join(_number(v) for v in self.search_values) + "}"
        if self.search is None:
            return ""
        text = f"{_number(self.search[0])} to {_number(self.search[1])}"
        return text if self.sampling == "linear" else f"{text} {self.sampling}"

    def suggested_spec(self):
        """The suggested search as a search-space spec (what a TOML file would say), or None."""
        if self.kind == "bool":
            return {"values": [False, True]}
        if self.kind == "choice":
            return {"values": list(self.values)}
        if self.search_values is not None:
            return {"values": list(self.search_values)}
        if self.search is None:
            return None
        return {"min": self.search[0], "max": self.search[1], "sampling": self.sampling}

    def arg_doc(self):
        """The hyperparameter's line in a docstring's "Args" section (without the name)."""
        if self.kind in ("float", "int"):
            parts = [f"{self.kind} in {self.valid_text()}" + (" or None" if self.default is None else "")]
        elif self.kind == "choice":
            parts = ["one of " + ", ".join(repr(v) for v in self.values)]
        else:
            parts = ["bool"]
        parts[0] += f"; default {self.default!r}."
        if self.doc:
            parts.append(self.doc[0].upper() + self.doc[1:] + ("" if self.doc.endswith(".") else "."))
        if self.paper:
            parts.append(f"Paper: {self.paper}.")
        if self.kind in ("float", "int") and self.search is not None:
            parts.append(f"Search: {self.search_text()}.")
        return " ".join(parts)
