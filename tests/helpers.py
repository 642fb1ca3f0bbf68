"""Small models and data shared by the search tests."""

import json
import os
import subprocess
import sys

import keras
import numpy as np


def mlp(num_outputs=10, activation="softmax", inputs=64, hidden=32):
    def build(hp=None):
        return keras.Sequential([
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, activation="relu"),
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
