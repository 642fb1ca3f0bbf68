"""losstune.search vs a hand-written KerasTuner HyperModel on the same trials: wall time per trial, ratio,
and where a trial's time goes.

Both sides run keras_tuner.RandomSearch over the same space (cross-entropy with label smoothing in [0, 0.2],
focal with gamma in [0, 5]), declared with the same hyperparameter names, ranges and seed, with the
default configuration first, so both train the same sequence of losses (the script checks it). Same MLP
(64 hidden units), data (1,400 scikit-learn digits for training, 397 for validation), epochs, batch size,
initial weights and data order. The hand-written side compiles Keras's built-in losses
(CategoricalCrossentropy, CategoricalFocalCrossentropy) with the same macro-F1 metric (losstune.objectives.MacroF1).
It runs twice: without TensorBoard, and with keras.callbacks.TensorBoard set up as losstune sets its own
(write_graph=False, profile_batch=0) so that the logging is comparable. Runs alternate A B C, B C A, C A B ...

    python benchmarks/overhead.py              # 8 trials x 5 epochs, 6 repeats
    python benchmarks/overhead.py --profile    # also: cProfile of one run each, aggregated by function
    python benchmarks/overhead.py --quick
"""

import argparse
import collections
import cProfile
import io
import pstats
import shutil
import sys
import tempfile
import time

import _common
import keras
import keras_tuner
import numpy as np
from keras_tuner.src.engine import base_tuner, oracle as oracle_module, tuner as tuner_module, tuner_utils
from sklearn.datasets import load_digits

import losstune
from losstune import hypermodel as hypermodel_module
from losstune import inputs, objectives, tasks
from losstune import tensorboard_log as tb
from losstune import progress
from losstune import tuner as losstune_tuner
from losstune.result import SearchResult

search_module = sys.modules["losstune.search"]  # `losstune.search` is the function; this is its module

SPACE = {"crossentropy": {"label_smoothing": {"min": 0.0, "max": 0.2}}, "focal": {"gamma": {"min": 0.0, "max": 5.0}}}
SEED = 0
CLOCK = None  # the Clock of the run in progress (None: not timing)


# ---------------------------------------------------------------------------------------------------
# The two sides
# ---------------------------------------------------------------------------------------------------
def build_model(hp=None):
    with timed("model build (the user's layers)"):
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                                 keras.layers.Dense(10, activation="softmax")])


class PlainHyperModel(keras_tuner.HyperModel):
    """What a user writes by hand: Keras built-in losses chosen by hyperparameters (same names and ranges)."""

    def __init__(self, builder=None):
        super().__init__()
        self.builder = builder or build_model

    def build(self, hp):
        family = hp.Choice("loss", ["crossentropy", "focal"], default="crossentropy")
        with hp.conditional_scope("loss", ["crossentropy"]):
            smoothing = hp.Float("crossentropy/label_smoothing", 0.0, 0.2, default=0.0)
        with hp.conditional_scope("loss", ["focal"]):
            gamma = hp.Float("focal/gamma", 0.0, 5.0, default=2.0)
        keras.utils.set_random_seed(SEED)
        model = self.builder()
        if family == "crossentropy":
            loss = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
        else:
            loss = keras.losses.CategoricalFocalCrossentropy(gamma=gamma, alpha=1.0)
        model.compile(optimizer="adam", loss=loss, metrics=[objectives.MacroF1()])
        return model

    def fit(self, hp, model, *args, **kwargs):
        keras.utils.set_random_seed(SEED)
        return model.fit(*args, **kwargs)


def defaults_first(oracle):
    """The hand-written side's baseline-first: the all-defaults configuration is trial 0, as in losstune."""
    populate = oracle.populate_space

    def populate_space(trial_id):
        space = oracle.get_space()
        defaults = {h.name: h.default for h in space.space if space.is_active(h)}
        if not any(t.hyperparameters.values == defaults for i, t in oracle.trials.items() if i != trial_id):
            return {"status": "RUNNING", "values": defaults}
        return populate(trial_id)

    oracle.populate_space = populate_space


def config_of(values):
    family = values["loss"]
    value = values.get("crossentropy/label_smoothing" if family == "crossentropy" else "focal/gamma")
    return family, round(float(value), 6)


def run_losstune(data, trials, epochs, directory):
    (x, y), (xv, yv) = data
    result = losstune.search(build_model, x, y, validation_data=(xv, yv),
                             space=losstune.LossSpace(SPACE, "multiclass"), tuner="random", max_trials=trials,
                             epochs=epochs, seed=SEED, directory=directory, stream=io.StringIO())
    return [(t.family, round(float(next(iter(t.params.values()))), 6)) for t in result.trials]


def run_plain(data, trials, epochs, directory, tensorboard):
    (x, y), (xv, yv) = data
    tuner = keras_tuner.RandomSearch(PlainHyperModel(), objective=keras_tuner.Objective("val_macro_f1", "max"),
                                     max_trials=trials, directory=directory, project_name="plain", seed=SEED + 1)
    defaults_first(tuner.oracle)
    callbacks = [keras.callbacks.TensorBoard(f"{directory}/logs", write_graph=False, profile_batch=0)] \
        if tensorboard else []
    tuner.search(x, np.eye(10, dtype="float32")[y], validation_data=(xv, np.eye(10, dtype="float32")[yv]),
                 epochs=epochs, batch_size=32, callbacks=callbacks, verbose=0, shuffle=True)
    return [config_of(t.hyperparameters.values) for _, t in sorted(tuner.oracle.trials.items())]


# ---------------------------------------------------------------------------------------------------
# Timing: exclusive (self) time per label, so the rows add up to the wall time
# ---------------------------------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.self_time = collections.defaultdict(float)
        self.stack = []  # [label, start, time spent in nested labels]
        self.absorbing = 0  # > 0: inside a label that keeps everything nested in it

    def push(self, label):
        self.stack.append([label, time.perf_counter(), 0.0])

    def pop(self):
        label, start, nested = self.stack.pop()
        elapsed = time.perf_counter() - start
        self.self_time[label] += elapsed - nested
        if self.stack:
            self.stack[-1][2] += elapsed

    def switch(self, label):
        self.pop()
        self.push(label)


class timed:
    """Context manager: time the block under `label` on the current clock (no-op when not timing)."""

    def __init__(self, label, absorb=False):
        self.label, self.absorb, self.active = label, absorb, False

    def __enter__(self):
        clock = CLOCK
        if clock is not None and not clock.absorbing:
            clock.push(self.label)
            self.active = True
            clock.absorbing += self.absorb
        return self

    def __exit__(self, *exc):
        if self.active:
            CLOCK.absorbing -= self.absorb
            CLOCK.pop()


class PhaseCallback(keras.callbacks.Callback):
    """Put first in fit's callbacks: splits fit into first train step (trace), training steps, validation."""

    def on_train_begin(self, logs=None):
        self.first = True
        CLOCK.push("fit: first train step (trace + compile of the train step)")

    def on_train_batch_end(self, batch, logs=None):
        if self.first:
            self.first = False
            CLOCK.switch("fit: training steps")

    def on_test_begin(self, logs=None):
        CLOCK.switch("fit: validation (incl. its first trace)")

    def on_test_end(self, logs=None):
        CLOCK.switch("fit: training steps")

    def on_train_end(self, logs=None):
        CLOCK.pop()


LABELS = {
    "start": "search start: tuner construction (space discovery builds), losstune input checks + probe model",
    "hm": "HyperModel.build: loss, optimizer, metrics, seeding",
    "compile": "model.compile",
    "trybuild": "KerasTuner per build: clear_session + gc.collect",
    "fit": "fit: set-up outside the epochs (data adapter, callback list)",
    "guard": "losstune NaN guard (per batch)",
    "tb": "TensorBoard: Keras callback (writers, epoch scalars)",
    "ltb": "TensorBoard: losstune (hparams config, loss picture, HParams sessions, summary)",
    "ckpt": "checkpointing: KerasTuner best-epoch weights",
    "kt": "KerasTuner bookkeeping (oracle, trial.json, tuner save, callback copies)",
    "status": "losstune status line per trial",
    "result": "losstune result: read trials back, export best loss",
}


class Patches:
    def __init__(self):
        self.undo_list = []

    def wrap(self, owner, name, label, absorb=False, enter=None):
        original = getattr(owner, name)  # a plain function, or a bound method for classmethods
        raw = owner.__dict__.get(name, Patches)  # what to put back (Patches: nothing, it was inherited)

        def wrapper(*args, **kwargs):
            with timed(label, absorb):
                if enter is not None:
                    enter(args, kwargs)
                return original(*args, **kwargs)

        setattr(owner, name, wrapper)
        self.undo_list.append((owner, name, raw))

    def undo(self):
        for owner, name, raw in reversed(self.undo_list):
            if raw is Patches:
                delattr(owner, name)
            else:
                setattr(owner, name, raw)
        self.undo_list = []


def add_phase_callback(args, kwargs):
    kwargs["callbacks"] = [PhaseCallback()] + list(kwargs.get("callbacks") or [])


def instrument():
    p = Patches()
    L = LABELS
    p.wrap(tuner_module.Tuner, "__init__", L["start"], absorb=True)
    p.wrap(search_module, "_probe_model", L["start"], absorb=True)
    p.wrap(inputs, "check_pair", L["start"], absorb=True)
    for name in ("check_labels", "check_outputs"):
        p.wrap(tasks.Task, name, L["start"], absorb=True)
    p.wrap(hypermodel_module.LossHyperModel, "build", L["hm"])
    p.wrap(PlainHyperModel, "build", L["hm"])
    p.wrap(keras.Model, "compile", L["compile"])
    p.wrap(tuner_module.Tuner, "_try_build", L["trybuild"])
    p.wrap(keras.Model, "fit", L["fit"], enter=add_phase_callback)
    p.wrap(hypermodel_module.NonFiniteLossGuard, "on_train_batch_end", L["guard"])
    for name in ("set_model", "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_test_begin",
                 "on_test_end", "on_train_batch_begin", "on_train_batch_end"):
        if name in keras.callbacks.TensorBoard.__dict__:
            p.wrap(keras.callbacks.TensorBoard, name, L["tb"])
    for name in ("write_hparams_config", "write_trial_loss", "end_trial", "write_summary"):
        p.wrap(tb, name, L["ltb"])
    original_session = tb.session_callback

    def session_callback(*args, **kwargs):
        callback = original_session(*args, **kwargs)
        begin = callback.on_train_begin

        def on_train_begin(logs=None):
            with timed(L["ltb"]):
                return begin(logs)

        callback.on_train_begin = on_train_begin
        return callback

    tb.session_callback = session_callback
    p.undo_list.append((tb, "session_callback", original_session))
    p.wrap(tuner_utils.SaveBestEpoch, "on_epoch_end", L["ckpt"])
    for owner, names in ((base_tuner.BaseTuner, ("on_trial_begin", "on_trial_end", "save")),
                         (oracle_module.Oracle, ("create_trial", "update_trial", "end_trial")),
                         (tuner_module.Tuner, ("_deepcopy_callbacks", "_configure_tensorboard_dir"))):
        for name in names:
            p.wrap(owner, name, L["kt"])
    p.wrap(losstune_tuner.LosstuneTunerMixin, "_configure_tensorboard_dir", L["ltb"])
    p.wrap(progress, "status_line", L["status"])
    p.wrap(SearchResult, "from_directory", L["result"])
    p.wrap(SearchResult, "export", L["result"])
    return p


def timed_run(run, directory):
    global CLOCK
    CLOCK = Clock()
    patches = instrument()
    start = time.perf_counter()
    try:
        configs = run(directory)
    finally:
        wall = time.perf_counter() - start
        patches.undo()
        clock, CLOCK = CLOCK, None
    return wall, configs, dict(clock.self_time)


def profile(runs, top):
    """cProfile of one run of each side, aggregated by function: the functions whose own time differs most."""
    stats = {}
    for name, run in runs.items():
        directory = tempfile.mkdtemp()
        prof = cProfile.Profile()
        prof.enable()
        run(directory)
        prof.disable()
        shutil.rmtree(directory, ignore_errors=True)
        stats[name] = pstats.Stats(prof).stats
    names = list(runs)
    a, b = stats[names[0]], stats[names[1]]
    rows = []
    for key in set(a) | set(b):
        ta, tb_ = a.get(key, (0, 0, 0, 0))[2], b.get(key, (0, 0, 0, 0))[2]  # tottime
        ca, cb = a.get(key, (0, 0, 0, 0))[3], b.get(key, (0, 0, 0, 0))[3]  # cumtime
        rows.append((ta - tb_, ca - cb, key))
    print(f"\ncProfile, one run each: functions whose own time differs most ({names[0]} minus {names[1]}, seconds)")
    rows.sort(key=lambda r: -abs(r[0]))
    print(_common.table([(f"{d:+.3f}", f"{c:+.3f}", f"{k[0].split('site-packages/')[-1]}:{k[1]}({k[2]})")
                         for d, c, k in rows[:top]], ("own time", "cumulative", "function")))
    for name in names:
        total = sum(v[2] for v in stats[name].values())
        print(f"total profiled time, {name}: {total:.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 trials x 1 epoch, 1 repeat")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="also cProfile one run of each side")
    args = parser.parse_args()
    repeats, trials, epochs = (1, 2, 1) if args.quick else (args.repeats, args.trials, args.epochs)
    digits = load_digits()
    x, y = (digits.data / 16).astype("float32"), digits.target
    data = ((x[:1400], y[:1400]), (x[1400:], y[1400:]))
    print(_common.machine())
    print(f"{trials} trials x {epochs} epochs, RandomSearch, digits MLP (64 hidden), 1,400 training / 397 validation "
          f"samples, batch 32, {repeats} repeats, runs alternating A B C, B C A, ...")

    runs = {"losstune.search": lambda d: run_losstune(data, trials, epochs, d),
            "KerasTuner + built-in losses": lambda d: run_plain(data, trials, epochs, d, tensorboard=False),
            "KerasTuner + built-in losses + TensorBoard": lambda d: run_plain(data, trials, epochs, d, True)}
    short = {"losstune.search": "losstune", "KerasTuner + built-in losses": "KT",
             "KerasTuner + built-in losses + TensorBoard": "KT+TB"}
    walls = collections.defaultdict(list)
    parts = {name: collections.defaultdict(float) for name in runs}
    sequences = {}
    run_plain(data, 1, 1, tempfile.mkdtemp(), tensorboard=True)  # warm up TensorFlow and TensorBoard once
    names = list(runs)
    for repeat in range(repeats):
        # Rotate the order every repeat (A B C, B C A, C A B, ...): TensorFlow and KerasTuner leave objects behind
        # after each search, so KerasTuner's gc.collect before every build gets slower as the process ages.
        for name in names[repeat % 3:] + names[:repeat % 3]:
            run = runs[name]
            directory = tempfile.mkdtemp()
            wall, configs, self_time = timed_run(run, directory)
            shutil.rmtree(directory, ignore_errors=True)
            walls[name].append(wall / trials)
            for label, seconds in self_time.items():
                parts[name][label] += seconds / (trials * repeats)
            sequences.setdefault(name, configs)
            if configs != sequences[name]:
                raise RuntimeError(f"{name}: the trial sequence changed between repeats")
    same = len({tuple(s) for s in sequences.values()}) == 1
    print("trial sequence (family, label smoothing or gamma): "
          + ", ".join(f"{f} {v:.3f}" for f, v in sequences["losstune.search"]))
    print(f"same trial sequence on all sides: {'yes' if same else 'NO: ' + repr(sequences)}")

    base = np.median(walls["KerasTuner + built-in losses + TensorBoard"])
    rows = [(name, f"{np.median(w):.3f}", f"{min(w):.3f}", f"{max(w):.3f}", f"{np.median(w) / base:.3f}")
            for name, w in walls.items()]
    print()
    print(_common.table(rows, ("run", "s/trial (median)", "min", "max", "ratio vs KT+TB")))
    # Paired ratios: repeat k of losstune against repeat k of each KerasTuner run (they ran side by side).
    lt = np.array(walls["losstune.search"])
    paired_tb = lt / np.array(walls["KerasTuner + built-in losses + TensorBoard"])
    paired = lt / np.array(walls["KerasTuner + built-in losses"])
    print(f"\nlosstune / KerasTuner, both logging to TensorBoard: {np.median(paired_tb):.3f} "
          f"(median of paired repeats; per repeat {' '.join(f'{r:.3f}' for r in paired_tb)}) (target <= 1.05)")
    print(f"losstune / KerasTuner without TensorBoard:          {np.median(paired):.3f} "
          f"(per repeat {' '.join(f'{r:.3f}' for r in paired)})")

    print("\nwhere a trial's time goes: seconds per trial (exclusive time, mean over repeats; search-start "
          "costs are spread over the trials):")
    order = [LABELS["start"], LABELS["hm"], "model build (the user's layers)", LABELS["compile"], LABELS["trybuild"],
             LABELS["fit"], "fit: first train step (trace + compile of the train step)", "fit: training steps",
             "fit: validation (incl. its first trace)", LABELS["guard"], LABELS["tb"], LABELS["ltb"], LABELS["ckpt"],
             LABELS["kt"], LABELS["status"], LABELS["result"]]
    order += sorted({k for p in parts.values() for k in p} - set(order))
    rows = [(label, *(f"{parts[n].get(label, 0.0):.3f}" for n in runs)) for label in order]
    rows.append(("other (not covered by a timer)",
                 *(f"{np.mean(walls[n]) - sum(parts[n].values()):.3f}" for n in runs)))
    rows.append(("wall (mean)", *(f"{np.mean(walls[n]):.3f}" for n in runs)))
    widths = max(len(r[0]) for r in rows)
    print(_common.table([(r[0].ljust(widths), *r[1:]) for r in rows], ("part".ljust(widths), *short.values())))

    if args.profile:
        profile({"losstune.search": runs["losstune.search"],
                 "KerasTuner + TensorBoard": runs["KerasTuner + built-in losses + TensorBoard"]}, top=25)


if __name__ == "__main__":
    main()
