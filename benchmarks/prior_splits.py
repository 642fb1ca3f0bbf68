"""The pick across data splits and class priors (issue 21): long-tailed digits, a long-tailed validation split.

On small data the split is the largest error, so every figure here is repeated over several data splits: split
s is `score_rule.split_data(imbalance, seed=s)` (a different long-tailed training pool, a stratified long-tailed
validation sample carved from it, and a different balanced test set of 40 per class). For each split:

- 8-trial Bayesian searches of the bundled `imbalanced_multiclass` space (the digits MLP of quality.py, 40
  epochs, batch 32, population="auto") with prior="validation" and with prior="balanced";
- each pick retrained with fresh seeds (1000 + k) on the search's training data and scored on the balanced
  test set (macro-F1 after the last epoch; quality.train_test);
- the hand recipes of quality.py, the same seeds: plain cross-entropy, cross-entropy with inverse-frequency
  `class_weight`, logit adjustment tau 1; and deferred re-weighting (DRW): cross-entropy with inverse-frequency
  class weights switched on after 50% and after 75% of the epochs (losstune's `DeferredReweighting`);
- the pick's interval as the search reports it: the standard error over seeds and over the validation sample
  (class-stratified bootstrap of the kept predictions), and whether the search warned that it cannot separate
  the top trials.

Split-averaged: pick - best hand recipe (the best by its mean over all splits), with a Student-t interval over
the splits, and pick - test-set peek (on each split the hand row that scored best on that split's test set:
what choosing by the test set itself would give). Target (issue 21): at most 0.01 below the best hand recipe, split-averaged.

    python benchmarks/prior_splits.py                  # imbalance 50, 3 splits, 3 seeds (about 15 minutes)
    python benchmarks/prior_splits.py --quick          # 2 splits, 3 trials, 4 epochs, 1 seed
    python benchmarks/prior_splits.py --folds 5        # trials scored by 5-fold over training + validation
    python benchmarks/prior_splits.py --model conv     # the conv case
"""

import argparse
import io
import shutil
import tempfile
import time

import _common
import keras
import numpy as np
import quality
import score_rule

import losstune
from losstune.reweighting import DeferredReweighting, Schedule, start_epoch
from losstune.stats import paired_difference

PRIORS = ("validation", "balanced")


def conv(hp=None):
    """The conv case: the 8x8 digits as images, Conv2D + BatchNormalization + Dropout (population_search.py's)."""
    return keras.Sequential([
        keras.Input((64,)), keras.layers.Reshape((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"), keras.layers.BatchNormalization(),
        keras.layers.MaxPooling2D(), keras.layers.Dropout(0.2), keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])


MODELS = {"mlp": quality.plain_mlp, "conv": conv}


def search(data, prior, trials, epochs, folds=None, build=quality.plain_mlp):
    """One search on a split; the pick, its interval and what the search said. With `folds`, the search scores
    each trial by k-fold over the training and validation examples together (no separate validation set)."""
    directory = tempfile.mkdtemp()
    start = time.perf_counter()
    if folds:
        xy = dict(x=np.concatenate([data[0], data[2]]), y=np.concatenate([data[1], data[3]]), folds=folds)
    else:
        xy = dict(x=data[0], y=data[1], validation_data=(data[2], data[3]))
    result = losstune.search(lambda hp: build(), **xy, space="imbalanced_multiclass", tuner="bayesian", max_trials=trials,
                             epochs=epochs, batch_size=32, prior=prior, population="auto", directory=directory,
                             stream=io.StringIO())
    best = result.best_trial
    info = dict(pick=best.describe_loss(), recipe=best.recipe, note=result.pick_note, val=best.score,
                se_seed=best.se_seed, se_sample=best.se_sample, se=best.se, seconds=time.perf_counter() - start,
                spread_warning=any("differ by" in w for w in result.warnings()), prior_text=result.prior_text(),
                # retrained on the split's training data: the class statistics are that data's
                build=lambda counts: best.loss.build("multiclass", class_counts=counts,
                                                     from_logits=result.context.from_logits))
    shutil.rmtree(directory, ignore_errors=True)
    return info


def drw_scores(retrain, start):
    """Cross-entropy with inverse-frequency class weights switched on at `start` of the epochs (DRW), plain
    Keras plus losstune's `DeferredReweighting` callback, the same seeds as every row."""

    def train(seed):
        x_tr, y_tr, _, _, x_te, y_te = retrain.data
        loss = losstune.families.get("crossentropy").build(
            {}, task="multiclass", class_weights=losstune.class_weights_from_counts(retrain.counts, 1.0))
        keras.utils.set_random_seed(seed)
        model = retrain.build()
        model.compile(optimizer=keras.optimizers.Adam(), loss=loss)
        keras.utils.set_random_seed(seed)
        callback = DeferredReweighting(Schedule(loss, start_epoch(start, retrain.epochs)))
        model.fit(x_tr, y_tr, batch_size=32, epochs=retrain.epochs, shuffle=True, verbose=0, callbacks=[callback])
        probs = keras.ops.convert_to_numpy(model(x_te, training=False))
        keras.backend.clear_session()
        return quality.macro_f1(y_te, probs)

    return [train(1000 + k) for k in range(retrain.seeds)]


def hand_recipes(retrain, y_train):
    counts = np.bincount(y_train, minlength=10)
    cw = {c: len(y_train) / (10 * counts[c]) for c in range(10)}
    return {
        "CE + inverse freq. from 75% (DRW)": drw_scores(retrain, 0.75),
        "CE + inverse freq. from 50% (DRW)": drw_scores(retrain, 0.5),
        "plain cross-entropy": retrain.scores("keras sparse CE", keras.losses.SparseCategoricalCrossentropy),
        "CE + class_weight (inverse freq.)": retrain.scores(
            "keras sparse CE + class_weight", keras.losses.SparseCategoricalCrossentropy, class_weight=cw),
        "logit adjustment tau 1": retrain.losstune_scores(
            lambda: score_rule.build_loss("logit_adjusted", {"tau": 1.0}, None, retrain.counts)),
    }


def fmt_se(value):
    return "-" if value is None else f"{value:.4f}"


def one_split(split, imbalance, trials, epochs, seeds, folds, priors, build):
    data = score_rule.split_data(imbalance, seed=split)
    print(f"\n=== split {split}: {len(data[1])} training, validation per class "
          f"{np.bincount(data[3], minlength=10).tolist()}, {len(data[5])} test", flush=True)
    retrain = quality.Retrainer(data, seeds, epochs, build)
    rows = {}
    for prior in priors:
        info = search(data, prior, trials, epochs, folds, build)
        test = retrain.losstune_scores(lambda: info["build"](retrain.counts))
        rows[f"pick, prior={prior}" + (f", {folds} folds" if folds else "")] = test
        print(f"  prior={prior}: pick {info['pick']}" + (f" [recipe: {info['recipe']}]" if info["recipe"] else "")
              + f"; validation {info['val']:.4f} ± {fmt_se(info['se'])} (seeds {fmt_se(info['se_seed'])}, "
              f"validation sample {fmt_se(info['se_sample'])}); spread warning: {info['spread_warning']}; "
              f"{info['seconds']:.0f} s; test " + " ".join(f"{s:.3f}" for s in test)
              + f" mean {np.mean(test):.4f}", flush=True)
        print(f"    {info['prior_text']}" + (f"\n    {info['note']}" if info["note"] else ""), flush=True)
    for label, scores in hand_recipes(retrain, data[1]).items():
        rows[label] = scores
        print(f"  hand {label}: test " + " ".join(f"{s:.3f}" for s in scores) + f" mean {np.mean(scores):.4f}",
              flush=True)
    return {label: float(np.mean(scores)) for label, scores in rows.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--imbalance", type=float, default=50.0)
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=None,
                        help="score trials by k-fold over training + validation instead of the validation split")
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp",
                        help="mlp (the digits MLP of quality.py) or conv (Conv2D + BatchNormalization + Dropout)")
    parser.add_argument("--priors", default=",".join(PRIORS), help="comma-separated, from " + ", ".join(PRIORS))
    args = parser.parse_args()
    if args.quick:
        args.splits, args.trials, args.epochs, args.seeds = 2, 3, 4, 1
    print(_common.machine(), flush=True)
    priors = [p for p in args.priors.split(",") if p]
    unknown = sorted(set(priors) - set(PRIORS))
    if unknown:
        parser.error(f"--priors: unknown {unknown}; allowed: {', '.join(PRIORS)}")
    print(f"prior_splits: imbalance {args.imbalance}, {args.splits} splits, {args.trials} trials, {args.epochs} "
          f"epochs, {args.seeds} test seeds per row, folds {args.folds}, priors {priors}, model {args.model}",
          flush=True)
    per_split = [one_split(s, args.imbalance, args.trials, args.epochs, args.seeds, args.folds, priors,
                           MODELS[args.model])
                 for s in range(args.splits)]
    labels = list(per_split[0])
    hand = [label for label in labels if not label.startswith("pick")]
    best_hand = max(hand, key=lambda label: np.mean([row[label] for row in per_split]))
    print(f"\n#### split-averaged test macro-F1 over {args.splits} splits (best hand recipe: {best_hand})")
    peek = [max(row[label] for label in hand) for row in per_split]  # the best hand row on each split's test set
    for row, value in zip(per_split, peek):
        row["test-set peek (best hand row per split)"] = value
    labels.append("test-set peek (best hand row per split)")
    for label in labels:
        values = [row[label] for row in per_split]
        line = f"  {label:<40} {np.mean(values):.4f}  per split " + " ".join(f"{v:.3f}" for v in values)
        if label.startswith("pick") and args.splits >= 2:
            d = paired_difference(values, [row[best_hand] for row in per_split])
            line += (f"  | - best hand recipe {d['diff_mean']:+.4f} (95% CI over splits [{d['diff_ci'][0]:+.4f}, "
                     f"{d['diff_ci'][1]:+.4f}])")
            line += f"; - peek {np.mean(values) - np.mean(peek):+.4f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
