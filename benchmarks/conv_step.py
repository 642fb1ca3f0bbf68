"""Where a conv net's population step spends its time: why the conv case gains little on CPU (issue 20).

Two measurements, side by side in one process (TensorFlow backend):

1. One convolution layer, forward and backward, for K = 8 members three ways: one grouped convolution of the
   members' inputs laid side by side in the channels (how `population/converters.py` maps a Conv2D with
   per-member filters), a loop of K convolutions in one `tf.function`, and K calls of one member's
   convolution (what K serial trials run). Also the first layer, whose input all members share: one
   convolution with K x F filters against K calls. If the grouped form were much slower than the loop, a
   better mapping would pay; if both cost about what K solo calls cost, the layer is compute-bound and a
   population can only remove per-call overhead.
2. Whole training epochs of the tf.data case's conv net (Conv2D 16 -> BatchNormalization -> MaxPooling ->
   Conv2D 32 -> GlobalAveragePooling -> Dense; 32 x 32 x 1 inputs, batch 32, 704 random examples): one member
   trained alone with `fit` (K times its epoch is the serial cost) against a population of K via
   `train_population`, with and without the BatchNormalization and the pooling.

    python benchmarks/conv_step.py            # K = 8
    python benchmarks/conv_step.py --quick    # K = 2, fewer repetitions
"""

import argparse
import time

import _common
import keras
import numpy as np

from losstune.population import Member, train_population

BATCH, SIDE, EXAMPLES = 32, 32, 704


def per_call_ms(fn, *args, n=30):
    fn(*args)  # trace and warm up
    start = time.perf_counter()
    for _ in range(n):
        out = fn(*args)
    for t in out:
        t.numpy()
    return (time.perf_counter() - start) / n * 1000


def layer_times(k, n):
    import tensorflow as tf

    def step(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            loss = tf.reduce_sum(tf.nn.conv2d(x, w, 1, "SAME") ** 2)
        return tape.gradient(loss, [x, w])

    def loop(xs, ws):
        with tf.GradientTape() as tape:
            tape.watch(xs + ws)
            loss = tf.add_n([tf.reduce_sum(tf.nn.conv2d(x, w, 1, "SAME") ** 2) for x, w in zip(xs, ws)])
        return tape.gradient(loss, xs + ws)

    grouped, looped, solo = tf.function(step), tf.function(loop), tf.function(step)
    normal = tf.random.normal
    # the second conv layer (16 -> 32 channels at 16 x 16): per-member inputs
    xs = [normal((BATCH, 16, 16, 16)) for _ in range(k)]
    ws = [normal((3, 3, 16, 32)) for _ in range(k)]
    side_by_side = tf.concat(xs, -1)  # (B, H, W, K*16): K groups
    wide = tf.concat(ws, -1)  # (3, 3, 16, K*32)
    second = (per_call_ms(grouped, side_by_side, wide, n=n), per_call_ms(looped, xs, ws, n=n),
              k * per_call_ms(solo, xs[0], ws[0], n=n))
    # the first conv layer (1 -> 16 channels at 32 x 32): the members share its input
    x = normal((BATCH, SIDE, SIDE, 1))
    first = (per_call_ms(grouped, x, normal((3, 3, 1, k * 16)), n=n), k * per_call_ms(solo, x, normal((3, 3, 1, 16)), n=n))
    return second, first


def conv_net(batchnorm, pooling):
    layers = [keras.Input((SIDE, SIDE, 1)), keras.layers.Conv2D(16, 3, padding="same", activation="relu")]
    layers += [keras.layers.BatchNormalization()] if batchnorm else []
    layers += [keras.layers.MaxPooling2D()] if pooling else []
    layers += [keras.layers.Conv2D(32, 3, padding="same", activation="relu"), keras.layers.GlobalAveragePooling2D(),
               keras.layers.Dense(10, activation="softmax")]
    model = keras.Sequential(layers)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def epoch_times(k, batchnorm, pooling, epochs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(EXAMPLES, SIDE, SIDE, 1)).astype("float32")
    y = rng.integers(0, 10, EXAMPLES)
    alone = conv_net(batchnorm, pooling)
    alone.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()
    alone.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0)
    solo = (time.perf_counter() - start) / epochs

    def population(n_epochs):
        members = [Member(conv_net(batchnorm, pooling)) for _ in range(k)]
        start = time.perf_counter()
        train_population(members, x, y, epochs=n_epochs, batch_size=BATCH, seed=0)
        return time.perf_counter() - start

    # the difference of two runs is the epochs' own time, without the population's build and trace
    together = (population(1 + epochs) - population(1)) / epochs
    return solo, together


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--members", type=int, default=8)
    args = parser.parse_args()
    k, n, epochs = (2, 3, 1) if args.quick else (args.members, 30, 3)
    print(_common.machine(), flush=True)
    (grouped, looped, solo), (wide, solo_first) = layer_times(k, n)
    print(f"\none conv layer, forward + backward, K = {k}, batch {BATCH} (ms per step)")
    print(f"  second layer (16 -> 32 at 16x16, per-member inputs): grouped {grouped:.1f}, loop of {k} {looped:.1f}, "
          f"{k} solo calls {solo:.1f} (grouped: {solo / grouped:.2f}x the solo calls)")
    print(f"  first layer (1 -> 16 at 32x32, shared input): one conv with {k} x 16 filters {wide:.1f}, {k} solo "
          f"calls {solo_first:.1f} ({solo_first / wide:.2f}x)")
    print(f"\nthe tf.data case's conv net, one epoch of {EXAMPLES} examples (s): {k} x alone against a population of "
          f"{k}")
    for batchnorm, pooling, label in ((True, True, "as in the case"), (False, True, "without BatchNormalization"),
                                      (True, False, "without MaxPooling")):
        solo_epoch, together = epoch_times(k, batchnorm, pooling, epochs)
        print(f"  {label:<28} alone {solo_epoch:.3f} (x{k} = {k * solo_epoch:.3f}), population {together:.3f}: "
              f"{k * solo_epoch / together:.2f}x", flush=True)


if __name__ == "__main__":
    main()
