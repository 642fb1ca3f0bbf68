"""Pruning: how much training `prune="median"` and `prune="halving"` save, serially and in populations, and
whether the search still finds as good a loss.

Long-tailed digits at imbalance 50, a validation split as long-tailed as the training data (as in
score_rule.py), the MLP of the other benchmarks. For each search seed, the same random-search trial sequence
(RandomSearch proposes the same trials whatever the scores) runs under each configuration (rule, population
size, trials). Reported per seed and paired over the seeds against the first configuration (95% Student t):
wall time, epochs trained, the best validation score found, and the test macro-F1 of the pick retrained once
on the training data. In a population a stopped member leaves the stack, so its epochs are really saved; the
"equal compute" row runs 3x the trials under halving (about the epochs of the full search).

    python benchmarks/pruning.py                       # rule off / median, serial: 5 seeds (the first study)
    python benchmarks/pruning.py --study population    # off / halving at population 1 and 16, and 48 trials
                                                       # with halving at population 16: 3 seeds
    python benchmarks/pruning.py --study halving       # the population rows alone
    python benchmarks/pruning.py --quick
"""

import argparse
import io
import os
import shutil
import tempfile
import time

import _common
import keras
import numpy as np
from score_rule import macro_f1, split_data

import losstune
from losstune import layout, pruning
from losstune.stats import paired_difference


def mlp(hp=None):
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def epochs_trained(result, epochs):
    total = 0
    for t in result.trials:
        curve = layout.curve_file(layout.trial_dir(result.directory, t.trial_id), 0)
        total += t.stopped["epoch"] + 1 if t.stopped else epochs
        assert not t.stopped or os.path.isfile(curve)
    return total


def test_score(result, data, epochs, seed):
    x, y, _, _, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    model = mlp()
    model.compile(optimizer="adam", loss=result.best_loss)
    keras.utils.set_random_seed(seed)
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return macro_f1(y_test, np.argmax(model.predict(x_test, verbose=0), 1))


# configuration: (rule or "off", population size, trials as a multiple of the study's trials)
STUDIES = {
    "serial": [("off", 1, 1), ("median", 1, 1)],
    "population": [("off", 1, 1), ("halving", 1, 1), ("off", 16, 1), ("halving", 16, 1), ("halving", 16, 3)],
    "halving": [("off", 16, 1), ("halving", 16, 1), ("halving", 16, 3)],  # the population rows alone
}


def run(config, data, trials, epochs, seed):
    prune, size, more = config
    x, y, xv, yv = data[:4]
    directory = tempfile.mkdtemp()
    start = time.perf_counter()
    result = losstune.search(mlp, x, y, validation_data=(xv, yv), space="imbalanced_multiclass", tuner="random",
                             max_trials=trials * more, epochs=epochs, seed=seed, race=0, population=size,
                             prune=None if prune == "off" else prune, directory=directory, stream=io.StringIO())
    seconds = time.perf_counter() - start
    record = {"seconds": seconds, "epochs": epochs_trained(result, epochs), "best": result.best_score,
              "stopped": sum(bool(t.stopped) for t in result.trials),
              "test": test_score(result, data, epochs, 1000 + seed), "pick": result.best_trial.describe_loss()}
    shutil.rmtree(directory, ignore_errors=True)
    return record


def label(config, trials):
    prune, size, more = config
    return f"prune {prune}, population {size}, {trials * more} trials"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 6 trials, 4 epochs")
    parser.add_argument("--study", choices=sorted(STUDIES), default="serial")
    args = parser.parse_args()
    seeds, trials, epochs = (2, 6, 4) if args.quick else ((5 if args.study == "serial" else 3), 16, 20)
    configs = STUDIES[args.study]
    data = split_data(50)
    print(_common.machine())
    print(f"long-tailed digits 50:1: {len(data[1])} training, {len(data[3])} validation (long-tailed), "
          f"{len(data[5])} test; random search, {epochs} epochs, race off; seeds {list(range(seeds))}", flush=True)
    runs = {config: [] for config in configs}
    for seed in range(seeds):
        for config in configs:
            record = run(config, data, trials, epochs, seed)
            runs[config].append(record)
            print(f"seed {seed} {label(config, trials):<40} {record['seconds']:6.1f} s  epochs {record['epochs']:4d}"
                  f"  stopped {record['stopped']:2d}  best val {record['best']:.4f}  pick test {record['test']:.4f}  "
                  f"{record['pick']}", flush=True)
    reference = configs[0]
    for config in configs[1:]:
        rows = []
        for key, name in (("seconds", "wall time (s)"), ("epochs", "epochs trained"),
                          ("best", "best validation score"), ("test", "pick's test macro-F1")):
            d = paired_difference([r[key] for r in runs[config]], [r[key] for r in runs[reference]])
            rows.append((name, f"{d['baseline_mean']:.4f}", f"{d['best_mean']:.4f}", f"{d['diff_mean']:+.4f}",
                         f"[{d['diff_ci'][0]:+.4f}, {d['diff_ci'][1]:+.4f}]"))
        print(f"\n{label(config, trials)} against {label(reference, trials)}:")
        print(_common.table(rows, ("quantity", "reference", "this", "this - reference", "95% CI (paired t)")))
        saved = 1 - np.sum([r["epochs"] for r in runs[config]]) / np.sum([r["epochs"] for r in runs[reference]])
        print(f"epochs saved: {saved:.1%}; trials stopped early: "
              f"{np.mean([r['stopped'] for r in runs[config]]):.1f} per search")


if __name__ == "__main__":
    main()
