"""Focal and contrastive losses on a second Keras backend (JAX on CPU), against the TensorFlow values."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = r"""
import json, numpy as np, keras, jax
import losstune
from losstune import families
assert keras.backend.backend() == "jax"
z = np.array([[100.0, -100.0, 0.0], [-3.0, 2.0, 1.0], [0.5, 0.1, -0.2]], "float32")
ids = np.array([0, 0, 2])
bz = np.array([[100.0], [-100.0], [0.7]], "float32")
by = np.array([[0.0], [1.0], [1.0]], "float32")
d = np.array([[0.0], [0.4], [2.5]], "float32")
py = np.array([1.0, 0.0, 0.0], "float32")
out = {}
cases = {
    "focal_multiclass": (families.get("focal").build({"gamma": 0.5}, task="multiclass", from_logits=True), ids, z),
    "focal_binary": (families.get("focal").build({"gamma": 0.5, "alpha": 0.25}, task="binary", from_logits=True), by, bz),
    "contrastive": (families.get("contrastive").build({"margin": 1.0}, task="pairs"), py, d),
}
for name, (loss, y, x) in cases.items():
    value, grad = jax.value_and_grad(lambda p: loss(y, p))(x)
    out[name] = {"value": float(value), "grad": np.asarray(grad).tolist()}
print("RESULT" + json.dumps(out))
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed (pip install 'losstune[jax]')")
def test_focal_and_contrastive_on_jax_match_tensorflow():
    import tensorflow as tf

    from losstune import families

    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    jax_out = json.loads(line[len("RESULT"):])
    z = np.array([[100.0, -100.0, 0.0], [-3.0, 2.0, 1.0], [0.5, 0.1, -0.2]], "float32")
    bz = np.array([[100.0], [-100.0], [0.7]], "float32")
    d = np.array([[0.0], [0.4], [2.5]], "float32")
    cases = {
        "focal_multiclass": (families.get("focal").build({"gamma": 0.5}, task="multiclass", from_logits=True),
                             np.array([0, 0, 2]), z),
        "focal_binary": (families.get("focal").build({"gamma": 0.5, "alpha": 0.25}, task="binary", from_logits=True),
                         np.array([[0.0], [1.0], [1.0]], "float32"), bz),
        "contrastive": (families.get("contrastive").build({"margin": 1.0}, task="pairs"),
                        np.array([1.0, 0.0, 0.0], "float32"), d),
    }
    for name, (loss, y, x) in cases.items():
        var = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = loss(y, var)
        grad = tape.gradient(value, var).numpy()
        assert np.isfinite(jax_out[name]["value"]) and np.all(np.isfinite(jax_out[name]["grad"]))
        assert jax_out[name]["value"] == pytest.approx(float(value), rel=1e-5), name
        np.testing.assert_allclose(jax_out[name]["grad"], grad, rtol=1e-4, atol=1e-7, err_msg=name)
    # contrastive against its formula: mean(y d^2 + (1 - y) max(1 - d, 0)^2)
    expected = np.mean([0.0, 0.6 ** 2, 0.0])
    assert jax_out["contrastive"]["value"] == pytest.approx(expected, rel=1e-5)
