"""Folds as members: are the fold scores of a population that trains every fold at once (one stream of the
whole data, each member masking out its held-out fold) statistically equivalent to fold-by-fold training, and
how much faster is it?

Long-tailed digits (imbalance 10, so every class has examples in every fold), the MLP of the other
benchmarks, `imbalanced_multiclass`, random search: the same trials (RandomSearch proposes them whatever the
scores) run with folds=5 at population 1 (fold by fold, one training after another) and at population K (the
K trials x 5 folds of a round as one population). Per trial: the mean fold score on each side; paired over the
trials: the mean difference with a 95% Student t interval, the largest difference, and the rank correlation
(Spearman) of the trials' scores; then the wall time of each side. The two sides cannot be equal run for run:
fold by fold, each fold trains on its own subset in its own seed's order; as members, every member sees the
batches of the whole data (its held-out examples weighted 0) in one order.

    python benchmarks/fold_members.py            # 16 trials x 5 folds x 10 epochs, population 16
    python benchmarks/fold_members.py --trials 8 # 8 trials x 5 folds x 10 epochs, population 8
    python benchmarks/fold_members.py --quick    # 4 trials x 3 folds x 2 epochs, population 4
"""

import argparse

import _common
import keras
import numpy as np
from scipy.stats import spearmanr
from score_rule import split_data

from losstune.stats import paired_difference


def mlp(hp=None):
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def run(x, y, trials, folds, epochs, population):
    scores, seconds = _common.timed_search(mlp, x, y, folds=folds, space="imbalanced_multiclass", tuner="random",
                                           max_trials=trials, epochs=epochs, seed=0, race=0, population=population)
    return {name: float(np.mean(values)) for name, values in scores.items()}, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 trials x 3 folds x 2 epochs, population 4")
    parser.add_argument("--trials", type=int, default=16, help="trials (and population size) of the full run")
    args = parser.parse_args()
    trials, folds, epochs, size = (4, 3, 2, 4) if args.quick else (args.trials, 5, 10, args.trials)
    x, y = split_data(10)[:2]
    print(_common.machine())
    print(f"long-tailed digits 10:1, {len(y)} examples, folds={folds}; random search, {trials} trials x {epochs} "
          f"epochs, race off", flush=True)
    serial, serial_s = run(x, y, trials, folds, epochs, 1)
    members, members_s = run(x, y, trials, folds, epochs, size)
    names = [n for n in serial if n in members]
    assert len(names) == len(serial) == len(members), "the two sides ran different trials"
    a, b = [members[n] for n in names], [serial[n] for n in names]
    for n in names:
        print(f"  {serial[n]:.4f}  {members[n]:.4f}  {members[n] - serial[n]:+.4f}  {n}")
    d = paired_difference(a, b)
    rows = [("mean fold score", f"{d['baseline_mean']:.4f}", f"{d['best_mean']:.4f}", f"{d['diff_mean']:+.4f}",
             f"[{d['diff_ci'][0]:+.4f}, {d['diff_ci'][1]:+.4f}]")]
    print(_common.table(rows, ("quantity", "fold by fold", "folds as members", "members - fold by fold",
                               "95% CI (paired t)")))
    print(f"largest |difference| {np.max(np.abs(np.subtract(a, b))):.4f}; rank correlation (Spearman) "
          f"{spearmanr(a, b).statistic:.3f}")
    print(f"wall time: fold by fold {serial_s:.1f} s, folds as members (population {size}) {members_s:.1f} s: "
          f"speed-up {serial_s / members_s:.2f}x")


if __name__ == "__main__":
    main()
