"""losstune.search vs a hand-written KerasTuner HyperModel on the same trials: wall time per trial, ratio,
and where a trial's time goes.

Both run KerasTuner's GridSearch over the same four losses (cross-entropy with label smoothing 0 and 0.1,
focal with gamma 1 and 2), the same MLP, data, epochs and seed; the hand-written one compiles Keras's
built-in losses and reports the same macro-F1. Runs alternate A B A B.

    python benchmarks/overhead.py            # 3 repeats, 5 epochs, 1,400 digits
    python benchmarks/overhead.py --quick
"""

import argparse
import collections
import io
import shutil
import tempfile
import time

import _common  # noqa: F401  (sets up paths and logging)
import keras
import keras_tuner
import numpy as np
from keras_tuner.src.engine import tuner_utils
from sklearn.datasets import load_digits

import losstune
from losstune import objectives
from losstune import tensorboard as tb

SPACE = {"crossentropy": {"label_smoothing": {"values": [0.0, 0.1]}}, "focal": {"gamma": {"values": [1.0, 2.0]}}}
TRIALS = 4


def build_model(hp=None):
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


class PlainHyperModel(keras_tuner.HyperModel):
    """What a user writes by hand: Keras built-in losses chosen by hyperparameters."""

    def build(self, hp):
        family = hp.Choice("loss", ["crossentropy", "focal"])
        with hp.conditional_scope("loss", ["crossentropy"]):
            ls = hp.Choice("crossentropy/label_smoothing", [0.0, 0.1])
        with hp.conditional_scope("loss", ["focal"]):
            gamma = hp.Choice("focal/gamma", [1.0, 2.0])
        keras.utils.set_random_seed(0)
        model = build_model()
        if family == "crossentropy":
            loss = keras.losses.CategoricalCrossentropy(label_smoothing=ls)
        else:
            loss = keras.losses.CategoricalFocalCrossentropy(gamma=gamma, alpha=1.0)
        model.compile(optimizer="adam", loss=loss, metrics=[objectives.MacroF1()])
        return model

    def fit(self, hp, model, *args, **kwargs):
        keras.utils.set_random_seed(0)
        return model.fit(*args, **kwargs)


class Timers:
    """Accumulates wall time spent inside patched functions."""

    def __init__(self):
        self.seconds = collections.defaultdict(float)
        self._patches = []

    def wrap(self, owner, name, label):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start

        setattr(owner, name, timed)
        self._patches.append((owner, name, original))

    def undo(self):
        for owner, name, original in reversed(self._patches):
            setattr(owner, name, original)


def instrument(timers):
    timers.wrap(losstune.LossHyperModel, "build", "build + compile")
    timers.wrap(PlainHyperModel, "build", "build + compile")
    timers.wrap(keras.Model, "fit", "fit (train + validation)")
    timers.wrap(tuner_utils.SaveBestEpoch, "on_epoch_end", "checkpointing (inside fit)")
    timers.wrap(keras.callbacks.TensorBoard, "on_epoch_end", "TensorBoard scalars (inside fit)")
    timers.wrap(tb, "write_trial_loss", "losstune: loss picture + class weights")
    timers.wrap(tb, "end_trial", "losstune: session end + score")
    timers.wrap(tb, "write_hparams_config", "losstune: hparams config")


def run_losstune(data, epochs, directory):
    (x, y), (xv, yv) = data
    losstune.search(build_model, x, y, validation_data=(xv, yv), space=losstune.LossSpace(SPACE, "multiclass"),
                    tuner="grid", max_trials=TRIALS, epochs=epochs, directory=directory, stream=io.StringIO())


def run_plain(data, epochs, directory, tensorboard):
    (x, y), (xv, yv) = data
    tuner = keras_tuner.GridSearch(PlainHyperModel(), objective=keras_tuner.Objective("val_macro_f1", "max"),
                                   max_trials=TRIALS, directory=directory, project_name="plain", seed=1)
    callbacks = [keras.callbacks.TensorBoard(f"{directory}/logs")] if tensorboard else []
    tuner.search(x, np.eye(10)[y], validation_data=(xv, np.eye(10)[yv]), epochs=epochs, batch_size=32,
                 callbacks=callbacks, verbose=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    repeats, epochs = (1, 1) if args.quick else (args.repeats, args.epochs)
    digits = load_digits()
    x, y = (digits.data / 16).astype("float32"), digits.target
    data = ((x[:1400], y[:1400]), (x[1400:], y[1400:]))
    print(_common.machine())
    print(f"{TRIALS} trials x {epochs} epochs, digits MLP (64 hidden), 1,400 training samples, {repeats} repeats, A B C alternating")

    runs = {"losstune.search": lambda d: run_losstune(data, epochs, d),
            "KerasTuner + built-in losses": lambda d: run_plain(data, epochs, d, tensorboard=False),
            "KerasTuner + built-in losses + TensorBoard": lambda d: run_plain(data, epochs, d, tensorboard=True)}
    walls = collections.defaultdict(list)
    breakdown = {name: Timers() for name in runs}
    run_plain(data, 1, tempfile.mkdtemp(), tensorboard=False)  # warm up TensorFlow once
    for _ in range(repeats):
        for name, run in runs.items():
            directory = tempfile.mkdtemp()
            instrument(breakdown[name])
            start = time.perf_counter()
            run(directory)
            walls[name].append((time.perf_counter() - start) / TRIALS)
            breakdown[name].undo()
            shutil.rmtree(directory, ignore_errors=True)

    base = np.median(walls["KerasTuner + built-in losses + TensorBoard"])
    rows = [(name, f"{np.median(w):.3f}", f"{min(w):.3f}", f"{np.median(w) / base:.3f}") for name, w in walls.items()]
    print()
    print(_common.table(rows, ("run", "s/trial (median)", "s/trial (min)", "ratio vs KT+TB")))
    ratio = np.median(walls["losstune.search"]) / base
    print(f"\nlosstune / KerasTuner (both logging to TensorBoard): {ratio:.3f} (target <= 1.05)")
    print(f"losstune / KerasTuner without TensorBoard: "
          f"{np.median(walls['losstune.search']) / np.median(walls['KerasTuner + built-in losses']):.3f}")
    print("\nwhere a trial's time goes (seconds per trial, mean over repeats; rows nest: checkpointing and "
          "TensorBoard scalars happen inside fit):")
    labels = sorted({k for t in breakdown.values() for k in t.seconds})
    rows = [(label, *(f"{breakdown[n].seconds.get(label, 0.0) / (TRIALS * repeats):.3f}" for n in runs))
            for label in labels]
    top = [label for label in labels if "inside fit" not in label]
    rows.append(("other (tuner start, data checks, KerasTuner bookkeeping)",
                 *(f"{np.mean(walls[n]) - sum(breakdown[n].seconds.get(l, 0.0) for l in top) / (TRIALS * repeats):.3f}"
                   for n in runs)))
    rows.append(("wall", *(f"{np.mean(walls[n]):.3f}" for n in runs)))
    print(_common.table(rows, ("part", "losstune", "KT", "KT+TB")))


if __name__ == "__main__":
    main()
