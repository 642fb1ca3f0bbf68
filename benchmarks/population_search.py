"""Population search: trials per minute of a whole search at population K, against plain KerasTuner.

The same random-search trials (the loss family and its parameter from `overhead.py`'s space, baseline first)
run as: plain KerasTuner RandomSearch with Keras's built-in losses and a TensorBoard callback (what a user
writes by hand, `overhead.py`'s hand-written side), and `losstune.search` at population 1, 8 and 32 (MLP) or
1 and 16 (Conv2D + BatchNormalization + Dropout). Everything a search does is included: validation every
epoch, TensorBoard runs with HParams sessions and loss pictures, best-epoch checkpoints, trial files, the
report. Each search runs in a fresh Python process, as a user's does (imports and data loading are not timed;
TensorFlow's first-use costs are, on every side): in one long-lived process KerasTuner's full garbage
collection before every build walks a heap that grows with each search run before it, which slowed its side
from 95 s to 157 s within one run of this script. Runs alternate (A B C ..., then B C ... A) so the machine's
drift falls on every side alike; the trial sequence is checked to be the same on every side. Racing is off (it
trains extra repeats a plain search does not have).

    python benchmarks/population_search.py            # about 15-25 minutes on 2 cores
    python benchmarks/population_search.py --quick
"""

import argparse
import io
import json
import shutil
import subprocess
import sys
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


def one_search(case, side, trials, epochs):
    """One search in this (fresh) process: (wall seconds, the trial sequence)."""
    _, builder, data = CASES[case]
    data = data()
    directory = tempfile.mkdtemp()
    start = time.perf_counter()
    if side == "plain":
        sequence = run_plain(builder, data, trials, epochs, directory)
    else:
        sequence = run_losstune(builder, data, trials, epochs, directory, int(side))
    wall = time.perf_counter() - start
    shutil.rmtree(directory, ignore_errors=True)
    return wall, sequence


def measure(case, trials, epochs, sizes, repeats):
    name = CASES[case][0]
    sides = {"plain": "KerasTuner RandomSearch + TensorBoard"}
    sides.update({str(k): f"losstune.search population={k}" for k in sizes})
    keys, walls, sequences = list(sides), {k: [] for k in sides}, {}
    for repeat in range(repeats):
        for key in keys[repeat % len(keys):] + keys[:repeat % len(keys)]:
            proc = subprocess.run([sys.executable, __file__, "--one", case, key, str(trials), str(epochs)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"{name}: {sides[key]} failed:\n{proc.stderr[-3000:]}")
            found = json.loads(proc.stdout.strip().splitlines()[-1])
            walls[key].append(found["wall"])
            sequences[key] = found["sequence"]
            print(f"  {name}: {sides[key]}: {found['wall']:.1f} s", flush=True)
    same = len({json.dumps(s) for s in sequences.values()}) == 1
    base = trials / np.median(walls["plain"]) * 60
    rows = [(name, sides[k], f"{np.median(w):.1f}", " ".join(f"{v:.1f}" for v in w),
             f"{trials / np.median(w) * 60:.1f}", f"{trials / np.median(w) * 60 / base:.2f}x")
            for k, w in walls.items()]
    return rows, same


def _digits():
    digits = load_digits()
    x, y = (digits.data / 16).astype("float32"), digits.target
    return ((x[:1400], y[:1400]), (x[1400:], y[1400:]))


def _images():
    (x, y), (xv, yv) = _digits()
    return ((x.reshape(-1, 8, 8, 1), y), (xv.reshape(-1, 8, 8, 1), yv))


CASES = {"mlp": ("MLP", mlp, _digits), "conv": ("Conv2D+BN+Dropout", conv, _images)}  # name, builder, data


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 trials x 1 epoch, population 1 and 4")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--models", default="mlp,conv", help="which cases to run: mlp, conv (default: both)")
    parser.add_argument("--one", nargs=4, metavar=("CASE", "SIDE", "TRIALS", "EPOCHS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child process: one search, its time and trial sequence as one JSON line
        case, side, trials, epochs = args.one
        wall, sequence = one_search(case, side, int(trials), int(epochs))
        print(json.dumps({"wall": wall, "sequence": sequence}))
        return
    print(_common.machine())
    if args.quick:
        cases = [("mlp", 4, 1, (1, 4))]
    else:
        cases = [("mlp", 32, 5, (1, 8, 32)), ("conv", 16, 5, (1, 16))]
        cases = [c for c in cases if c[0] in args.models.split(",")]
    rows, all_same = [], True
    for case, trials, epochs, sizes in cases:
        print(f"{CASES[case][0]}: {trials} trials x {epochs} epochs, 1,400 training / 397 validation digits, "
              f"batch 32, each search in a fresh process, {args.repeats} repeat(s)", flush=True)
        found, same = measure(case, trials, epochs, sizes, args.repeats)
        rows += found
        all_same &= same
    print()
    print(_common.table(rows, ("model", "search", "wall s (median)", "each run", "trials / minute",
                               "vs KerasTuner")))
    print(f"\nsame trial sequence on every side: {'yes' if all_same else 'NO'}")


if __name__ == "__main__":
    main()
