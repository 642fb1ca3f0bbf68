"""Search quality: does the loss losstune picks hold up on held-out data, against the hand recipes a
practitioner would try and against the best loss of its own space (issue 10)?

Two cases, both on long-tailed digits (`losstune.datasets.long_tailed_digits`, class 0 the most, class 9 the
fewest) and a small MLP (Dense 64 relu -> Dense 10 softmax; Adam, batch 32):

1. The realistic case, at imbalance 10, 50 and 100. The validation split is as long-tailed as the training
   data: carved, stratified, from the long-tailed training pool (12% of each class, at least one example for a
   class with two or more; `score_rule.split_data`, the same split as benchmarks/score_rule.py). The balanced
   test set (40 per class) stays the test set and no search sees it. For each imbalance:
   - searches over the bundled `imbalanced_multiclass` space (bayesian tuner, seed 0) with budgets of 8 and 30
     trials: the new defaults (score="last_quarter", the space's recipes tried right after the baseline,
     race=3) and the old behaviour (score="best", race=0, the same space without its recipes). For each: the
     pick (`result.best_trial`), whether it is a recipe, the pick note, its validation mean +/- SE, wall time,
     trials and trainings (raced repeats count as extra trainings) per minute, and duplicate trials (identical
     losses among `result.trials`);
   - every pick retrained with 5 fresh seeds (seed k: `keras.utils.set_random_seed(1000 + k)` before building
     and before `fit`) on the search's training data, 40 epochs, and scored on the test set: macro-F1 of the
     last epoch's model (sklearn, average="macro");
   - hand-recipe rows, plain Keras and no search, the same 5 seeds: plain cross-entropy
     (`SparseCategoricalCrossentropy`), cross-entropy with inverse-frequency `class_weight={c: n / (C n_c)}` in
     `fit`, and logit adjustment tau 1 (losstune's `logit_adjusted`);
   - a reference row labelled as a PEEK: the space's candidates from score_rule.py (its fixed recipes and 3
     random points of the space, less those the current space excludes; by default only the 8 strongest of
     its recipe table, which hold its winner at every imbalance) trained the same way and scored directly on
     the test set; its best mean is what choosing the loss on the test set would give;
   - paired differences over the 5 seeds (seed k of every row shares initial weights and data order) with 95%
     Student-t intervals: pick - best hand recipe, pick - peek best, pick - plain cross-entropy.
   Targets (issue 10): pick >= best hand recipe - 0.01 and pick within 0.01 of the peek (on the means), at every
   imbalance, with 8 trials as with 30; zero duplicate trials; the cost of the new defaults beside the old.
2. Today's case, with the new defaults: balanced validation (30 per class), a 30-trial search with
   `confirm_seeds=5` against plain cross-entropy; the 10 confirmation models (captured as the builder creates
   them: no retraining) scored on the test set after their last epoch. A pairs task does the same for the
   contrastive margin on digit pairs (search over `metric_learning` against margin 1.0; pair ROC-AUC).
   Target: with balanced validation, today's gains over cross-entropy stay (CI excluding 0 at 50:1 and 100:1).

    python benchmarks/quality.py              # both cases (about an hour on 2 shared cores)
    python benchmarks/quality.py --quick      # imbalance 50, budgets 3 and 4, 2 epochs, 2 seeds, race=1
    python benchmarks/quality.py --peek 0     # the peek over all of the space's candidates (default: the 8
                                              # strongest of score_rule.py's table, to keep the run near an hour)
"""

import argparse
import io
import json
import shutil
import tempfile
import time

import _common
import keras
import numpy as np
import score_rule
from sklearn.metrics import f1_score, roc_auc_score

import losstune
from losstune import datasets
from losstune.lossspace import LossSpace
from losstune.stats import mean_se, paired_difference

BUILT = []  # every model the builders created, in order (the last 2 x seeds are the confirmation's)
TOL = 0.01  # the tolerance for "at least as good as" and "within"
# score_rule.py's candidates by mean rank over 10, 50 and 100:1 (benchmarks/README.md): the strongest first.
STRONGEST = ["logit_adjusted t1", "poly1 e1 w1", "focal g1 w1", "label_smoothing 0.1 w1", "crossentropy w1",
             "class_balanced b0.999", "class_balanced b0.9999", "focal g2 w1", "logit_adjusted t0.5",
             "crossentropy w0.5"]


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


# ==================================================================================================
# Case 2: today's case (balanced validation), the existing path
# ==================================================================================================
def run(name, build, split, space, trials, epochs, seeds, score, batch_size=32, race=3):
    """Search (new defaults), confirm over `seeds` fresh seeds, and score the confirmation models on the test set."""
    directory = tempfile.mkdtemp()
    start = time.perf_counter()
    BUILT.clear()
    result = losstune.search(build, split.x_train, split.y_train, validation_data=(split.x_val, split.y_val),
                             space=space, tuner="bayesian", max_trials=trials, epochs=epochs, batch_size=batch_size,
                             confirm_seeds=seeds, directory=directory, stream=io.StringIO(), race=race)
    confirm_models = BUILT[-2 * seeds:]  # confirm() builds best, baseline for seed 0, then for seed 1, ...
    best_family, base_family = result.best_trial.family, result.baseline_trial.family
    for k, model in enumerate(confirm_models):
        expected = best_family if k % 2 == 0 else base_family
        if model.loss.name != expected:
            raise RuntimeError(f"confirmation model {k} was compiled with {model.loss.name}, expected {expected}")
    test = [score(split.y_test, keras.ops.convert_to_numpy(m(split.x_test, training=False))) for m in confirm_models]
    c = result.confirmation
    seconds = time.perf_counter() - start
    print(f"{name}: {result.best_trial.describe_loss()}"
          + (f" [recipe: {result.best_trial.recipe}]" if result.best_trial.recipe else "")
          + f" (search: validation {result.best_trial.describe_score()} vs baseline "
          f"{result.baseline_trial.describe_score()}; {len(result.completed)} trials completed, "
          f"{len(result.failed)} failed; {seconds:.0f} s)", flush=True)
    if result.pick_note:
        print(f"  {result.pick_note}")
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


def balanced_case(trials, epochs, seeds, levels, pair_trials, pair_epochs, pairs_n, race):
    print(f"\n#### Today's case (balanced validation), new defaults (score=last_quarter, recipes, race={race}): "
          f"digits: {trials} trials per search (bayesian), {epochs} epochs, batch 32; confirmation and test: "
          f"{seeds} fresh seeds. pairs: {pair_trials} trials, {pair_epochs} epochs, {pairs_n[0]} training pairs.",
          flush=True)
    rows = []
    for imbalance in levels:
        split = datasets.long_tailed_digits(imbalance=imbalance, seed=0)
        name = f"digits {imbalance}:1"
        print(f"{name}: {len(split.y_train)} training examples (per class {np.bincount(split.y_train).tolist()}), "
              f"{len(split.y_val)} validation, {len(split.y_test)} test", flush=True)
        val, test, _ = run(name, mlp, split, "imbalanced_multiclass", trials, epochs, seeds, macro_f1, race=race)
        rows += [row(name, "validation macro-F1", val), row(name, "test macro-F1", test)]

    split = datasets.digit_pairs(n_train=pairs_n[0], n_val=pairs_n[1], n_test=pairs_n[2], seed=0)
    val, test, _ = run("digit pairs (contrastive margin)", siamese, split, "metric_learning", pair_trials,
                       pair_epochs, seeds, pair_auc, race=race)
    rows += [row("digit pairs", "validation pair ROC-AUC", val), row("digit pairs", "test pair ROC-AUC", test)]
    print()
    print(_common.table(rows, ("task", "score", "baseline mean +/- sd", "best mean +/- sd", "difference",
                               "95% CI (paired t)", "verdict")))
    print("Target: a test-set gain over plain cross-entropy whose CI excludes 0 at 50:1 and 100:1.", flush=True)


# ==================================================================================================
# Case 1: long-tailed validation
# ==================================================================================================
def plain_mlp():
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def train_test(make_loss, data, seed, epochs, class_weight=None, build=plain_mlp):
    """Plain Keras: seed, build, compile, seed, fit on the training split; test macro-F1 of the last epoch."""
    x_tr, y_tr, _, _, x_te, y_te = data
    keras.utils.set_random_seed(seed)
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(), loss=make_loss(), steps_per_execution=4)
    keras.utils.set_random_seed(seed)
    model.fit(x_tr, y_tr, batch_size=32, epochs=epochs, shuffle=True, verbose=0, class_weight=class_weight)
    pred = keras.ops.convert_to_numpy(model(x_te, training=False)).argmax(1)
    keras.backend.clear_session()
    return float(f1_score(y_te, pred, average="macro", zero_division=0))


class Retrainer:
    """Test scores over the fresh seeds, cached by what is trained (the same loss config trains the same model)."""

    def __init__(self, data, seeds, epochs, build=plain_mlp):
        self.data, self.seeds, self.epochs, self.build = data, seeds, epochs, build
        self.counts = np.bincount(data[1], minlength=10).tolist()
        self.cache = {}
        self.trainings = 0
        self.seconds = 0.0

    def scores(self, key, make_loss, class_weight=None):
        if key not in self.cache:
            start = time.perf_counter()
            self.cache[key] = [train_test(make_loss, self.data, 1000 + k, self.epochs, class_weight, self.build)
                               for k in range(self.seeds)]
            self.trainings += self.seeds
            self.seconds += time.perf_counter() - start
        return self.cache[key]

    def losstune_scores(self, build):
        """`build()` -> a losstune loss; keyed by its config."""
        key = "losstune " + json.dumps(build().get_config(), sort_keys=True, default=str)
        return self.scores(key, build)


def space_candidates(space, limit=None):
    """score_rule.py's candidates that lie in `space` (logit adjustment with class weights is no longer in it)."""
    weightable = space.weightable()
    out = []
    for label, family, params, power in score_rule.fixed_candidates() + score_rule.random_candidates(3):
        if family not in space.families or (power and family not in weightable):
            continue
        out.append((label, family, params, power))
    if limit:
        rank = {lab: i for i, lab in enumerate(STRONGEST)}
        out = sorted((c for c in out if c[0] in rank), key=lambda c: rank[c[0]])[:limit]
    return out


def loss_key(loss):
    return (loss.family, tuple(sorted((k, repr(v)) for k, v in loss.params.items())), repr(loss.power))


def lt_search(data, space, trials, epochs, score, race, name):
    """One search on the long-tailed split; what it picked and what it cost."""
    x_tr, y_tr, x_va, y_va = data[:4]
    directory = tempfile.mkdtemp()
    start = time.perf_counter()
    result = losstune.search(mlp, x_tr, y_tr, validation_data=(x_va, y_va), space=space, tuner="bayesian",
                             max_trials=trials, epochs=epochs, batch_size=32, score=score, race=race,
                             directory=directory, stream=io.StringIO())
    seconds = time.perf_counter() - start
    BUILT.clear()
    best = result.best_trial
    keys = [loss_key(t.loss) for t in result.trials]
    duplicates = len(keys) - len(set(keys))
    trainings = sum(max(1, len(t.scores)) for t in result.trials)
    mean, se = best.score, best.se
    info = dict(name=name, pick=best.describe_loss(), recipe=best.recipe, note=result.pick_note,
                best_mean=(result.best_mean_trial.describe_loss() if result.best_mean_trial is not best else None),
                val=mean, se=se, repeats=len(best.scores), trials=len(result.trials),
                completed=len(result.completed), trainings=trainings, seconds=seconds, duplicates=duplicates,
                warnings=result.warnings(), trial_id=best.trial_id,
                build=lambda: best.loss.build("multiclass", class_counts=result.context.class_counts,
                                              from_logits=result.context.from_logits),
                table=result.table())
    shutil.rmtree(directory, ignore_errors=True)
    return info


def describe_val(info):
    return f"{info['val']:.4f}" + (f" +/- {info['se']:.4f} ({info['repeats']})" if info["se"] is not None else "")


def target(diff):
    """Whether `pick >= reference - TOL` holds: on the mean, and also at the CI's lower end."""
    if diff["diff_mean"] < -TOL:
        return "NO"
    return "yes (CI too)" if diff["diff_ci"][0] >= -TOL else "yes (mean)"


def ci_text(d):
    return f"{d['diff_mean']:+.4f} [{d['diff_ci'][0]:+.4f}, {d['diff_ci'][1]:+.4f}]"


def long_tailed_case(levels, budgets, epochs, seeds, race, peek_limit):
    base = LossSpace.coerce("imbalanced_multiclass")
    old_space = LossSpace.from_dict({k: v for k, v in base.to_dict().items() if k != "recipes"})
    candidates = space_candidates(base, peek_limit)
    modes = [("new", dict(space="imbalanced_multiclass", score="last_quarter", race=race)),
             ("old", dict(space=old_space, score="best", race=0))]
    print(f"\n#### Long-tailed validation: split as score_rule.py (stratified {score_rule.VAL_FRACTION:.0%} of the "
          f"long-tailed training pool); searches: bayesian, budgets {budgets}, {epochs} epochs, batch 32; new "
          f"defaults = score=last_quarter + recipes + race={race}; old = score=best, race=0, no recipes. "
          f"Test: {seeds} fresh seeds (1000 + k), last epoch, balanced test set. Peek: {len(candidates)} "
          f"candidates of the space (score_rule.py's list): " + ", ".join(c[0] for c in candidates), flush=True)
    summary, costs = [], {"new": [0, 0, 0.0], "old": [0, 0, 0.0]}
    for imbalance in levels:
        data = score_rule.split_data(imbalance)
        x_tr, y_tr = data[0], data[1]
        counts = np.bincount(y_tr, minlength=10)
        print(f"\n=== imbalance {imbalance}:1: {len(y_tr)} training (per class {counts.tolist()}), {len(data[3])} "
              f"validation (per class {np.bincount(data[3], minlength=10).tolist()}), {len(data[5])} test", flush=True)
        retrain = Retrainer(data, seeds, epochs)

        # searches
        searches = []
        for mode, kwargs in modes:
            for budget in budgets:
                info = lt_search(data, kwargs["space"], budget, epochs, kwargs["score"], kwargs["race"],
                                 f"{mode} defaults, {budget} trials")
                info["mode"] = mode
                searches.append(info)
                costs[mode][0] += info["trials"]
                costs[mode][1] += info["trainings"]
                costs[mode][2] += info["seconds"]
                print(f"  search {info['name']}: pick {info['pick']}"
                      + (f" [recipe: {info['recipe']}]" if info["recipe"] else "")
                      + f", validation {describe_val(info)}; {info['trials']} trials ({info['completed']} completed), "
                      f"{info['trainings']} trainings, {info['seconds']:.0f} s, {info['duplicates']} duplicates",
                      flush=True)
                print("    " + info["table"].replace("\n", "\n    "))
        # hand recipes
        n, n_classes = len(y_tr), 10
        cw = {c: n / (n_classes * counts[c]) for c in range(n_classes)}
        hand = {
            "plain cross-entropy": retrain.scores("keras sparse CE", keras.losses.SparseCategoricalCrossentropy),
            "CE + class_weight (inverse freq.)": retrain.scores(
                "keras sparse CE + class_weight", keras.losses.SparseCategoricalCrossentropy, class_weight=cw),
            "logit adjustment tau 1": retrain.losstune_scores(
                lambda: score_rule.build_loss("logit_adjusted", {"tau": 1.0}, None, retrain.counts)),
        }
        # the peek
        peek = {}
        for label, family, params, power in candidates:
            t0 = time.perf_counter()
            peek[label] = retrain.losstune_scores(
                lambda f=family, p=params, w=power: score_rule.build_loss(f, p, w, retrain.counts))
            print(f"  peek {label:<55} test " + " ".join(f"{s:.3f}" for s in peek[label])
                  + f"  mean {np.mean(peek[label]):.4f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        # the picks
        for info in searches:
            info["test"] = retrain.losstune_scores(info["build"])
            print(f"  retrain {info['name']}: {info['pick']}: test "
                  + " ".join(f"{s:.3f}" for s in info["test"]) + f"  mean {np.mean(info['test']):.4f}", flush=True)
        for label, s in hand.items():
            print(f"  hand {label}: test " + " ".join(f"{v:.3f}" for v in s) + f"  mean {np.mean(s):.4f}")
        print(f"  retraining: {retrain.trainings} trainings, {retrain.seconds:.0f} s", flush=True)

        best_hand = max(hand, key=lambda k: np.mean(hand[k]))
        peek_best = max(peek, key=lambda k: np.mean(peek[k]))
        plain = hand["plain cross-entropy"]

        def ms(s):
            return f"{np.mean(s):.4f} +/- {np.std(s, ddof=1):.4f}"

        rows = []
        for label, s in hand.items():
            d = paired_difference(s, hand[best_hand])
            rows.append((label + (" (best hand)" if label == best_hand else ""), ms(s),
                         "-" if label == best_hand else ci_text(d), "", "", "", ""))
        d = paired_difference(peek[peek_best], hand[best_hand])
        rows.append((f"PEEK best: {peek_best}", ms(peek[peek_best]), ci_text(d), "", "", "", ""))
        for info in searches:
            s = info["test"]
            vs_hand, vs_peek, vs_plain = (paired_difference(s, hand[best_hand]), paired_difference(s, peek[peek_best]),
                                          paired_difference(s, plain))
            low, high = vs_hand["diff_ci"]
            real = "above, real" if low > 0 else ("below, real" if high < 0 else "not separable")
            rows.append((f"{info['name']}: {info['pick']}", ms(s), f"{ci_text(vs_hand)} {real}", ci_text(vs_peek),
                         ci_text(vs_plain), target(vs_hand), target(vs_peek)))
            summary.append((f"{imbalance}:1", info["name"], info["pick"] + (" [recipe]" if info["recipe"] else ""),
                            f"{np.mean(s):.4f}", f"{vs_hand['diff_mean']:+.4f}", f"{vs_peek['diff_mean']:+.4f}",
                            target(vs_hand), target(vs_peek), str(info["duplicates"])))
        print(f"\n  imbalance {imbalance}:1, test macro-F1 ({seeds} seeds, last epoch); differences: mean and 95% CI "
              f"(paired t over the seeds); best hand recipe: {best_hand}; peek best: {peek_best}")
        print(_common.table(rows, ("row", "test macro-F1 mean +/- sd", "vs best hand recipe [95% CI]",
                                   "vs peek best [95% CI]", "vs plain CE [95% CI]", f"pick >= hand - {TOL}",
                                   f"pick >= peek - {TOL}")))
        rows = [(i["name"], i["pick"], i["recipe"] or "-", describe_val(i), i["best_mean"] or "-", str(i["trials"]),
                 str(i["trainings"]), f"{i['seconds']:.0f}", f"{60 * i['trials'] / i['seconds']:.2f}",
                 f"{60 * i['trainings'] / i['seconds']:.2f}", str(i["duplicates"]), str(len(i["warnings"])))
                for i in searches]
        print(f"\n  imbalance {imbalance}:1, the searches")
        print(_common.table(rows, ("search", "pick", "recipe", "validation mean +/- SE (repeats)",
                                   "best mean (if not the pick)", "trials", "trainings", "wall s", "trials/min",
                                   "trainings/min", "duplicates", "warnings")), flush=True)
    print(f"\n=== long-tailed validation, summary (test macro-F1, {seeds}-seed means; targets on the means, "
          "'CI too' when the 95% CI's lower end also clears -0.01)")
    print(_common.table(summary, ("imbalance", "search", "pick", "test", "vs best hand", "vs peek",
                                  f"pick >= hand - {TOL}", f"pick >= peek - {TOL}", "duplicates")))
    (nt, nn, ns), (ot, on, os_) = costs["new"], costs["old"]
    print(f"cost: new defaults {60 * nt / ns:.2f} trials/min, {60 * nn / ns:.2f} trainings/min ({nt} trials, {nn} "
          f"trainings, {ns:.0f} s); old defaults {60 * ot / os_:.2f} trials/min, {60 * on / os_:.2f} trainings/min "
          f"({ot} trials, {on} trainings, {os_:.0f} s); new/old trials per minute {(nt / ns) / (ot / os_):.2f}",
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="imbalance 50, budgets 3 and 4, 2 epochs, 2 seeds, race=1, 4 peek candidates")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--peek", type=int, default=8,
                        help="the N strongest peek candidates of score_rule.py's table (0: all of the space's)")
    parser.add_argument("--skip-balanced", action="store_true", help="only the long-tailed case")
    parser.add_argument("--skip-long-tailed", action="store_true", help="only today's (balanced) case")
    args = parser.parse_args()
    if args.quick:
        levels, budgets, epochs, seeds, race, peek = [50], [3, 4], 2, 2, 1, 4
        trials, pair_trials, pair_epochs, pairs_n = 3, 2, 2, (600, 300, 300)
    else:
        levels, budgets, epochs, seeds, race, peek = [10, 50, 100], [8, 30], args.epochs, args.seeds, 3, args.peek or None
        trials, pair_trials, pair_epochs, pairs_n = 30, 10, 15, (3000, 1000, 1000)
    print(_common.machine())
    start = time.perf_counter()
    if not args.skip_long_tailed:
        long_tailed_case(levels, budgets, epochs, seeds, race, peek)
    if not args.skip_balanced:
        balanced_case(trials, epochs, seeds, levels, pair_trials, pair_epochs, pairs_n, race)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
