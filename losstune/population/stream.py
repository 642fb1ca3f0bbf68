"""The input stream: the batches `model.fit` draws from whatever it takes (NumPy arrays or tensors, a
`tf.data.Dataset`, a `keras.utils.PyDataset`, a Python generator), drawn through Keras's own epoch iterator and
data adapters, once per epoch, and fed to every member of a population.

Because the batches come from the same iterator class `fit` builds, created at the same point after
`keras.utils.set_random_seed`, a member sees the batches (order, shuffling, a pipeline's own augmentation) that
a solo `fit` of the same input and seed sees; the pipeline runs once per batch for all members.
"""

from __future__ import annotations

import random

import keras
import numpy as np


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


class SeededStreams:
    """Repeats as members: one `Stream` of the same input per seed, each as a solo `fit` with that seed draws
    it, their batches stacked along a new leading (stream) axis, (R, B, ...) for every part of a batch.

    `make()` builds one Stream; it is called right after `keras.utils.set_random_seed(seed)` for each seed in
    turn, so each stream's order and a pipeline's seeded randomness are those of a solo `fit` with its seed.
    Keras's array adapter draws an epoch's shuffle from NumPy's global generator as the epoch starts (JAX's
    path; TensorFlow's fixes its shuffle op's seed when the stream is built), so each stream draws its batches
    under its own state of NumPy's and Python's global generators, saved between draws: interleaving R
    streams then draws what R solo runs draw. From a tf.data.Dataset each stream iterates the same dataset:
    a pipeline's own randomness (a shuffle that reshuffles on every pass, seeded augmentation) goes on from
    pass to pass, as over successive solo `fit`s on that dataset in one process.
    """

    def __init__(self, make, seeds):
        self.streams, self.states = [], []
        for seed in seeds:
            keras.utils.set_random_seed(int(seed))
            self.streams.append(make())
            self.states.append(_global_state())

    @property
    def steps(self):
        return self.streams[0].steps

    def epoch(self):
        """The next epoch's batches of every stream, stacked: (x, y, sample_weight), each part (R, B, ...)."""
        epochs = [s.epoch() for s in self.streams]
        while True:
            batches = [self._draw(i, epoch) for i, epoch in enumerate(epochs)]
            if all(b is None for b in batches):
                return
            if any(b is None for b in batches) or len({_shapes(b) for b in batches}) > 1:
                raise ValueError("the repeats' streams of one input yield batches of different shapes or numbers; "
                                 "a population of repeats needs batches of one shape at each step.")
            yield tuple(None if parts[0] is None else keras.tree.map_structure(lambda *a: stack(a), *parts)
                        for parts in zip(*batches))

    def _draw(self, i, epoch):
        saved = _global_state()
        _set_global_state(self.states[i])
        try:
            return next(epoch, None)
        finally:
            self.states[i] = _global_state()
            _set_global_state(saved)


class Repeated:
    """`stream`'s batches repeated `times` along a new leading axis: one input (the validation data) for every
    stream of a `SeededStreams`."""

    def __init__(self, stream, times):
        self.stream, self.times = stream, times

    @property
    def steps(self):
        return self.stream.steps

    def epoch(self):
        for batch in self.stream.epoch():
            yield tuple(None if part is None else keras.tree.map_structure(lambda a: stack([a] * self.times), part)
                        for part in batch)


def stack(values):
    """Arrays (NumPy, or the backend's tensors from a dataset) stacked along a new leading axis."""
    if all(isinstance(v, np.ndarray) for v in values):
        return np.stack(values)
    return keras.ops.stack([keras.ops.convert_to_tensor(v) for v in values])


def _shapes(batch):
    return tuple(None if part is None else tuple(tuple(a.shape) for a in keras.tree.flatten(part)) for part in batch)


def _global_state():
    """The global generators an input's batches may draw from: NumPy's and Python's."""
    return np.random.get_state(), random.getstate()


def _set_global_state(state):
    np.random.set_state(state[0])
    random.setstate(state[1])
