"""Population search: trials per minute of a whole search at population K, against plain KerasTuner.

The same random-search trials (the loss family and its parameter from `overhead.py`'s space, baseline first)
run as: plain KerasTuner RandomSearch with Keras's built-in losses and a TensorBoard callback (what a user
writes by hand, `overhead.py`'s hand-written side), and `losstune.search` at population 1, 8 and 32 (MLP) or
1 and 16 (Conv2D + BatchNormalization + Dropout). Everything a search does is included: validation every
epoch, TensorBoard runs with HParams sessions and loss pictures, best-epoch checkpoints, trial files. Runs
alternate (A B C ..., then B C ... A) so the machine's drift falls on every side alike; the trial sequence is
checked to be the same on every side. Racing is off (it trains extra repeats a plain search does not have).

    python benchmarks/population_search.py            # about 10-20 minutes on 2 cores
    python benchmarks/population_search.py --quick
"""

import argparse
import io
import shutil
import tempfile
import time

import _common
import keras
import keras_tuner
import numpy as np
from overhead import SEED, SPACE, PlainHyperModel, config_of, defaults_first
from sklearn.datasets import load_digits

import losstune


def mlp(hp=None):
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def conv(hp=None):
    return keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.BatchNormalization(), keras.layers.MaxPooling2D(), keras.layers.Dropout(0.2),
        keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax"),
    ])


def run_plain(builder, data, trials, epochs, directory):
    (x, y), (xv, yv) = data
    tuner = keras_tuner.RandomSearch(PlainHyperModel(builder),
                                     objective=keras_tuner.Objective("val_macro_f1", "max"),
                                     max_trials=trials, directory=directory, project_name="plain", seed=SEED + 1)
    defaults_first(tuner.oracle)
    eye = np.eye(10, dtype="float32")
    tuner.search(x, eye[y], validation_data=(xv, eye[yv]), epochs=epochs, batch_size=32, verbose=0, shuffle=True,
                 callbacks=[keras.callbacks.TensorBoard(f"{directory}/logs", write_graph=False, profile_batch=0)])
    return [config_of(t.hyperparameters.values) for _, t in sorted(tuner.oracle.trials.items())]


def run_losstune(builder, data, trials, epochs, directory, population):
    (x, y), (xv, yv) = data
    result = losstune.search(builder, x, y, validation_data=(xv, yv), space=losstune.LossSpace(SPACE, "multiclass"),
                             tuner="random", max_trials=trials, epochs=epochs, seed=SEED, race=0,
                             population=population, directory=directory, stream=io.StringIO())
    assert all(t.status == "COMPLETED" for t in result.trials), [t.message for t in result.trials]
    return [(t.family, round(float(next(iter(t.params.values()))), 6)) for t in result.trials]


def measure(name, builder, data, trials, epochs, sizes, repeats):
    sides = {"KerasTuner RandomSearch + TensorBoard": lambda d: run_plain(builder, data, trials, epochs, d)}
    for k in sizes:
        sides[f"losstune.search population={k}"] = lambda d, k=k: run_losstune(builder, data, trials, epochs, d, k)
    names, walls, sequences = list(sides), {n: [] for n in sides}, {}
    run_plain(builder, data, 1, 1, tempfile.mkdtemp())  # warm-up: TensorFlow's first traces, imports
    for repeat in range(repeats):
        for n in names[repeat % len(names):] + names[:repeat % len(names)]:
            directory = tempfile.mkdtemp()
            start = time.perf_counter()
            sequences[n] = sides[n](directory)
            walls[n].append(time.perf_counter() - start)
            shutil.rmtree(directory, ignore_errors=True)
            print(f"  {name}: {n}: {walls[n][-1]:.1f} s", flush=True)
    same = len({tuple(s) for s in sequences.values()}) == 1
    base = trials / np.median(walls[names[0]]) * 60
    rows = [(name, n, f"{np.median(w):.1f}", f"{trials / np.median(w) * 60:.1f}",
             f"{trials / np.median(w) * 60 / base:.2f}x") for n, w in walls.items()]
    return rows, same


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 trials x 1 epoch, population 1 and 4")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--models", default="mlp,conv", help="which cases to run: mlp, conv (default: both)")
    args = parser.parse_args()
    digits = load_digits()
    x, y = (digits.data / 16).astype("float32"), digits.target
    flat = ((x[:1400], y[:1400]), (x[1400:], y[1400:]))
    images = ((flat[0][0].reshape(-1, 8, 8, 1), flat[0][1]), (flat[1][0].reshape(-1, 8, 8, 1), flat[1][1]))
    print(_common.machine())
    if args.quick:
        cases = [("MLP", mlp, flat, 4, 1, (1, 4))]
    else:
        cases = [("MLP", mlp, flat, 32, 5, (1, 8, 32)), ("Conv2D+BN+Dropout", conv, images, 16, 5, (1, 16))]
        wanted = {"mlp": "MLP", "conv": "Conv2D+BN+Dropout"}
        cases = [c for c in cases if c[0] in {wanted[m] for m in args.models.split(",")}]
    rows, all_same = [], True
    for name, builder, data, trials, epochs, sizes in cases:
        print(f"{name}: {trials} trials x {epochs} epochs, 1,400 training / 397 validation digits, batch 32",
              flush=True)
        found, same = measure(name, builder, data, trials, epochs, sizes, args.repeats)
        rows += found
        all_same &= same
    print()
    print(_common.table(rows, ("model", "search", "wall s (median)", "trials / minute", "vs KerasTuner")))
    print(f"\nsame trial sequence on every side: {'yes' if all_same else 'NO'}")


if __name__ == "__main__":
    main()
