"""Demo datasets built from scikit-learn's bundled (offline) data or generated: no network.

Each returns a `Split` of numpy arrays: a training set, a validation set the search ranks trials on, and a
held-out test set.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Split(NamedTuple):
    x_train: object
    y_train: np.ndarray
    x_val: object
    y_val: np.ndarray
    x_test: object
    y_test: np.ndarray


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data / 16.0).astype("float32"), digits.target.astype("int64")


def _balanced_take(y, per_class, rng, exclude):
    picked = []
    for c in np.unique(y):
        idx = np.setdiff1d(np.flatnonzero(y == c), exclude)
        picked.append(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
    return np.concatenate(picked)


def long_tailed_digits(imbalance=50.0, seed=0, val_per_class=30, test_per_class=40):
    """scikit-learn's digits (8x8 images, 10 classes) with a long-tailed training set.

    Class c keeps n_max * imbalance ** (-c / 9) training examples (class 0 the most, class 9 the
    fewest: n_max / imbalance); validation and test sets are balanced.
    """
    if not (isinstance(imbalance, (int, float)) and imbalance >= 1):
        raise ValueError(f"`imbalance` must be a number >= 1, got {imbalance!r}.")
    x, y = _digits()
    rng = np.random.default_rng(seed)
    test = _balanced_take(y, test_per_class, rng, np.array([], int))
    val = _balanced_take(y, val_per_class, rng, test)
    rest = np.setdiff1d(np.arange(len(y)), np.concatenate([test, val]))
    n_max = min(np.bincount(y[rest]))
    train = []
    for c in range(10):
        keep = max(1, int(round(n_max * imbalance ** (-c / 9.0))))
        idx = rest[y[rest] == c]
        train.append(rng.choice(idx, size=keep, replace=False))
    train = rng.permutation(np.concatenate(train))
    return Split(x[train], y[train], x[val], y[val], x[test], y[test])


def imbalanced_binary_digits(positive=9, positive_fraction=0.05, seed=0):
    """Digit `positive` vs the rest, with positives thinned to `positive_fraction` of the training set."""
    x, y = _digits()
    rng = np.random.default_rng(seed)
    yb = (y == positive).astype("int64")
    order = rng.permutation(len(y))
    n_test = len(y) // 4
    test, val, train = order[:n_test], order[n_test:2 * n_test], order[2 * n_test:]
    neg, pos = train[yb[train] == 0], train[yb[train] == 1]
    keep = max(2, int(round(positive_fraction * len(neg) / (1 - positive_fraction))))
    train = rng.permutation(np.concatenate([neg, pos[:keep]]))
    return Split(x[train], yb[train], x[val], yb[val], x[test], yb[test])


def digit_pairs(n_train=2000, n_val=600, n_test=600, seed=0):
    """Pairs of digits for a siamese network: x = (image_a, image_b), y = 1 same digit, 0 different.

    Half the pairs are similar. The images of the three sets are disjoint.
    """
    x, y = _digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    thirds = np.array_split(order, [int(len(y) * 0.6), int(len(y) * 0.8)])

    def pairs(idx, n):
        a = rng.choice(idx, size=n)
        same = rng.random(n) < 0.5
        b = np.empty(n, int)
        for i in range(n):
            pool = idx[(y[idx] == y[a[i]]) == same[i]]
            pool = pool[pool != a[i]] if same[i] else pool
            b[i] = rng.choice(pool)
        return (x[a], x[b]), (y[a] == y[b]).astype("int64")

    (xa, ya), (xb, yb), (xc, yc) = pairs(thirds[0], n_train), pairs(thirds[1], n_val), pairs(thirds[2], n_test)
    return Split(xa, ya, xb, yb, xc, yc)


def regression_with_outliers(outlier_fraction=0.1, seed=0):
    """scikit-learn's diabetes regression (standardised) with gross outliers in the training targets."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x = data.data.astype("float32")
    x = (x - x.mean(0)) / x.std(0)
    y = data.target.astype("float32")
    y = ((y - y.mean()) / y.std())[:, None]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n = len(y)
    train, val, test = order[: int(n * 0.6)], order[int(n * 0.6): int(n * 0.8)], order[int(n * 0.8):]
    y_train = y[train].copy()
    bad = rng.random(len(train)) < outlier_fraction
    y_train[bad] += rng.choice([-1.0, 1.0], size=(bad.sum(), 1)) * rng.uniform(5, 10, size=(bad.sum(), 1))
    return Split(x[train], y_train, x[val], y[val], x[test], y[test])


def multilabel(n_samples=1200, n_labels=5, seed=0):
    """A generated multi-label problem (scikit-learn's make_multilabel_classification)."""
    from sklearn.datasets import make_multilabel_classification

    x, y = make_multilabel_classification(n_samples=n_samples, n_features=20, n_classes=n_labels,
                                          n_labels=1, random_state=seed)
    x = (x / max(x.max(), 1)).astype("float32")
    y = y.astype("int64")
    a, b = int(n_samples * 0.6), int(n_samples * 0.8)
    return Split(x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:])
