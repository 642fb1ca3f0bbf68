"""Population training vs serial fits: trials per minute of K members trained together (one vectorized
step over stacked weights, losstune.population) against the same K members trained one after the other
with `model.fit`, side by side in one run.

Both sides do the whole work of a trial except the tuner: seed, build the model, compile it with the
member's loss (mixed families: cross-entropy with label smoothing, focal, cross-entropy with class weights),
train with validation after every epoch, the member's own macro-F1 metric. Runs alternate serial /
population so that load from other processes hits both; the figure is the median over repeats. The script
also checks that the population's members end with the serial runs' weights and scores.

    python benchmarks/population.py           # MLP at K = 1, 8, 32; Conv2D at K = 8, 16; 3 repeats
    python benchmarks/population.py --quick   # MLP at K = 1, 4; Conv2D at K = 4; 1 repeat, 2 epochs
"""

import argparse
import statistics
import time

import _common
import keras
import numpy as np
from sklearn.datasets import load_digits

from losstune import families, objectives
from losstune.population import Member, train_population, vectorizable

SEED = 0


def mlp():
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def conv():
    # A strided convolution rather than max-pooling: a max-pool routes its gradient to the largest input,
    # and a one-ulp difference between the batched and the single matmul can flip that choice, after which
    # the two sides drift apart by ~1e-3 (both are right; the agreement column would no longer show it).
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(10, activation="softmax"),
    ])


def member_losses(k, counts):
    """K losses of mixed families and hyperparameters, the same for both sides."""
    rng = np.random.default_rng(k)
    inverse = counts.mean() / np.maximum(counts, 1)
    out = []
    for i in range(k):
        kind = i % 3
        if kind == 0:
            out.append(families.get("crossentropy").build({"label_smoothing": float(rng.uniform(0, 0.2))},
                                                          task="multiclass"))
        elif kind == 1:
            out.append(families.get("focal").build({"gamma": float(rng.uniform(0, 5))}, task="multiclass"))
        else:
            out.append(families.get("crossentropy").build({}, task="multiclass",
                                                          class_weights=list(inverse ** rng.uniform(0, 1))))
    return out


def compiled(builder, loss, optimizer="adam"):
    keras.utils.set_random_seed(SEED)
    model = builder()
    model.compile(optimizer=keras.optimizers.get(optimizer), loss=loss, metrics=[objectives.MacroF1()])
    return model


def serial(builder, losses, data, epochs, optimizer="adam"):
    x, y, xv, yv = data
    out = []
    for loss in losses:
        model = compiled(builder, loss, optimizer)
        keras.utils.set_random_seed(SEED)
        history = model.fit(x, y, batch_size=32, epochs=epochs, shuffle=True, validation_data=(xv, yv), verbose=0)
        out.append((model, history.history))
    return out


def population(builder, losses, data, epochs, optimizer="adam"):
    x, y, xv, yv = data
    members = [Member(compiled(builder, loss, optimizer)) for loss in losses]
    return train_population(members, x, y, validation_data=(xv, yv), epochs=epochs, batch_size=32, seed=SEED)


def agreement(serial_runs, members):
    """Largest weight difference and largest |val_macro_f1| difference between the two sides."""
    dw = df = 0.0
    for (model, history), member in zip(serial_runs, members):
        for a, b in zip(model.get_weights(), member.model.get_weights()):
            dw = max(dw, float(np.max(np.abs(a - b))))
        df = max(df, abs(history["val_macro_f1"][-1] - member.history["val_macro_f1"][-1]))
    return dw, df


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small K, 2 epochs, one repeat (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    epochs = 2 if args.quick else 5
    repeats = args.repeats or (1 if args.quick else 3)
    plan = [("MLP", mlp, (1, 4)), ("Conv2D", conv, (4,))] if args.quick else \
        [("MLP", mlp, (1, 8, 32)), ("Conv2D", conv, (8, 16))]

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target
    split = 1400
    counts = np.bincount(y[:split], minlength=10).astype("float64")
    print(_common.machine())
    print(f"digits: {split} training / {len(y) - split} validation samples, {epochs} epochs, batch 32, Adam, "
          f"validation every epoch, {repeats} repeat(s), runs alternating serial / population")
    rows = []
    for name, builder, sizes in plan:
        shape = (-1, 8, 8, 1) if name == "Conv2D" else (-1, 64)
        data = (x[:split].reshape(shape), y[:split], x[split:].reshape(shape), y[split:])
        reason = vectorizable(compiled(builder, "sparse_categorical_crossentropy"))
        if reason:
            print(f"{name}: not vectorizable: {reason}")
            continue
        for k in sizes:
            losses = member_losses(k, counts)
            times = {"serial": [], "population": []}
            for r in range(repeats):
                order = ("serial", "population") if r % 2 == 0 else ("population", "serial")
                for side in order:
                    start = time.perf_counter()
                    if side == "serial":
                        serial_runs = serial(builder, losses, data, epochs)
                    else:
                        members = population(builder, losses, data, epochs)
                    times[side].append(time.perf_counter() - start)
            dw, df = agreement(serial_runs, members)
            s, p = statistics.median(times["serial"]), statistics.median(times["population"])
            rows.append([name, k, f"{s:.2f}", f"{p:.2f}", f"{60 * k / s:.1f}", f"{60 * k / p:.1f}", f"{s / p:.1f}x",
                         f"{dw:.1e}", f"{df:.1e}"])
            print(f"  {name} K={k}: serial {s:.2f}s, population {p:.2f}s", flush=True)
    print(_common.table(rows, ["model", "K", "serial s", "population s", "serial trials/min",
                               "population trials/min", "speed-up", "max |dw|", "max |d val_f1|"]))
    print("serial s / population s: median wall time for all K trials (build, compile, train, validate).")
    print("max |dw|, max |d val_f1|: largest difference between a member and its serial twin after the last "
          "epoch. They differ by float rounding (a batched matmul rounds differently from a single one); "
          "training can amplify it (in the Conv2D model a 1-ulp change of one initial weight moves a serial "
          "run by ~1e-3 in 2 epochs). tests/test_population.py holds 2-epoch runs to 1e-5.")


if __name__ == "__main__":
    main()
