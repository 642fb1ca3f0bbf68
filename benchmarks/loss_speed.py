"""Forward + backward time per batch of every losstune loss against its nearest Keras built-in (or a plain
keras.ops formula where Keras has none), eager and compiled (tf.function with jit_compile=True).

    python benchmarks/loss_speed.py           # batch 256 and 4096 x 10 and 1000 classes
    python benchmarks/loss_speed.py --quick
"""

import argparse
import time

import _common
import keras
import numpy as np
import tensorflow as tf
from keras import ops

from losstune import families


def plain(fn):
    """A keras.ops formula as a Keras loss, so both sides pay for `Loss.__call__` alike."""
    class FormulaLoss(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return fn(y_true, y_pred)

    return FormulaLoss()


def contrastive_ref(y, d):
    y = ops.reshape(ops.cast(y, d.dtype), ops.shape(d))
    return y * d ** 2 + (1 - y) * ops.relu(1.0 - d) ** 2


def triplet_ref(y, e):  # batch-hard triplet on normalised embeddings, written directly
    e = e / ops.sqrt(ops.sum(e * e, axis=-1, keepdims=True) + 1e-12)
    d = ops.sqrt(ops.maximum(2.0 - 2.0 * ops.matmul(e, ops.transpose(e)), 1e-12))
    same = ops.cast(ops.equal(y[:, None], y[None, :]), e.dtype)
    pos = ops.max(d * (same - ops.eye(ops.shape(y)[0])), axis=1)
    neg = ops.min(d + 10.0 * same, axis=1)
    return ops.relu(pos - neg + 0.2)


def quantile_ref(y, p):
    e = y - p
    return ops.maximum(0.5 * e, -0.5 * e)


def asymmetric_ref(y, z):  # the asymmetric loss as its paper writes it (gamma_neg 4, gamma_pos 0, clip 0.05)
    p = ops.sigmoid(z)
    p_m = ops.maximum(p - 0.05, 0.0)
    pos = y * ops.log(ops.maximum(p, 1e-8))
    neg = (1 - y) * p_m ** 4 * ops.log(ops.maximum(1 - p_m, 1e-8))
    return ops.mean(-(pos + neg), axis=-1)


def cce_on(transform):
    """Keras's categorical cross-entropy on transformed logits: the direct way to write LA, LDAM, poly-1."""
    return lambda y, z: ops.categorical_crossentropy(y, transform(y, z), from_logits=True)


def cases(batch, classes):
    """(family, params, task, reference name, reference loss, y, y_pred) for one batch size / class count."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(batch, classes)).astype("float32")
    ids = rng.integers(0, classes, batch).astype("float32")
    one_hot = np.eye(classes, dtype="float32")[ids.astype(int)]
    blog = rng.normal(size=(batch, 1)).astype("float32")
    by = rng.integers(0, 2, (batch, 1)).astype("float32")
    mly = (rng.random((batch, classes)) < 0.2).astype("float32")
    reg = rng.normal(size=(batch, 1)).astype("float32")
    counts = list(rng.integers(1, 100, classes).astype(float))
    K = keras.losses
    cce = K.CategoricalCrossentropy(from_logits=True)
    bce = K.BinaryCrossentropy(from_logits=True)
    return [
        ("crossentropy", {}, "multiclass", "CategoricalCrossentropy", cce, one_hot, logits, None),
        ("crossentropy", {}, "multiclass", "SparseCategoricalCrossentropy (sparse labels)",
         K.SparseCategoricalCrossentropy(from_logits=True), ids, logits, None),
        ("focal", {"gamma": 2.0, "alpha": 0.25}, "multiclass", "CategoricalFocalCrossentropy",
         K.CategoricalFocalCrossentropy(gamma=2.0, alpha=0.25, from_logits=True), one_hot, logits, None),
        ("focal", {"gamma": 2.0, "alpha": 0.25}, "binary", "BinaryFocalCrossentropy",
         K.BinaryFocalCrossentropy(gamma=2.0, alpha=0.25, apply_class_balancing=True, from_logits=True), by, blog, None),
        ("poly1", {"epsilon": 1.0}, "multiclass", "CCE + keras.ops formula", plain(
            lambda y, z: ops.categorical_crossentropy(y, z, from_logits=True)
            + 1.0 * (1 - ops.sum(y * ops.softmax(z), axis=-1))), one_hot, logits, None),
        ("logit_adjusted", {"tau": 1.0}, "multiclass", "CCE on z + tau log prior",
         plain(cce_on(lambda y, z: z + np.log(np.array(counts) / sum(counts)).astype("float32"))), one_hot, logits,
         counts),
        ("ldam", {}, "multiclass", "CCE on s (z - m)",
         plain(cce_on(lambda y, z: 30.0 * (z - y * 0.5))), one_hot, logits, counts),
        ("class_balanced", {}, "multiclass", "CategoricalCrossentropy", cce, one_hot, logits, counts),
        ("hinge", {}, "multiclass", "CategoricalHinge", K.CategoricalHinge(), one_hot, logits, None),
        ("weighted_bce", {"pos_weight": 3.0}, "binary", "BinaryCrossentropy", bce, by, blog, None),
        ("asymmetric", {}, "multilabel", "keras.ops formula", plain(asymmetric_ref), mly, logits, None),
        ("contrastive", {}, "pairs", "keras.ops formula", plain(contrastive_ref), by[:, 0], np.abs(blog), None),
        ("triplet", {}, "embedding", "keras.ops formula", plain(triplet_ref), ids % 10, logits[:, :16], None),
        ("mse", {}, "regression", "MeanSquaredError", K.MeanSquaredError(), reg, reg * 0.5, None),
        ("huber", {"delta": 1.0}, "regression", "Huber", K.Huber(), reg, reg * 0.5, None),
        ("log_cosh", {}, "regression", "LogCosh", K.LogCosh(), reg, reg * 0.5, None),
        ("msle", {}, "regression", "MeanSquaredLogarithmicError", K.MeanSquaredLogarithmicError(), reg, reg * 0.5, None),
        ("quantile", {"quantile": 0.5}, "regression", "keras.ops formula", plain(quantile_ref), reg, reg * 0.5, None),
    ]


def step_fn(loss, compiled):
    def step(y, p):
        with tf.GradientTape() as tape:
            tape.watch(p)
            value = loss(y, p)
        return value, tape.gradient(value, p)

    return tf.function(step, jit_compile=True) if compiled else step


def calls_per_sample(fn, y, p, target=0.002):
    """How many calls make one timing sample of about `target` seconds (at least 1)."""
    start = time.perf_counter()
    fn(y, p)[1].numpy()
    return max(1, int(target / max(time.perf_counter() - start, 1e-6)))


def time_pair(fn_a, fn_b, y, p, samples):
    """Median seconds per call of two step functions, timed alternately (A B A B ...) after a warm-up."""
    y, p = tf.constant(y), tf.constant(p)
    for fn in (fn_a, fn_b):
        for _ in range(3):
            fn(y, p)[1].numpy()  # trace / compile, warm caches
    inner = min(calls_per_sample(fn_a, y, p), calls_per_sample(fn_b, y, p))
    times = ([], [])
    for _ in range(samples):
        for fn, out in ((fn_a, times[0]), (fn_b, times[1])):
            start = time.perf_counter()
            for _ in range(inner):
                value, grad = fn(y, p)
            grad.numpy()
            out.append((time.perf_counter() - start) / inner)
    return float(np.median(times[0])), float(np.median(times[1]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--samples", type=int, default=25)
    args = parser.parse_args()
    settings = [(256, 10)] if args.quick else [(256, 10), (4096, 10), (256, 1000), (4096, 1000)]
    samples = 5 if args.quick else args.samples
    print(_common.machine())
    print(f"forward + gradient w.r.t. y_pred per batch; median of {samples} samples per side, sides alternating, "
          f"after a warm-up; eager, and compiled (tf.function(jit_compile=True)). Logits in, from_logits=True.")
    rows, worst = [], []
    for batch, classes in settings:
        for family, params, task, ref_name, ref, y, pred, counts in cases(batch, classes):
            if classes == 1000 and task not in ("multiclass", "multilabel"):
                continue
            ours = families.get(family).build(params, task=task, from_logits=True, class_counts=counts)
            row = [f"{family} ({task})", ref_name, f"{batch}x{pred.shape[-1]}"]
            for compiled in (False, True):
                t_ours, t_ref = time_pair(step_fn(ours, compiled), step_fn(ref, compiled), y, pred, samples)
                row += [f"{t_ours * 1e3:.3f}", f"{t_ref * 1e3:.3f}", f"{t_ours / t_ref:.2f}"]
                worst.append((t_ours / t_ref, f"{family} ({task}) {batch}x{pred.shape[-1]} "
                                              f"{'compiled' if compiled else 'eager'} vs {ref_name}"))
            rows.append(row)
            print(".", end="", flush=True)
    print()
    print(_common.table(rows, ("loss", "reference", "batch", "eager ms", "ref ms", "ratio",
                               "xla ms", "ref ms", "ratio")))
    over = sorted((w for w in worst if w[0] > 1.1), reverse=True)
    print(f"\n{len(worst) - len(over)}/{len(worst)} comparisons within 1.1x of the reference (target: all).")
    for ratio, what in over:
        print(f"  over: {ratio:.2f}x  {what}")


if __name__ == "__main__":
    main()
