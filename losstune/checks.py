"""Argument checks shared by losstune's modules (a low layer: it imports nothing from losstune)."""

from __future__ import annotations

import numpy as np


def positive_int(name, value, minimum=1):
    """`value` as an int; a ValueError naming the argument `name` when it is not an integer >= `minimum`
    (a bool is not an integer here)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)
