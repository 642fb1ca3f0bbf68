"""The input stream: the batches `model.fit` draws from whatever it takes (NumPy arrays or tensors, a
`tf.data.Dataset`, a `keras.utils.PyDataset`, a Python generator), drawn through Keras's own epoch iterator and
data adapters, once per epoch, and fed to every member of a population.

Because the batches come from the same iterator class `fit` builds, created at the same point after
`keras.utils.set_random_seed`, a member sees the batches (order, shuffling, a pipeline's own augmentation) that
a solo `fit` of the same input and seed sees; the pipeline runs once per batch for all members.
"""

from __future__ import annotations

import keras


def unpack(data):
    """(x, y, sample_weight) of one element as `fit` reads it: `(x,)`, `(x, y)` or `(x, y, sample_weight)`;
    anything else is `x` alone (a dataset, a PyDataset, a generator)."""
    return keras.utils.unpack_x_y_sample_weight(data)


class Stream:
    """Batches of one input, epoch after epoch, as `fit` (training) or `evaluate` (validation) draws them.

    Args:
        x, y, sample_weight: as `model.fit` takes them (y and sample_weight None when x yields them).
        batch_size: for arrays (None: Keras's default, 32); None for inputs that batch themselves.
        shuffle: as in `fit` (True, False or "batch"); ignored by inputs that order themselves.
        training: True for `fit`'s training input, False for its validation input (never shuffled, started
            afresh before each pass, as `evaluate` does with the iterator `fit` caches for validation).

    Invalid inputs raise Keras's own errors here, before any member trains.
    """

    def __init__(self, x, y=None, sample_weight=None, *, batch_size=None, shuffle=False, training=True):
        self.training = training
        self.iterator = _epoch_iterator(x, y, sample_weight, batch_size, shuffle if training else False)
        if training and keras.backend.backend() == "jax":
            # Keras private (3.x): JAX's `fit` builds the model's metrics symbolically from a first batch it
            # draws from this iterator before epoch 0 (`Trainer._symbolic_build`); draw it too, so the epochs
            # that follow consume the input's randomness (NumPy's global generator) exactly as there.
            for _, _, iterator in self.iterator:
                next(iterator)
                break
        if training:
            self.iterator.reset()

    @property
    def steps(self):
        """Batches per epoch when known (arrays, a dataset of known cardinality, a PyDataset), else None."""
        return self.iterator.num_batches

    def epoch(self):
        """The next epoch's batches, each as (x, y, sample_weight)."""
        if not self.training:
            self.iterator.reset()
        with self.iterator.catch_stop_iteration():
            for _, _, iterator in self.iterator:
                yield unpack(next(iterator))


def _epoch_iterator(x, y, sample_weight, batch_size, shuffle):
    """The backend's epoch iterator over the input, as `fit` creates it (one step per execution)."""
    kwargs = dict(x=x, y=y, sample_weight=sample_weight, batch_size=batch_size, steps_per_epoch=None,
                  shuffle=shuffle, steps_per_execution=1)
    # Keras private (3.x): `TFEpochIterator` / `JAXEpochIterator` are the iterators the TensorFlow and JAX
    # trainers' `fit` and `evaluate` draw batches from; they pick the data adapter for the input type.
    if keras.backend.backend() == "jax":
        from keras.src.backend.jax.trainer import JAXEpochIterator

        return JAXEpochIterator(**kwargs)
    import tensorflow as tf
    from keras.src.backend.tensorflow.trainer import TFEpochIterator

    return TFEpochIterator(distribute_strategy=tf.distribute.get_strategy(), **kwargs)
