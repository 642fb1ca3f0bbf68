"""The bundled search spaces: TOML files in `search_spaces/`, installed as `losstune.search_spaces`."""

from __future__ import annotations

from importlib import resources

from losstune.space import LossSpace


def _files():
    return resources.files("losstune.search_spaces")


def available():
    """Names of the bundled search spaces."""
    return sorted(p.name[: -len(".toml")] for p in _files().iterdir() if p.name.endswith(".toml"))


def load(name) -> LossSpace:
    """The bundled space `name`."""
    if name not in available():
        raise ValueError(
            f"unknown search space {name!r}: not a bundled space and not a path to a .toml file; "
            f"bundled spaces: {available()}."
        )
    text = (_files() / f"{name}.toml").read_text(encoding="utf-8")
    return LossSpace.from_toml_text(text, source=f"search_spaces/{name}.toml")


def describe():
    """(name, task, family names, one-line description) for each bundled space."""
    return [(n, s.task, list(s.families), s.description) for n, s in ((n, load(n)) for n in available())]
