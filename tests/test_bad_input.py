"""Bad input is reported before the first trial, naming the argument, the value and what is allowed."""

import json
import os

import numpy as np
import pytest

import losstune
from tests.helpers import mlp, tiny_multiclass

X, Y = tiny_multiclass(n=60, classes=3)
XB, YB = X, (Y > 0).astype(int)


def _search(tmp_path, x=X, y=Y, build=None, **kw):
    if x is None:
        import tensorflow as tf

        x = tf.data.Dataset.from_tensor_slices((X, Y)).batch(16)
    kw.setdefault("space", "imbalanced_multiclass")
    kw.setdefault("validation_data", (x, y))
    if kw["validation_data"] == "dataset:7":
        import tensorflow as tf

        kw["validation_data"] = tf.data.Dataset.from_tensor_slices((X[:, :7], Y)).batch(16)
    elif kw["validation_data"] == "dataset-labels":
        import tensorflow as tf

        kw["validation_data"] = tf.data.Dataset.from_tensor_slices((X, Y + 5)).batch(16)
    losstune.search(build or mlp(3, inputs=8), x, y, directory=str(tmp_path), max_trials=kw.pop("max_trials", 2),
                    epochs=1, **kw)


BINARY = dict(space="imbalanced_binary", build=mlp(1, activation="sigmoid", inputs=8))
X_NAN = X.copy()
X_NAN[3, 2] = np.nan
CASES = {
    "one-hot labels for a binary space": (dict(y=np.eye(2)[YB], validation_data=(X, YB), **BINARY),
                                          "task 'binary' takes 0/1 labels of shape \\(n,\\) or \\(n, 1\\).*one-hot"),
    "3 classes for a binary space": (dict(y=Y, validation_data=(X, YB), **BINARY), "got values \\[0.0, 1.0, 2.0\\]"),
    "labels outside [0, n_classes)": (dict(y=Y + 1, validation_data=(X, Y)), "integer class ids in \\[0, 3\\).*\\[1, 3\\]"),
    "non-integer class ids": (dict(y=Y + 0.5, validation_data=(X, Y)), "not integers"),
    "NaN in features": (dict(x=X_NAN), "`x` holds 1 NaN or infinite values"),
    "inf in labels": (dict(y=np.where(Y == 0, np.inf, Y)), "`y` holds 15 NaN or infinite values"),
    "empty arrays": (dict(x=X[:0], y=Y[:0]), "`x` is empty"),
    "x/y length mismatch": (dict(y=Y[:-1]), "`x` has 60 examples but `y` has 59"),
    "validation labels out of range": (dict(validation_data=(X, Y + 5)), "validation_data \\(labels\\).*\\[0, 3\\)"),
    "model output too narrow for the labels": (dict(y=Y * 3, build=mlp(3, inputs=8), validation_data=(X, Y)),
                                               "class ids in \\[0, 3\\)"),
    "model output does not fit binary": (dict(space="imbalanced_binary", y=YB, validation_data=(X, YB)),
                                         "model outputs 3 values per example; task 'binary' needs 1"),
    "logits where probabilities are expected": (dict(build=mlp(3, activation=None, inputs=8)),
                                                "expects probabilities in \\[0, 1\\].*outputs logits"),
    "probabilities where logits are expected": (dict(from_logits=True), "last layer applies 'softmax'"),
    "objective that does not exist": (dict(objective="val_nope"), "`objective`='val_nope' is not a metric"),
    "objective that depends on the loss": (dict(objective="val_loss"), "depends on the loss"),
    "unknown tuner": (dict(tuner="annealing"), "`tuner` must be one of"),
    "zero trials": (dict(max_trials=0), "`max_trials` must be an integer >= 1, got 0"),
    "unknown bundled space": (dict(space="imbalanced"), "unknown search space 'imbalanced'"),
    "a single confirmation seed": (dict(confirm_seeds=1), "`confirm_seeds` must be an integer >= 2, got 1"),
    "a dataset with separate labels": (dict(x=None, y=Y), "`y` must be None when `x` is a dataset \\(_BatchDataset\\)"),
    "validation features one column short": (
        dict(validation_data=(X[:, :7], Y)),
        "`validation_data`: the model cannot take these features \\(shape \\(8, 7\\)\\); it expects input shape "
        "\\(None, 8\\): .*expected axis -1 of input shape to have value 8"),
    "training features one column short": (
        dict(x=X[:, :7], validation_data=(X, Y)), "`x`: the model cannot take these features \\(shape \\(8, 7\\)\\)"),
    "validation dataset one column short": (
        dict(validation_data="dataset:7"), "`validation_data`: the model cannot take these features"),
    "validation dataset with out-of-range labels": (
        dict(validation_data="dataset-labels"), "validation_data \\(labels\\).*\\[0, 3\\)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_search_input_is_refused_before_training(case, tmp_path):
    kwargs, message = CASES[case]
    with pytest.raises(ValueError, match=message):
        _search(tmp_path, **kwargs)
    assert not os.path.exists(tmp_path / "search"), "nothing may be written before the input is accepted"


SPACE_CASES = {
    "malformed TOML": ('task = "multiclass"\n\n[families.focal]\ngamma = { min = 0.0, max = }\n', "line 4"),
    "unknown family": ('task = "multiclass"\n[families.focall]\n', "unknown loss family 'focall'.*available"),
    "unknown key": ('task = "multiclass"\n[families.focal]\ngama = 2.0\n', "unknown hyperparameter 'gama'; allowed"),
    "range with min > max": ('task = "multiclass"\n[families.focal]\ngamma = { min = 4.0, max = 1.0 }\n',
                             "families.focal.gamma: `min` \\(4.0\\) must be <= `max` \\(1.0\\)"),
    "value outside the valid range": ('task = "multiclass"\n[families.focal]\ngamma = { min = -2.0, max = 1.0 }\n',
                                      "focal: `gamma` must be in \\[0.0, inf\\), got -2.0"),
}


@pytest.mark.parametrize("case", sorted(SPACE_CASES))
def test_bad_space_files_name_the_file_and_key(case, tmp_path):
    text, message = SPACE_CASES[case]
    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        _search(tmp_path / "run", space=str(path))
    assert str(path) in str(err.value)


def test_loss_config_with_unknown_schema_version(tmp_path):
    good = losstune.export_loss(losstune.families.get("focal").build({}), tmp_path / "ok.json")
    data = json.loads(open(good).read())
    data["schema_version"] = 99
    (tmp_path / "v99.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown `schema_version` 99; this losstune reads version 1"):
        losstune.load_loss(tmp_path / "v99.json")


def test_truncated_loss_config(tmp_path):
    good = losstune.export_loss(losstune.families.get("focal").build({}), tmp_path / "ok.json")
    text = open(good).read()
    (tmp_path / "cut.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not valid JSON \\(truncated or corrupt\\?\\)"):
        losstune.load_loss(tmp_path / "cut.json")
