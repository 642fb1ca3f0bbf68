"""The bundled search spaces: TOML files in `search_spaces/`, installed as `losstune.search_spaces`."""

from __future__ import annotations

from losstune.lossspace import LossSpace, bundled_names


def available():
    """Names of the bundled search spaces."""
    return bundled_names()


def load(name) -> LossSpace:
    """The bundled space `name`."""
    return LossSpace.from_toml(name)


def describe():
    """(name, task, family names, one-line description) for each bundled space."""
    return [(n, s.task.name, list(s.families), s.description) for n, s in ((n, load(n)) for n in available())]
