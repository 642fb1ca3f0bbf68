"""Pruning: how much training `prune="median"` saves, and whether the search still finds as good a loss.

Long-tailed digits at imbalance 50, a validation split as long-tailed as the training data (as in
score_rule.py), the MLP of the other benchmarks. For each of 5 search seeds, the same random-search trial
sequence (RandomSearch proposes the same trials whatever the scores) runs twice: without pruning and with
`prune="median"`. Reported per seed and paired over the seeds (95% Student t): wall time, epochs trained,
the best validation score found, and the test macro-F1 of the pick retrained once on the training data.

    python benchmarks/pruning.py            # 5 seeds, 16 trials, 20 epochs (about 10-20 minutes on 2 cores)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 6 trials, 4 epochs")
    args = parser.parse_args()
    seeds, trials, epochs = (2, 6, 4) if args.quick else (5, 16, 20)
    data = split_data(50)
    x, y, xv, yv = data[:4]
    print(_common.machine())
    print(f"long-tailed digits 50:1: {len(y)} training, {len(yv)} validation (long-tailed), {len(data[5])} test; "
          f"random search, {trials} trials x {epochs} epochs, race off; seeds {list(range(seeds))}", flush=True)
    rows, runs = [], {"off": [], "median": []}
    for seed in range(seeds):
        for prune in ("off", "median"):
            directory = tempfile.mkdtemp()
            start = time.perf_counter()
            result = losstune.search(mlp, x, y, validation_data=(xv, yv), space="imbalanced_multiclass",
                                     tuner="random", max_trials=trials, epochs=epochs, seed=seed, race=0,
                                     prune=None if prune == "off" else prune, directory=directory,
                                     stream=io.StringIO())
            seconds = time.perf_counter() - start
            record = {"seconds": seconds, "epochs": epochs_trained(result, epochs), "best": result.best_score,
                      "stopped": sum(bool(t.stopped) for t in result.trials),
                      "test": test_score(result, data, epochs, 1000 + seed), "pick": result.best_trial.describe_loss()}
            runs[prune].append(record)
            print(f"seed {seed} prune={prune:<6} {seconds:6.1f} s  epochs {record['epochs']:4d}  stopped "
                  f"{record['stopped']:2d}  best val {record['best']:.4f}  pick test {record['test']:.4f}  "
                  f"{record['pick']}", flush=True)
            shutil.rmtree(directory, ignore_errors=True)
    for key, label in (("seconds", "wall time (s)"), ("epochs", "epochs trained"), ("best", "best validation score"),
                       ("test", "pick's test macro-F1")):
        d = paired_difference([r[key] for r in runs["median"]], [r[key] for r in runs["off"]])
        rows.append((label, f"{d['baseline_mean']:.4f}", f"{d['best_mean']:.4f}", f"{d['diff_mean']:+.4f}",
                     f"[{d['diff_ci'][0]:+.4f}, {d['diff_ci'][1]:+.4f}]"))
    print()
    print(_common.table(rows, ("quantity", "prune off", "prune median", "median - off", "95% CI (paired t)")))
    saved = 1 - np.sum([r["epochs"] for r in runs["median"]]) / np.sum([r["epochs"] for r in runs["off"]])
    print(f"\nepochs saved by prune='median': {saved:.1%}; trials stopped early: "
          f"{np.mean([r['stopped'] for r in runs['median']]):.1f} of {trials} per search")


if __name__ == "__main__":
    main()
