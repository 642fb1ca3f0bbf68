"""The data order: the index batches `model.fit` draws on arrays, so a population's members see a solo
trial's batches."""

from __future__ import annotations

import keras
import numpy as np

from losstune.checks import positive_int


def check_shuffle(shuffle):
    """`shuffle` as `fit` takes it here: True or False (not "batch")."""
    if shuffle not in (True, False):
        raise ValueError(f"`shuffle` must be True or False, got {shuffle!r}.")
    return bool(shuffle)


def epoch_batches(num_samples, batch_size, *, seed, epochs, shuffle=True):
    """The index batches of each epoch that `model.fit(x, y, batch_size=..., epochs=..., shuffle=...)` uses
    on arrays of `num_samples` rows after `keras.utils.set_random_seed(seed)`: a list (one per epoch) of
    lists of int64 index arrays.

    It runs Keras's own array data adapter the way the backend's `fit` iterates it, so the order is the
    adapter's, not a copy of its algorithm. On TensorFlow the permutation comes from the global seed through
    the adapter's `tf.data` pipeline, and Keras 3.15 draws the same permutation every epoch; on JAX, `fit`
    draws from NumPy's global generator, once to build the model's metrics and then once per epoch.
    Resets the global seeds, as the solo trial does.
    """
    num_samples = positive_int("num_samples", num_samples, 1)
    batch_size = positive_int("batch_size", batch_size, 1)
    epochs = positive_int("epochs", epochs, 0)
    if not check_shuffle(shuffle):
        order = [np.arange(i, min(i + batch_size, num_samples), dtype="int64")
                 for i in range(0, num_samples, batch_size)]
        return [list(order) for _ in range(epochs)]
    # Keras private (3.x): `ArrayDataAdapter(x, batch_size=, shuffle=)` and its `get_tf_dataset()` /
    # `get_numpy_iterator()` are what TensorFlow's and JAX's `fit` iterate over for NumPy arrays; running
    # them here gives the order `fit` uses, without copying its shuffling.
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    keras.utils.set_random_seed(int(seed))
    adapter = ArrayDataAdapter(np.arange(num_samples, dtype="int64"), batch_size=batch_size, shuffle=True)
    if keras.backend.backend() == "tensorflow":
        dataset = adapter.get_tf_dataset()
        return [[np.asarray(b, dtype="int64") for b in dataset] for _ in range(epochs)]
    # The JAX trainer's `_symbolic_build` takes a first batch from an iterator of its own before epoch 0.
    next(iter(adapter.get_numpy_iterator()))
    return [[np.asarray(b, dtype="int64") for b in adapter.get_numpy_iterator()] for _ in range(epochs)]
