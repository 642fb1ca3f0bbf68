"""export_loss / load_loss: the schema-versioned JSON file that rebuilds a loss exactly.

The file is data, never code: loading looks the loss class up among losstune's own registered losses and
Keras's built-in losses by name, checks every key, and calls the class's constructor, which validates every
value. No pickle, no eval, no import of a module named in the file.
"""

from __future__ import annotations

import json
import os

import keras

from losstune import reweighting
from losstune.checks import positive_int
from losstune.files import write_json_atomic

SCHEMA_VERSION = 1
FORMAT = "losstune.loss"
_TOP_KEYS = {
    "schema_version", "format", "loss", "family", "task", "params", "from_logits", "class_weight_power",
    "class_weights", "class_counts", "objective", "score", "baseline", "baseline_score", "trial_id",
    "versions", "score_se", "score_repeats", "score_rule", "pick", "warnings", "calibration", "prior", "class_weights_start",
}
_REQUIRED = {"schema_version", "format", "loss"}


def _allowed_classes():
    """Loss classes a config may name: losstune's registered losses and Keras's built-in ones."""
    import losstune.families  # noqa: F401  (registers every losstune loss)
    from losstune.losses.base import LosstuneLoss

    allowed = {}
    stack = list(LosstuneLoss.__subclasses__())
    while stack:
        cls = stack.pop()
        allowed[keras.saving.get_registered_name(cls)] = cls
        allowed.setdefault(cls.__name__, cls)
        stack.extend(cls.__subclasses__())
    for name in dir(keras.losses):
        obj = getattr(keras.losses, name)
        if isinstance(obj, type) and issubclass(obj, keras.losses.Loss) and obj is not keras.losses.Loss:
            allowed.setdefault(name, obj)
    return allowed


def loss_to_dict(loss):
    """{"class_name", "config"} of a loss, for the JSON file."""
    if not isinstance(loss, keras.losses.Loss):
        raise ValueError(f"`loss` must be a keras.losses.Loss, got {type(loss).__name__}.")
    name = keras.saving.get_registered_name(type(loss))
    if name not in _allowed_classes():
        raise ValueError(
            f"cannot export {type(loss).__name__}: only losstune's losses and Keras's built-in losses "
            f"can be saved as a loss config."
        )
    return {"class_name": name, "config": _jsonable(loss.get_config())}


def _jsonable(value):
    """Plain JSON values: numpy scalars as Python numbers (tuples become lists when dumped)."""
    return keras.tree.map_structure(lambda v: v.item() if hasattr(v, "item") else v, value)


def export_loss(loss_or_config, path):
    """Write a loss (a `keras.losses.Loss`) or a search's best config (a dict) as a loss config file."""
    if isinstance(loss_or_config, keras.losses.Loss):
        data = {"schema_version": SCHEMA_VERSION, "format": FORMAT, "loss": loss_to_dict(loss_or_config),
                "versions": library_versions()}
    elif isinstance(loss_or_config, dict):
        data = dict(loss_or_config)
        data.setdefault("schema_version", SCHEMA_VERSION)
        data.setdefault("format", FORMAT)
        data.setdefault("versions", library_versions())
        loss_from_dict(data, source="export_loss")  # refuse to write a config that would not load
    else:
        raise ValueError(
            f"export_loss: expected a keras.losses.Loss or a config dict, got {type(loss_or_config).__name__}."
        )
    return write_json_atomic(path, data)


def load_loss(path):
    """Rebuild the `keras.losses.Loss` saved by `export_loss` / `SearchResult.export` (a deferred
    re-weighting's loss with its class weights on: see `deferred_reweighting`)."""
    return loss_from_dict(_read(path, "load_loss"), source=os.fspath(path))


def deferred_reweighting(path, epochs):
    """The Keras callback that reproduces a search's deferred re-weighting in your training of `epochs`
    epochs (the class weights of `load_loss(path)` switch on at the same fraction of the epochs), or None
    when the exported loss is weighted from the start. Compile the model with `load_loss(path)`."""
    data = _read(path, "deferred_reweighting")
    loss = loss_from_dict(data, source=os.fspath(path))
    start = data.get("class_weights_start")
    if not start:
        return None
    epochs = positive_int("epochs", epochs)
    try:
        return reweighting.DeferredReweighting(reweighting.Schedule(loss, reweighting.start_epoch(start, epochs)))
    except ValueError as err:
        raise ValueError(f"{os.fspath(path)}: `class_weights_start`: {err}") from None


def _read(path, who):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{who}: no loss config at {path!r}.")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{who}: {path} is not valid JSON (truncated or corrupt?): {err}") from None


def loss_from_dict(data, source="<config>"):
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a loss config is a JSON object, got {type(data).__name__}.")
    missing = _REQUIRED - set(data)
    if missing:
        raise ValueError(f"{source}: missing keys {sorted(missing)}; not a losstune loss config.")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ValueError(f"{source}: unknown keys {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}.")
    if data["format"] != FORMAT:
        raise ValueError(f"{source}: `format` must be {FORMAT!r}, got {data['format']!r}.")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ValueError(
            f"{source}: unknown `schema_version` {data['schema_version']!r}; this losstune reads version "
            f"{SCHEMA_VERSION}. Upgrade losstune to read newer files."
        )
    spec = data["loss"]
    if not isinstance(spec, dict) or set(spec) != {"class_name", "config"} or not isinstance(spec["config"], dict):
        raise ValueError(f"{source}: `loss` must be {{\"class_name\": str, \"config\": {{...}}}}, got {spec!r}.")
    allowed = _allowed_classes()
    cls = allowed.get(spec["class_name"])
    if cls is None:
        raise ValueError(
            f"{source}: unknown loss class {spec['class_name']!r}; a config may name only losstune's losses "
            f"and Keras's built-in losses, never a Python path."
        )
    try:
        return cls.from_config(dict(spec["config"]))
    except TypeError as err:
        raise ValueError(f"{source}: bad config for {spec['class_name']}: {err}") from None


def library_versions():
    import keras_tuner
    import numpy

    from losstune.version import __version__

    versions = {"losstune": __version__, "keras": keras.__version__, "keras_tuner": keras_tuner.__version__,
                "numpy": numpy.__version__, "backend": keras.backend.backend()}
    try:
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    except ImportError:  # pragma: no cover
        pass
    return versions
