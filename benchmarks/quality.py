"""Search quality: does the loss losstune finds beat plain cross-entropy on held-out data, beyond seed noise?

Long-tailed digits at imbalance 10, 50 and 100 (balanced validation and test sets), a small MLP: a search over
`imbalanced_multiclass` picks a loss by validation macro-F1; then the best loss and plain cross-entropy (the
baseline) are each retrained with 5 fresh seeds and scored on the test set. A pairs task does the same for
the contrastive margin on digit pairs (test ROC-AUC of the distance).

    python benchmarks/quality.py              # 30 trials, 5 seeds (about 10-15 minutes on 2 cores)
    python benchmarks/quality.py --quick
"""

import argparse
import io
import tempfile

import _common
import keras
import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

import losstune
from losstune import datasets
from losstune.search import paired_difference


def mlp(hp=None):
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def siamese(hp=None):
    encoder = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(16)])
    a, b = keras.Input((64,)), keras.Input((64,))
    diff = keras.layers.Subtract()([encoder(a), encoder(b)])
    dist = keras.layers.Lambda(lambda d: keras.ops.sqrt(keras.ops.sum(d * d, axis=-1, keepdims=True) + 1e-9))(diff)
    return keras.Model([a, b], dist)


def test_scores(build, loss, split, epochs, seeds, score):
    out = []
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        model = build()
        model.compile(optimizer="adam", loss=loss)
        keras.utils.set_random_seed(seed)
        model.fit(split.x_train, split.y_train, epochs=epochs, batch_size=32, verbose=0)
        out.append(score(split.y_test, model.predict(split.x_test, verbose=0)))
    return out


def line(name, stats, target_excludes_zero):
    low, high = stats["diff_ci"]
    verdict = "gain, CI excludes 0" if low > 0 else ("loss, CI excludes 0" if high < 0 else "CI includes 0")
    return (name, f"{stats['baseline_mean']:.4f} +/- {stats['baseline_std']:.4f}",
            f"{stats['best_mean']:.4f} +/- {stats['best_std']:.4f}", f"{stats['diff_mean']:+.4f}",
            f"[{low:+.4f}, {high:+.4f}]", verdict + (" (target)" if target_excludes_zero else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    trials, epochs, n_seeds, levels = (3, 2, 2, [50]) if args.quick else (30, 40, 5, [10, 50, 100])
    seeds = list(range(100, 100 + n_seeds))
    print(_common.machine())
    print(f"{trials} trials per search, {epochs} epochs, {n_seeds} fresh seeds for the test-set comparison")
    rows = []
    macro_f1 = lambda y, p: f1_score(y, p.argmax(1), average="macro")  # noqa: E731
    for imbalance in levels:
        split = datasets.long_tailed_digits(imbalance=imbalance, seed=0)
        result = losstune.search(mlp, split.x_train, split.y_train, validation_data=(split.x_val, split.y_val),
                                 space="imbalanced_multiclass", tuner="bayesian", max_trials=trials, epochs=epochs,
                                 directory=tempfile.mkdtemp(), stream=io.StringIO())
        best = test_scores(mlp, result.best_loss, split, epochs, seeds, macro_f1)
        base = test_scores(mlp, keras.losses.SparseCategoricalCrossentropy(), split, epochs, seeds, macro_f1)
        print(f"imbalance {imbalance}: best loss {result.best_trial.describe_loss()} "
              f"(validation {result.best_score:.4f} vs baseline {result.baseline_score:.4f})", flush=True)
        rows.append(line(f"digits imbalance {imbalance}: test macro-F1", paired_difference(best, base),
                         imbalance >= 50))

    pair_epochs = 2 if args.quick else 15
    split = datasets.digit_pairs(n_train=600 if args.quick else 3000, n_val=300 if args.quick else 1000,
                                 n_test=300 if args.quick else 1000, seed=0)
    result = losstune.search(siamese, split.x_train, split.y_train, validation_data=(split.x_val, split.y_val),
                             space="metric_learning", tuner="bayesian", max_trials=min(trials, 10), epochs=pair_epochs,
                             directory=tempfile.mkdtemp(), stream=io.StringIO())
    auc = lambda y, d: roc_auc_score(y, -d.ravel())  # noqa: E731
    best = test_scores(siamese, result.best_loss, split, pair_epochs, seeds, auc)
    base = test_scores(siamese, losstune.families.get("contrastive").build({}, task="pairs"), split, pair_epochs,
                       seeds, auc)
    print(f"pairs: best margin {result.best_trial.params['margin']:.3f} vs default 1.0", flush=True)
    rows.append(line("digit pairs: test ROC-AUC (contrastive margin)", paired_difference(best, base), False))
    print()
    print(_common.table(rows, ("task", "baseline mean +/- sd", "best mean +/- sd", "difference", "95% CI",
                               "verdict")))


if __name__ == "__main__":
    main()
