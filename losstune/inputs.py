"""A search's input arrays and datasets: checked before any training, split, and sampled for probes.

Features are an array or a list/tuple/dict of arrays (several model inputs, pairs); `keras.tree` walks them.
Labels are checked by the task (tasks.py).
"""

from __future__ import annotations

import inspect
import warnings

import keras
import numpy as np


def is_dataset(x):
    """Whether `x` is an input that batches itself and yields its labels: a `tf.data.Dataset` or a
    `keras.utils.PyDataset`."""
    if isinstance(x, keras.utils.PyDataset):
        return True
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover
        return False
    return isinstance(x, tf.data.Dataset)


def is_generator(x):
    """Whether `x` is a generator or another iterator, which can be read only once."""
    return inspect.isgenerator(x) or (hasattr(x, "__next__") and not hasattr(x, "__len__"))


def check_not_generator(x, name):
    """A search trains many models from one input; a generator can be read only once."""
    if is_generator(x):
        raise ValueError(f"`{name}` is a generator ({type(x).__name__}), which can be read only once, and a search "
                         f"trains many models from it: wrap it in a keras.utils.PyDataset or "
                         f"tf.data.Dataset.from_generator.")


def elements(dataset):
    """The elements of a dataset as NumPy: each batch of a tf.data.Dataset, or of a PyDataset in index order."""
    if isinstance(dataset, keras.utils.PyDataset):
        return (keras.tree.map_structure(np.asarray, dataset[i]) for i in range(len(dataset)))
    return dataset.as_numpy_iterator()


def as_inputs(x, name):
    """numpy features: an array, or a list/tuple/dict of arrays (several model inputs, pairs)."""
    if isinstance(x, dict):
        return {k: as_inputs(v, f"{name}[{k!r}]") for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(as_inputs(v, f"{name}[{i}]") for i, v in enumerate(x))
    try:
        arr = np.asarray(x)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"`{name}` must be a numpy array, got {type(x).__name__}: {err}") from None
    if arr.dtype == object:
        raise ValueError(f"`{name}` must be a numeric array, got an array of Python objects.")
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (shape {arr.shape}); a search needs at least one example.")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"`{name}` holds {bad} NaN or infinite values; clean or impute them first.")
    return arr


def describe_shapes(x):
    """'shape (8, 63)' of an array, or the shapes of a list/tuple/dict of arrays."""
    shapes = keras.tree.map_structure(lambda a: tuple(np.shape(a)), x)
    return f"shape {shapes}" if isinstance(x, np.ndarray) else f"shapes {shapes}"


def take(x, index):
    """The examples `index` (an integer array or a slice) of features or labels."""
    return keras.tree.map_structure(lambda a: a[index], x)


def holdout_split(x, y, fraction, seed):
    """(x_train, y_train, x_val, y_val): a random `fraction` of the examples held out for validation."""
    n = num_examples(x, "x")
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(n * (1 - fraction))))
    if cut >= n:
        raise ValueError(f"`x` has {n} examples: too few to hold out a validation split; pass `validation_data`.")
    return take(x, order[:cut]), take(y, order[:cut]), take(x, order[cut:]), take(y, order[cut:])


def first_features(data, k=8):
    """The features of the first `k` examples (arrays) or of the first batch (a tf.data.Dataset)."""
    if is_dataset(data):
        return next(iter(elements(data)))[0]
    return take(data, slice(0, k))


def num_examples(x, name):
    lengths = {leaf.shape[0] for leaf in keras.tree.flatten(x)}
    if len(lengths) != 1:
        raise ValueError(f"`{name}`: its arrays have different numbers of examples {sorted(lengths)}.")
    return lengths.pop()


def check_pair(x, y, x_name, y_name):
    x = as_inputs(x, x_name)
    y = as_inputs(y, y_name)
    n_x, n_y = num_examples(x, x_name), num_examples(y, y_name)
    if n_x != n_y:
        raise ValueError(f"`{x_name}` has {n_x} examples but `{y_name}` has {n_y}; they must match.")
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y)):
        raise ValueError(f"`{y_name}` holds NaN or infinite labels.")
    return x, y


def labels_from_dataset(dataset, name="x"):
    """All labels of a dataset (`is_dataset`) of (features, labels) batches, as one numpy array."""
    parts = []
    for element in elements(dataset):
        if not isinstance(element, tuple) or len(element) < 2:
            raise ValueError(f"`{name}`: a {type(dataset).__name__} must yield (features, labels) tuples.")
        parts.append(np.asarray(element[1]))
    if not parts:
        raise ValueError(f"`{name}`: the {type(dataset).__name__} is empty.")
    return np.concatenate(parts, axis=0)


def fold_indices(n, folds, seed, strata=None):
    """(train, validation) index arrays of `folds`-fold cross-validation over n examples, shuffled with
    `seed`; stratified when `strata` (one label per example) is given, so each fold keeps the class mix."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if strata is None:
        splitter, labels = KFold(folds, shuffle=True, random_state=seed), None
    else:
        splitter, labels = StratifiedKFold(folds, shuffle=True, random_state=seed), np.asarray(strata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class rarer than `folds` cannot be in every fold
        return list(splitter.split(np.zeros((n, 1)), labels))
