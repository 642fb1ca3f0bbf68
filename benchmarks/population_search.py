"""Population search: trials per minute of a whole search at population K, against plain KerasTuner.

The same random-search trials (the loss family and its parameter from `overhead.py`'s space, baseline first)
run as: plain KerasTuner RandomSearch with Keras's built-in losses and a TensorBoard callback (what a user
writes by hand, `overhead.py`'s hand-written side), and `losstune.search` at population 1 and larger K.
Everything a search does is included: validation every epoch, TensorBoard runs with HParams sessions and loss
pictures, best-epoch checkpoints, trial files, the report. Each search runs in a fresh Python process, as a
user's does (imports and data loading are not timed; TensorFlow's first-use costs are, on every side): in one
long-lived process KerasTuner's full garbage collection before every build walks a heap that grows with each
search run before it, which slowed its side from 95 s to 157 s within one run of this script. Runs alternate
(A B C ..., then B C ... A) so the machine's drift falls on every side alike; the trial sequence is checked to
be the same on every side. Racing is off (it trains extra repeats a plain search does not have).

Cases (`--case`, comma-separated, or all; default: all, with `--quick`: mlp):
- mlp: digits MLP, 32 trials x 5 epochs, population 1, 8, 32 (arrays).
- conv: Conv2D + BatchNormalization + Dropout on 8x8 digits, 16 trials x 5 epochs, population 1, 16 (arrays).
- tfdata: training-dominated, "conv tf.data + augmentation": Conv2D 16 -> BatchNormalization -> MaxPooling ->
  Conv2D 32 -> GlobalAveragePooling -> Dense softmax on the digits resized to 32x32, fed by a tf.data pipeline
  (from_tensor_slices -> shuffle(seeded) -> batch 32 -> map(RandomTranslation + RandomContrast, training=True)
  -> prefetch), the same pipeline on every side (KerasTuner's gets one-hot labels, which its built-in losses
  need); 16 trials x 20 epochs, population 1, 8, 16. (No flips: digits are not mirror-symmetric.)
- sequence: training-dominated: 1-D signal classification (2,000 generated series of length 96, 6 classes of
  noisy sinusoids, square and sawtooth waves and pulses, seeded), a Conv1D stack, arrays; 16 trials x 20
  epochs, population 1, 8, 16. A recurrent layer (GRU) is checked with `losstune.population.vectorizable`
  first and the script says whether it would have fallen back to serial training (on TensorFlow it does:
  `tf.vectorized_map` cannot map the GRU; hence the Conv1D stack).

Each case also has two 5-fold rows over 8 trials (cross-validation over training + validation data, each trial
5 trainings; its trials per minute count trials, not trainings): `folds=5` at population 1 (fold by fold) and
at population 8 (the 8 trials of each fold train together), compared with each other. Where folds are refused
(a tf.data input: folds cut arrays), the row says so instead of a number; where a population falls back to
serial training (on any row), the row says so next to its number.

    python benchmarks/population_search.py                        # every case: about 1 hour a repeat on 2 cores
    python benchmarks/population_search.py --case tfdata,sequence # the training-dominated cases
    python benchmarks/population_search.py --quick                # smoke run of the MLP case (about 2 minutes)
    python benchmarks/population_search.py --quick --case all     # smoke run of every case
    python benchmarks/population_search.py --case sequence --sides folds1,folds8   # its 5-fold rows alone
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

FOLDS, FOLD_TRIALS, FOLD_POPULATION = 5, 8, 8


# ---------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------
def mlp(hp=None):
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def conv(hp=None):
    return keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.BatchNormalization(), keras.layers.MaxPooling2D(), keras.layers.Dropout(0.2),
        keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax"),
    ])


IMAGE = 32  # the digits' side after resizing (tfdata case)


def conv_gap(hp=None):
    return keras.Sequential([
        keras.Input((IMAGE, IMAGE, 1)), keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.BatchNormalization(), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])


LENGTH, SIGNAL_CLASSES = 96, 6


def conv1d(hp=None):
    return keras.Sequential([
        keras.Input((LENGTH, 1)), keras.layers.Conv1D(32, 7, padding="same", activation="relu"),
        keras.layers.MaxPooling1D(2), keras.layers.Conv1D(32, 5, padding="same", activation="relu"),
        keras.layers.MaxPooling1D(2), keras.layers.Conv1D(64, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(SIGNAL_CLASSES, activation="softmax"),
    ])


def gru(hp=None):
    return keras.Sequential([
        keras.Input((LENGTH, 1)), keras.layers.Conv1D(16, 5, strides=2, activation="relu"), keras.layers.GRU(32),
        keras.layers.Dense(SIGNAL_CLASSES, activation="softmax"),
    ])


# ---------------------------------------------------------------------------------------------------
# Data: each case's inputs, as each side's `search` takes them (built before the clock starts)
# ---------------------------------------------------------------------------------------------------
def _arrays(train, validation, classes):
    (x, y), (xv, yv) = train, validation
    eye = np.eye(classes, dtype="float32")
    return {"plain": dict(x=x, y=eye[y], validation_data=(xv, eye[yv]), batch_size=32, shuffle=True),
            "losstune": dict(x=x, y=y, validation_data=(xv, yv), batch_size=32),
            "folds": dict(x=np.concatenate([x, xv]), y=np.concatenate([y, yv]), batch_size=32)}


def _digit_arrays():
    digits = load_digits()
    x, y = (digits.data / 16).astype("float32"), digits.target
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def _digits():
    return _arrays(*_digit_arrays(), classes=10)


def _images():
    (x, y), (xv, yv) = _digit_arrays()
    return _arrays((x.reshape(-1, 8, 8, 1), y), (xv.reshape(-1, 8, 8, 1), yv), classes=10)


def _pipelines():
    """The digits resized to IMAGE x IMAGE, in tf.data pipelines: shuffled (seeded), batched, augmented per
    batch (training only), prefetched; integer labels for losstune, one-hot for KerasTuner's built-in losses."""
    import tensorflow as tf

    (x, y), (xv, yv) = _digit_arrays()
    x, xv = (tf.image.resize(a.reshape(-1, 8, 8, 1), (IMAGE, IMAGE)).numpy() for a in (x, xv))
    augment = keras.Sequential([keras.layers.RandomTranslation(0.1, 0.1, seed=SEED + 2),
                                keras.layers.RandomContrast(0.2, seed=SEED + 3)])

    def pipeline(features, labels, training):
        dataset = tf.data.Dataset.from_tensor_slices((features, labels))
        if training:
            dataset = dataset.shuffle(len(features), seed=SEED, reshuffle_each_iteration=True)
        dataset = dataset.batch(32)
        if training:
            dataset = dataset.map(lambda a, b: (augment(a, training=True), b))
        return dataset.prefetch(tf.data.AUTOTUNE)

    eye = np.eye(10, dtype="float32")
    return {"plain": dict(x=pipeline(x, eye[y], True), validation_data=pipeline(xv, eye[yv], False)),
            "losstune": dict(x=pipeline(x, y, True), validation_data=pipeline(xv, yv, False)),
            # folds cut arrays: given the pipeline, losstune says so
            "folds": dict(x=pipeline(x, y, True))}


def _signals(n=2000):
    """Noisy 1-D series of SIGNAL_CLASSES kinds (seeded): slow sine, fast sine, square wave, sawtooth, one
    Gaussian pulse, two pulses; random frequency, phase, amplitude and position, Gaussian noise."""
    rng = np.random.default_rng(SEED)
    t = np.arange(LENGTH) / LENGTH
    y = rng.integers(0, SIGNAL_CLASSES, n)
    x = np.empty((n, LENGTH), "float32")
    for i, kind in enumerate(y):
        freq, phase, amp = rng.uniform(2, 4), rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.5)
        wave = np.sin(2 * np.pi * freq * t + phase)
        if kind == 1:
            wave = np.sin(2 * np.pi * 2.5 * freq * t + phase)
        elif kind == 2:
            wave = np.sign(wave)
        elif kind == 3:
            wave = 2 * ((freq * t + phase / (2 * np.pi)) % 1.0) - 1
        elif kind >= 4:
            centers = rng.uniform(0.15, 0.85, kind - 3)
            wave = sum(np.exp(-0.5 * ((t - c) / 0.03) ** 2) for c in centers) * 2 - 0.5
        x[i] = amp * wave + rng.normal(0, 0.6, LENGTH)
    x = x[..., None]
    return _arrays((x[:1600], y[:1600]), (x[1600:], y[1600:]), classes=SIGNAL_CLASSES)


class Case:
    def __init__(self, name, builder, data, trials, epochs, sizes, about):
        self.name, self.builder, self.data = name, builder, data
        self.trials, self.epochs, self.sizes, self.about = trials, epochs, sizes, about


CASES = {
    "mlp": Case("MLP", mlp, _digits, 32, 5, (1, 8, 32), "1,400 training / 397 validation digits, arrays, batch 32"),
    "conv": Case("Conv2D+BN+Dropout", conv, _images, 16, 5, (1, 16),
                 "1,400 training / 397 validation 8x8 digits, arrays, batch 32"),
    "tfdata": Case("conv tf.data + augmentation", conv_gap, _pipelines, 16, 20, (1, 8, 16),
                   f"1,400 training / 397 validation digits resized to {IMAGE}x{IMAGE}, tf.data: shuffle -> batch 32 "
                   f"-> RandomTranslation + RandomContrast -> prefetch"),
    "sequence": Case("sequence (Conv1D)", conv1d, _signals, 16, 20, (1, 8, 16),
                     f"1,600 training / 400 validation generated series of length {LENGTH}, {SIGNAL_CLASSES} "
                     f"classes, arrays, batch 32"),
}


# ---------------------------------------------------------------------------------------------------
# One search (in a fresh process)
# ---------------------------------------------------------------------------------------------------
def run_plain(builder, fit, trials, epochs, directory):
    tuner = keras_tuner.RandomSearch(PlainHyperModel(builder),
                                     objective=keras_tuner.Objective("val_macro_f1", "max"),
                                     max_trials=trials, directory=directory, project_name="plain", seed=SEED + 1)
    defaults_first(tuner.oracle)
    tuner.search(**fit, epochs=epochs, verbose=0,
                 callbacks=[keras.callbacks.TensorBoard(f"{directory}/logs", write_graph=False, profile_batch=0)])
    return [config_of(t.hyperparameters.values) for _, t in sorted(tuner.oracle.trials.items())]


def run_losstune(builder, fit, trials, epochs, directory, population, folds=None):
    """The trial sequence, and the lines saying a population trained its trials one by one."""
    stream = io.StringIO()
    result = losstune.search(builder, **fit, space=losstune.LossSpace(SPACE, "multiclass"), tuner="random",
                             max_trials=trials, epochs=epochs, seed=SEED, race=0, folds=folds,
                             population=population, directory=directory, stream=stream)
    assert all(t.status == "COMPLETED" for t in result.trials), [t.message for t in result.trials]
    serial = [line for line in stream.getvalue().splitlines()
              if line.startswith("population:") and "one by one" in line]
    return [(t.family, round(float(next(iter(t.params.values()))), 6)) for t in result.trials], serial


def one_search(case, side, trials, epochs):
    """One search in this (fresh) process, as a dict: wall seconds, the trial sequence, the population's
    serial-fallback lines; or `refused` (the search's error before anything trained)."""
    case = CASES[case]
    data = case.data()
    directory = tempfile.mkdtemp()
    serial = []
    start = time.perf_counter()
    try:
        if side == "plain":
            sequence = run_plain(case.builder, data["plain"], trials, epochs, directory)
        elif side.startswith("folds"):
            sequence, serial = run_losstune(case.builder, data["folds"], trials, epochs, directory,
                                            int(side[len("folds"):]), folds=FOLDS)
        else:
            sequence, serial = run_losstune(case.builder, data["losstune"], trials, epochs, directory, int(side))
    except ValueError as err:
        if not side.startswith("folds"):
            raise
        return {"refused": str(err)}  # checked before anything trains (folds on a tf.data input)
    finally:
        wall = time.perf_counter() - start
        shutil.rmtree(directory, ignore_errors=True)
    return {"wall": wall, "sequence": sequence, "serial": serial}


# ---------------------------------------------------------------------------------------------------
# Measuring and reporting
# ---------------------------------------------------------------------------------------------------
def recurrent_check():
    """Whether a GRU model trains as a population (`losstune.population.vectorizable`): one line."""
    from losstune.population import vectorizable

    model = gru()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    reason = vectorizable(model)
    if reason is None:
        return "GRU: vectorizable (this case uses the Conv1D stack all the same)"
    return f"GRU: falls back to serial training ({reason}); this case uses the Conv1D stack"


def measure(key, trials, epochs, sizes, repeats, fold_trials, fold_population, only=None):
    """Run every side (or those in `only`) `repeats` times, alternating; return the Markdown table's rows and
    whether every side trained the same trials."""
    case = CASES[key]
    sides = {"plain": ("KerasTuner RandomSearch + TensorBoard", trials, epochs)}
    sides.update({str(k): (f"losstune.search population={k}", trials, epochs) for k in sizes})
    sides["folds1"] = (f"losstune.search folds={FOLDS}, {fold_trials} trials, population=1 (fold by fold)",
                       fold_trials, epochs)
    sides[f"folds{fold_population}"] = (f"losstune.search folds={FOLDS}, {fold_trials} trials, "
                                        f"population={fold_population}", fold_trials, epochs)
    keys = [k for k in sides if only is None or k in only]
    walls, sequences, notes = {k: [] for k in keys}, {}, {}
    for repeat in range(repeats):
        for side in keys[repeat % len(keys):] + keys[:repeat % len(keys)]:
            if side in notes and "refused" in notes[side]:
                continue  # refused once: refused again
            label, n, e = sides[side]
            proc = subprocess.run([sys.executable, __file__, "--one", key, side, str(n), str(e)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"{case.name}: {label} failed:\n{proc.stderr[-3000:]}")
            found = json.loads(proc.stdout.strip().splitlines()[-1])
            if "refused" in found:
                notes[side] = {"refused": found["refused"]}
                print(f"  {case.name}: {label}: refused: {found['refused']}", flush=True)
                continue
            walls[side].append(found["wall"])
            sequences[side] = found["sequence"]
            if found["serial"]:
                notes[side] = {"serial": found["serial"]}
            print(f"  {case.name}: {label}: {found['wall']:.1f} s"
                  + (f" ({'; '.join(found['serial'])})" if found["serial"] else ""), flush=True)
    # the same trials everywhere: the searches' sequences agree, the 5-fold ones with their first trials
    main = [json.dumps(s) for k, s in sequences.items() if not k.startswith("folds")]
    folded = [json.dumps(s) for k, s in sequences.items() if k.startswith("folds")]
    reference = sequences["plain"] if "plain" in sequences else json.loads((main or folded)[0])
    prefix = json.dumps(reference[:fold_trials])
    same = len(set(main)) <= 1 and all(f == prefix for f in folded)

    def per_minute(side):
        return sides[side][1] / np.median(walls[side]) * 60

    rows = []
    for side in keys:
        label = sides[side][0]
        note = notes.get(side, {})
        if "refused" in note:
            rows.append((label, f"refused: {note['refused']}", "", ""))
            continue
        if side.startswith("folds"):
            base = "folds1"
            ratio = ("" if side == base or not walls[base]
                     else f"{per_minute(side) / per_minute(base):.2f}x fold by fold")
        else:
            ratio = f"{per_minute(side) / per_minute('plain'):.2f}x" if walls.get("plain") else ""
        if "serial" in note:
            label += f" (serial: {'; '.join(sorted(set(note['serial'])))})"
        w = walls[side]
        rows.append((label, f"{np.median(w):.1f} ({', '.join(f'{v:.1f}' for v in w)})", f"{per_minute(side):.1f}",
                     ratio))
    return rows, same


def markdown(rows, header):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: 4 trials x 2 epochs at population 1 and 4, {FOLDS} folds of 2 trials at "
                             f"population 1 and 2; the MLP case unless --case names others")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--case", default=None,
                        help=f"which cases to run, comma-separated: {', '.join(CASES)}, or all (default: all; "
                             f"with --quick: mlp)")
    parser.add_argument("--sides", default=None,
                        help="only these sides, comma-separated: plain, the population sizes (e.g. 8), folds1, "
                             f"folds{FOLD_POPULATION} (default: every side)")
    parser.add_argument("--one", nargs=4, metavar=("CASE", "SIDE", "TRIALS", "EPOCHS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child process: one search, its time and trial sequence as one JSON line
        case, side, trials, epochs = args.one
        print(json.dumps(one_search(case, side, int(trials), int(epochs))))
        return
    if args.case is None:
        args.case = "mlp" if args.quick else "all"
    chosen = [c.strip() for c in args.case.split(",") if c.strip()]
    chosen = list(CASES) if chosen == ["all"] else chosen
    unknown = [c for c in chosen if c not in CASES]
    if unknown or not chosen:
        parser.error(f"--case: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(CASES)}")
    print(_common.machine())
    all_same = True
    for key in chosen:
        case = CASES[key]
        if args.quick:
            trials, epochs, sizes, fold_trials, fold_population = 4, 2, (1, 4), 2, 2
        else:
            trials, epochs, sizes = case.trials, case.epochs, case.sizes
            fold_trials, fold_population = FOLD_TRIALS, FOLD_POPULATION
        print(f"\n{case.name}: {trials} trials x {epochs} epochs, {case.about}; each search in a fresh process, "
              f"{args.repeats} repeat(s)", flush=True)
        if key == "sequence":
            print(f"  {recurrent_check()}", flush=True)
        only = None if args.sides is None else [s.strip() for s in args.sides.split(",") if s.strip()]
        rows, same = measure(key, trials, epochs, sizes, args.repeats, fold_trials, fold_population, only)
        all_same &= same
        print(f"\n### {case.name}, {trials} trials x {epochs} epochs\n")
        print(markdown(rows, ("search", "wall s, median (each run)", "trials / minute", "vs KerasTuner")))
        print(f"\nsame trial sequence on every side ({case.name}): {'yes' if same else 'NO'}", flush=True)
    print(f"\nsame trial sequence on every side: {'yes' if all_same else 'NO'}")


if __name__ == "__main__":
    main()
