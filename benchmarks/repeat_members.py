"""Repeats as members: with executions_per_trial=r, a population trains the K trials x r repeats of a round at
once, each member drawing its own seed's data order. How much faster is that than one repeat after another,
and are the scores the serial search's?

Long-tailed digits (imbalance 10), the MLP of fold_members.py, `imbalanced_multiclass`, random search, a
validation split: the same trials (RandomSearch proposes them whatever the scores) run with
executions_per_trial=3 three ways, side by side in one process: serial (population 1), population K one
repeat at a time (K members, r populations a round: what losstune did before repeats became members), and
population K with repeats as members (K x r members, one population a round). Scores: every repeat's score
against the serial search's (equal up to float rounding is the claim); then the wall time of each side.

    python benchmarks/repeat_members.py            # 16 trials x 3 repeats x 10 epochs, population 16
    python benchmarks/repeat_members.py --quick    # 4 trials x 2 repeats x 2 epochs, population 4
"""

import argparse

import _common
import numpy as np
from fold_members import mlp
from score_rule import split_data

from losstune.population import trials as population_trials


def run(data, trials, repeats, epochs, population, together=True):
    x, y, x_val, y_val = data
    original = population_trials.executions_together
    if not together:  # one repeat at a time, as before repeats were members (a benchmark-only switch)
        population_trials.executions_together = lambda hypermodel, fit: bool(hypermodel.folds)
    try:
        return _common.timed_search(mlp, x, y, validation_data=(x_val, y_val), executions_per_trial=repeats,
                                    space="imbalanced_multiclass", tuner="random", max_trials=trials,
                                    epochs=epochs, seed=0, race=0, population=population)
    finally:
        population_trials.executions_together = original


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 trials x 2 repeats x 2 epochs, population 4")
    args = parser.parse_args()
    trials, repeats, epochs, size = (4, 2, 2, 4) if args.quick else (16, 3, 10, 16)
    x, y, x_val, y_val = split_data(10)[:4]
    print(_common.machine())
    print(f"long-tailed digits 10:1, {len(y)} training / {len(y_val)} validation examples; random search, "
          f"{trials} trials x {repeats} repeats x {epochs} epochs, race off", flush=True)
    sides = [("serial (population 1)", 1, True), (f"population {size}, one repeat at a time", size, False),
             (f"population {size}, repeats as members ({size * repeats} members)", size, True)]
    results = [(name,) + run((x, y, x_val, y_val), trials, repeats, epochs, population, together)
               for name, population, together in sides]
    serial = results[0][1]
    rows = []
    for name, scores, seconds in results:
        assert sorted(scores) == sorted(serial), "the sides ran different trials"
        gap = max(float(np.max(np.abs(np.subtract(scores[n], serial[n])))) for n in serial)
        rows.append((name, f"{seconds:.1f}", f"{trials * 60 / seconds:.1f}", f"{results[0][2] / seconds:.2f}x",
                     f"{gap:.1e}"))
    print(_common.table(rows, ("side", "wall s", "trials/min", "vs serial", "max |score - serial's|")))
    print(f"repeats as members against one repeat at a time: {results[1][2] / results[2][2]:.2f}x")


if __name__ == "__main__":
    main()
