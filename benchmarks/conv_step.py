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
3. With --profile, first: where one training step of that net spends its time, op by op (tf.profiler's trace
   of the population's traced step, `TFEngine._train`, and of one member's `train_step` alone; op times summed
   over TensorFlow's threads), by part of the model: the population against K times the member alone. A part
   whose population time is well above K x alone is work the population adds (the grouped convolution's
   transposes, say); one near K x alone is arithmetic each solo trial does too, which no mapping removes.

    python benchmarks/conv_step.py            # K = 8
    python benchmarks/conv_step.py --quick    # K = 2, fewer repetitions
    python benchmarks/conv_step.py --profile  # the op profile too (K = 8; with --quick, K = 2)
"""

import argparse
import collections
import glob
import os
import re
import tempfile
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


# The parts of the step a profile reports, by the first pattern an op's node name (scope/name:OpType) matches.
PARTS = [("convolution kernels", r"conv2d[^/]*/.*:\w*Conv2D"),
         ("convolution glue (transposes, bias, ReLU)", r"conv2d"),
         ("BatchNormalization", r"batch_normalization"),
         ("pooling", r"pooling"),
         ("Dense, loss, metrics", r"dense|compile_loss|loss|metric|mean"),
         ("rest (gradient sums, optimizer, masks)", r"")]


def op_times(call, runs):
    """{node name:OpType: ps per call} of `call()` (run `runs` times) from a tf.profiler trace of the host's
    TensorFlow threads, or None where the trace cannot be read."""
    import tensorflow as tf

    try:
        # TensorFlow private (2.x): the trace is an XSpace protobuf; each TensorFlow op is an event named
        # "node:OpType" on a "tf_Compute" line of the host plane.
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(runs):
                call()
        finally:
            tf.profiler.experimental.stop()
        paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        if not paths:
            return None
        space = xplane_pb2.XSpace()
        with open(paths[0], "rb") as f:
            space.ParseFromString(f.read())
    out = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and not name.startswith("ExecutorState"):
                    out[name] += event.duration_ps / runs
    return out


def by_part(times):
    parts = collections.Counter()
    for name, ps in times.items():
        part = next(label for label, pattern in PARTS if re.search(pattern, name, re.IGNORECASE))
        parts[part] += ps / 1e9  # ms
    return parts


def step_profile(k, runs):
    """The population's traced training step and one member's, timed and profiled op by op."""
    import tensorflow as tf

    from losstune.population.engine_tf import TFEngine

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(BATCH, SIDE, SIDE, 1)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, BATCH))
    engine = TFEngine([Member(conv_net(True, True)) for _ in range(k)], (x, y, None))
    code = tf.constant(0, tf.int64)
    alone = conv_net(True, True)
    alone.fit(x, y, epochs=1, verbose=0)  # builds the optimizer and metrics
    solo_step = tf.function(lambda x, y: alone.train_step((x, y)))
    calls = {"population": lambda: engine._train(x, y, None, code).numpy(),
             "alone": lambda: keras.tree.map_structure(lambda t: t.numpy(), solo_step(x, y))}
    wall = {}
    for name, call in calls.items():
        call()  # trace and warm up
    for name, call in calls.items():
        start = time.perf_counter()
        for _ in range(runs):
            call()
        wall[name] = (time.perf_counter() - start) / runs * 1000
    return wall, {name: op_times(call, runs) for name, call in calls.items()}


def print_profile(k, runs):
    wall, times = step_profile(k, runs)
    print(f"\none training step of the conv net, K = {k}, batch {BATCH}: op times (tf.profiler, summed over "
          f"threads, ms per step); ratio: population / {k} x alone, below 1 where the population does the part for less")
    if times["population"] is None or times["alone"] is None:
        print("  (no op trace: this TensorFlow's profiler trace could not be read)")
        return
    together, alone = by_part(times["population"]), by_part(times["alone"])
    rows = [(label, f"{together[label]:.1f}", f"{k * alone[label]:.1f}",
             f"{together[label] / (k * alone[label]):.2f}" if alone[label] else "-") for label, _ in PARTS]
    total, solo = sum(together.values()), sum(alone.values())
    rows.append(("all ops", f"{total:.1f}", f"{k * solo:.1f}", f"{total / (k * solo):.2f}"))
    rows.append(("wall time of the step", f"{wall['population']:.1f}", f"{k * wall['alone']:.1f}",
                 f"{wall['population'] / (k * wall['alone']):.2f}"))
    print(_common.table(rows, ("part", "population", f"{k} x alone", "ratio")))
    kinds = collections.Counter()
    for name, ps in times["population"].items():
        kinds[name.rsplit(":", 1)[1]] += ps / 1e9
    print("  the population's costliest op types (ms per step, share of its op time): " + ", ".join(
        f"{kind} {ms:.1f} ({ms / total:.0%})" for kind, ms in kinds.most_common(8)), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--profile", action="store_true", help="first, the op profile of one training step")
    args = parser.parse_args()
    k, n, epochs = (2, 3, 1) if args.quick else (args.members, 30, 3)
    print(_common.machine(), flush=True)
    if args.profile:
        print_profile(k, n)
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
