"""Each scored training's validation predictions, kept beside its trial (`trial_<id>/predictions_<k>.npz`).

Repeats over seeds share one validation sample, so their spread misses that sample's own error; from the
kept predictions the pick and the warnings bootstrap it (sampling.py, pick.py). The file holds the labels
and the model's outputs on the validation examples of execution k (its fold, with folds) after training.
"""

from __future__ import annotations

import io
import os

import keras
import numpy as np

from losstune import inputs, layout
from losstune.files import write_bytes_atomic

_BATCH = 1024


def validation_arrays(hypermodel, fit, execution):
    """(x_val, y_val) that execution `execution` validates on (its fold, with folds), or None where they are
    not arrays (a `tf.data.Dataset`): then no predictions are kept and intervals count seed noise only."""
    validation = hypermodel.execution_data(fit.get("x"), fit.get("y"), fit.get("validation_data"), execution)[2]
    if not isinstance(validation, (tuple, list)) or len(validation) != 2 or inputs.is_dataset(validation[0]):
        return None
    return validation


class ValidationPredictions(keras.callbacks.Callback):
    """When training ends, write the model's outputs on `(x, y)` with the labels to `path` (atomically).

    The outputs are computed eagerly in batches with `training=False`: no `predict` function is traced, which
    for a population's members would be one trace each."""

    def __init__(self, path, x, y):
        super().__init__()
        self.path, self.x, self.y = path, x, np.asarray(y)

    def on_train_end(self, logs=None):
        n = len(self.y)
        outputs = []
        for start in range(0, n, _BATCH):
            batch = keras.tree.map_structure(lambda a: a[start:start + _BATCH], self.x)
            outputs.append(np.asarray(keras.ops.convert_to_numpy(self.model(batch, training=False)), "float32"))
        save(self.path, self.y, np.concatenate(outputs) if outputs else np.zeros((0,), "float32"))


def save(path, y_true, y_pred):
    buffer = io.BytesIO()
    np.savez(buffer, y_true=np.asarray(y_true), y_pred=np.asarray(y_pred))
    write_bytes_atomic(path, buffer.getvalue())


def load(trial_dir, repeats):
    """[(y_true, y_pred)] of executions 0 .. repeats-1 of a trial, or None when any of them is missing (a
    search from an older version, validation from a dataset, a failed repeat)."""
    runs = []
    for execution in range(repeats):
        path = layout.predictions_file(trial_dir, execution)
        if not os.path.isfile(path):
            return None
        with np.load(path, allow_pickle=False) as data:
            runs.append((data["y_true"], data["y_pred"]))
    return runs

