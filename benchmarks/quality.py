"""Search quality: does the loss losstune finds beat plain cross-entropy on held-out data, beyond seed noise?

Long-tailed digits at imbalance 10, 50 and 100 (balanced validation and test sets), a small MLP (64 hidden
units): a 30-trial search over the bundled `imbalanced_multiclass` space picks a loss by validation macro-F1,
then `confirm_seeds=5` retrains the best loss and the baseline (plain cross-entropy, no class weights) with 5
fresh seeds and reports their validation macro-F1 (best epoch). Since the validation set chose the winner,
the same 10 confirmation models (captured as the model builder creates them: no retraining) are also scored
on the test set, after their last epoch. A pairs task does the same for the contrastive margin on digit pairs
(search over `metric_learning` against the default margin 1.0; objective and test score: pair ROC-AUC).

Differences are best - baseline over the seeds, paired (seed k of both shares initial weights and data
order), with a 95% Student-t interval.

    python benchmarks/quality.py              # 30 trials, 40 epochs, 5 seeds (about 10-15 minutes on 2 cores)
    python benchmarks/quality.py --quick
"""

import argparse
import io
import shutil
import tempfile
import time

import _common
import keras
import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

import losstune
from losstune import datasets
from losstune.stats import paired_difference

BUILT = []  # every model the builders created, in order (the last 2 x seeds are the confirmation's)


def mlp(hp=None):
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    BUILT.append(model)
    return model


def siamese(hp=None):
    encoder = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(16)])
    a, b = keras.Input((64,)), keras.Input((64,))
    diff = keras.layers.Subtract()([encoder(a), encoder(b)])
    dist = keras.layers.Lambda(lambda d: keras.ops.sqrt(keras.ops.sum(d * d, axis=-1, keepdims=True) + 1e-9))(diff)
    model = keras.Model([a, b], dist)
    BUILT.append(model)
    return model


def macro_f1(y, p):
    return f1_score(y, p.argmax(1), average="macro")


def pair_auc(y, d):
    return roc_auc_score(y, -d.ravel())


def run(name, build, split, space, trials, epochs, seeds, score, batch_size=32):
    """Search, confirm over `seeds` fresh seeds, and score the confirmation models on the test set."""
    directory = tempfile.mkdtemp()
    start = time.perf_counter()
    BUILT.clear()
    result = losstune.search(build, split.x_train, split.y_train, validation_data=(split.x_val, split.y_val),
                             space=space, tuner="bayesian", max_trials=trials, epochs=epochs, batch_size=batch_size,
                             confirm_seeds=seeds, directory=directory, stream=io.StringIO())
    confirm_models = BUILT[-2 * seeds:]  # confirm() builds best, baseline for seed 0, then for seed 1, ...
    best_family, base_family = result.best_trial.family, result.baseline_trial.family
    for k, model in enumerate(confirm_models):
        expected = best_family if k % 2 == 0 else base_family
        if model.loss.name != expected:
            raise RuntimeError(f"confirmation model {k} was compiled with {model.loss.name}, expected {expected}")
    test = [score(split.y_test, keras.ops.convert_to_numpy(m(split.x_test, training=False))) for m in confirm_models]
    c = result.confirmation
    seconds = time.perf_counter() - start
    print(f"{name}: {result.best_trial.describe_loss()} (search: validation {result.best_score:.4f} vs baseline "
          f"{result.baseline_score:.4f}; {len(result.completed)} trials completed, {len(result.failed)} failed; "
          f"{seconds:.0f} s)", flush=True)
    print(f"  per seed, validation best/baseline: "
          + " ".join(f"{b:.3f}/{a:.3f}" for b, a in zip(c["best_scores"], c["baseline_scores"])), flush=True)
    print(f"  per seed, test best/baseline:       "
          + " ".join(f"{b:.3f}/{a:.3f}" for b, a in zip(test[0::2], test[1::2])), flush=True)
    shutil.rmtree(directory, ignore_errors=True)
    return c, paired_difference(test[0::2], test[1::2]), seconds


def row(name, where, stats):
    low, high = stats["diff_ci"]
    verdict = "gain, CI excludes 0" if low > 0 else ("loss, CI excludes 0" if high < 0 else "CI includes 0")
    return (name, where, f"{stats['baseline_mean']:.4f} +/- {stats['baseline_std']:.4f}",
            f"{stats['best_mean']:.4f} +/- {stats['best_std']:.4f}", f"{stats['diff_mean']:+.4f}",
            f"[{low:+.4f}, {high:+.4f}]", verdict)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one imbalance level, 3 trials, 2 epochs, 2 seeds")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        trials, epochs, seeds, levels, pair_trials, pair_epochs, pairs_n = 3, 2, 2, [50], 2, 2, (600, 300, 300)
    else:
        trials, epochs, seeds, levels = args.trials, args.epochs, args.seeds, [10, 50, 100]
        pair_trials, pair_epochs, pairs_n = 10, 15, (3000, 1000, 1000)
    print(_common.machine())
    print(f"digits: {trials} trials per search (bayesian), {epochs} epochs, batch 32; confirmation and test: "
          f"{seeds} fresh seeds. pairs: {pair_trials} trials, {pair_epochs} epochs, {pairs_n[0]} training pairs.")
    start = time.perf_counter()
    rows = []
    for imbalance in levels:
        split = datasets.long_tailed_digits(imbalance=imbalance, seed=0)
        name = f"digits {imbalance}:1"
        print(f"{name}: {len(split.y_train)} training examples (per class {np.bincount(split.y_train).tolist()}), "
              f"{len(split.y_val)} validation, {len(split.y_test)} test", flush=True)
        val, test, _ = run(name, mlp, split, "imbalanced_multiclass", trials, epochs, seeds, macro_f1)
        rows += [row(name, "validation macro-F1", val), row(name, "test macro-F1", test)]

    split = datasets.digit_pairs(n_train=pairs_n[0], n_val=pairs_n[1], n_test=pairs_n[2], seed=0)
    val, test, _ = run("digit pairs (contrastive margin)", siamese, split, "metric_learning", pair_trials,
                       pair_epochs, seeds, pair_auc)
    rows += [row("digit pairs", "validation pair ROC-AUC", val), row("digit pairs", "test pair ROC-AUC", test)]
    print()
    print(_common.table(rows, ("task", "score", "baseline mean +/- sd", "best mean +/- sd", "difference",
                               "95% CI (paired t)", "verdict")))
    print(f"\ntotal {time.perf_counter() - start:.0f} s. Target: a test-set gain whose CI excludes 0 at 50:1 and 100:1.")


if __name__ == "__main__":
    main()
