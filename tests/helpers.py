"""Small models and data shared by the search tests."""

import json
import logging
import os
import subprocess
import sys
from contextlib import contextmanager

import keras
import numpy as np


def mlp(num_outputs=10, activation="softmax", inputs=64, hidden=32, dropout=None):
    def build(hp=None):
        return keras.Sequential([
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, activation="relu"),
            *([keras.layers.Dropout(dropout)] if dropout else []),
            keras.layers.Dense(num_outputs, activation=activation),
        ])

    return build


def siamese(hp=None, inputs=64, dim=16):
    """Two digit images -> Euclidean distance of their embeddings, shape (n, 1)."""
    encoder = keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(32, activation="relu"),
                                keras.layers.Dense(dim)])
    a, b = keras.Input((inputs,)), keras.Input((inputs,))
    diff = keras.layers.Subtract()([encoder(a), encoder(b)])
    distance = keras.layers.Lambda(
        lambda d: keras.ops.sqrt(keras.ops.sum(keras.ops.square(d), axis=-1, keepdims=True) + 1e-9))(diff)
    return keras.Model([a, b], distance)


def tiny_multiclass(n=120, classes=3, features=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, features)) * 2
    y = rng.integers(0, classes, size=n)
    x = (centers[y] + rng.normal(size=(n, features))).astype("float32")
    return x, y


def run_jax_script(script, timeout=600):
    """Run `script` (Python source) in a subprocess on the JAX backend (CPU) with the tests folder as
    argv[1]; the dict it prints after "RESULT" as JSON."""
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, "-c", script, here], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=os.path.dirname(here))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))[len("RESULT"):])


# -- layer coverage of populations (tests/test_population_layers.py, benchmarks/population_layers.py) ------
class LayerSizes:
    """Input shapes per kind of data, the width of the layers (units, filters) and the token vocabulary."""

    def __init__(self, width, vocabulary, **shapes):
        self.width, self.vocabulary, self.shapes = width, vocabulary, shapes


TINY = LayerSizes(4, 10, flat=(8,), sequence=(6, 3), image=(6, 6, 2), volume=(4, 4, 4, 1), tokens=(6,))


def _front(layer, after=lambda: keras.layers.Identity()):
    """A random or augmentation layer on images, before the first weight layer (where it belongs)."""
    return "image", lambda x, s: after()(keras.layers.Conv2D(s.width, 3, activation="relu")(layer()(x)))


def _after_conv(layer):
    return "image", lambda x, s: layer()(keras.layers.Conv2D(s.width, 3, activation="relu")(x))


L = keras.layers
# layer -> (kind of input, body: (input tensor, LayerSizes) -> tensor); a model is Input -> body -> Flatten ->
# Dense(classes, softmax).
LAYER_CASES = {
    "Dense": ("flat", lambda x, s: L.Dense(s.width, activation="relu")(x)),
    "Conv1D": ("sequence", lambda x, s: L.Conv1D(s.width, 3, activation="relu")(x)),
    "Conv2D": ("image", lambda x, s: L.Conv2D(s.width, 3, activation="relu")(x)),
    "Conv3D": ("volume", lambda x, s: L.Conv3D(s.width, 3, activation="relu")(x)),
    "DepthwiseConv2D": ("image", lambda x, s: L.DepthwiseConv2D(3, depth_multiplier=2, activation="relu")(x)),
    "SeparableConv2D": ("image", lambda x, s: L.SeparableConv2D(s.width, 3, activation="relu")(x)),
    "Conv2DTranspose": ("image", lambda x, s: L.Conv2DTranspose(s.width, 3, strides=2, activation="relu")(x)),
    "MaxPooling2D": _after_conv(lambda: L.MaxPooling2D(2)),
    "AveragePooling2D": _after_conv(lambda: L.AveragePooling2D(2)),
    "GlobalAveragePooling2D": _after_conv(L.GlobalAveragePooling2D),
    # No bias before BatchNormalization (it would cancel it: a zero gradient, which Adam turns into steps
    # driven by rounding noise, different on every side).
    "BatchNormalization": ("flat", lambda x, s: L.ReLU()(L.BatchNormalization()(L.Dense(s.width, use_bias=False)(x)))),
    "LayerNormalization": ("flat", lambda x, s: L.ReLU()(L.LayerNormalization()(L.Dense(s.width)(x)))),
    "GroupNormalization": ("image", lambda x, s: L.ReLU()(L.GroupNormalization(groups=2)(L.Conv2D(s.width, 3)(x)))),
    "Embedding": ("tokens", lambda x, s: L.Embedding(s.vocabulary, s.width)(x)),
    "LSTM": ("sequence", lambda x, s: L.LSTM(s.width)(x)),
    "GRU": ("sequence", lambda x, s: L.GRU(s.width)(x)),
    "MultiHeadAttention": ("sequence", lambda x, s: L.MultiHeadAttention(num_heads=2, key_dim=s.width // 2)(x, x)),
    "Dropout": _front(lambda: L.Dropout(0.3)),
    "GaussianNoise": _front(lambda: L.GaussianNoise(0.3)),
    "RandomFlip": _front(L.RandomFlip),
    "RandomTranslation": _front(lambda: L.RandomTranslation(0.2, 0.2)),
    "RandomRotation": _front(lambda: L.RandomRotation(0.2)),
    "RandomZoom": _front(lambda: L.RandomZoom(0.2)),
    "RandomContrast": _front(lambda: L.RandomContrast(0.3)),
    # Several layers in one model, for checks that pay a compilation per model (JAX)
    "RandomFlip+Conv2D+BatchNormalization": _front(L.RandomFlip, L.BatchNormalization),
    "Embedding+LSTM": ("tokens", lambda x, s: L.LSTM(s.width)(L.Embedding(s.vocabulary, s.width)(x))),
}


def layer_model(layer, sizes, classes=3):
    """The model of `LAYER_CASES[layer]` for `sizes`."""
    kind, body = LAYER_CASES[layer]
    inputs = keras.Input(sizes.shapes[kind], dtype="int32" if kind == "tokens" else "float32")
    outputs = L.Dense(classes, activation="softmax")(L.Flatten()(body(inputs, sizes)))
    return keras.Model(inputs, outputs)


def layer_data(layer, sizes, n, classes=3, seed=0):
    """n random examples of the layer's kind of input, with random labels (what is compared is training, not
    learning)."""
    kind = LAYER_CASES[layer][0]
    rng = np.random.default_rng(seed)
    shape = (n,) + sizes.shapes[kind]
    x = rng.integers(0, sizes.vocabulary, shape).astype("int32") if kind == "tokens" else \
        rng.normal(size=shape).astype("float32")
    return x, rng.integers(0, classes, n)


@contextmanager
def pfor_loops():
    """The op types `tf.vectorized_map` converts with a loop over members (no vectorized form), from its
    warnings, while the block runs."""
    seen = []

    class Record(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Using a while_loop for converting"):
                seen.append(message.split()[5])

    handler, logger = Record(), logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
