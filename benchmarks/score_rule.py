"""Which trial score resists noise, and which loss recipes earn a place right after the baseline (issue 10).

Setting: long-tailed digits at imbalance 10, 50 and 100. The validation split is as long-tailed as the
training data: it is carved from the long-tailed training pool (stratified, 12% of each class, at least one
example for a class with two or more), as a user would carve it from their own data. The balanced test set
(40 per class) stays the test set. An MLP (Dense 64 relu -> Dense 10 softmax), Adam (default learning
rate), batch 32, 40 epochs, trained with plain Keras (no search). Every candidate loss is trained with 3 seeds
(`keras.utils.set_random_seed(seed)` before building and before `fit`; same data split for every seed); a
callback records validation and test macro-F1 (sklearn, argmax) after every epoch.

Score rules, each read from a validation curve: the best epoch (KerasTuner's default: the maximum over
epochs), the last epoch, the mean of the last 3 / 5 / 10 epochs, the best of an EMA-smoothed curve
(alpha 0.3). For each rule and imbalance:
  - Spearman rank correlation between the candidates' rule scores (mean over seeds) and their final test
    score (test macro-F1 after the last epoch, mean over seeds: what a user gets when retraining the picked
    loss for the full budget), and against the "matched" test score (the test curve read at the epoch(s)
    the rule reads: the best validation epoch, the last epoch, the last k epochs, the best EMA epoch);
  - regret: final test score of the best candidate minus that of the candidate the rule picks (both 3-seed
    means), for single-seed searches (each seed its own search, averaged over seeds) and for 3-seed-mean
    searches; also averaged over random 8-candidate subsets (a small search budget);
  - optimistic bias: the pick's validation score under the rule minus its final test score;
  - noise: the seed-to-seed standard deviation of each candidate's rule score (mean over candidates),
    beside the gaps between the top candidates' mean rule scores.
Then every candidate's mean test macro-F1 per imbalance, ranked (the recipes).

    python benchmarks/score_rule.py                 # 17 candidates x 3 seeds x 3 imbalances, 40 epochs
    python benchmarks/score_rule.py --quick         # 4 candidates, 2 seeds, imbalance 50, 4 epochs
    python benchmarks/score_rule.py --save runs.json  # also keep the curves; --load runs.json re-analyses them
"""

import argparse
import itertools
import json
import math
import os
import time
import tomllib

import _common
import keras
import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import f1_score

import losstune
from losstune import datasets

VAL_FRACTION = 0.12
EMA_ALPHA = 0.3


# --------------------------------------------------------------------------------------------------
# Candidates
# --------------------------------------------------------------------------------------------------
def fixed_candidates():
    """(label, family, params, class-weight power or None)."""
    return [
        ("crossentropy", "crossentropy", {}, None),
        ("crossentropy w0.5", "crossentropy", {}, 0.5),
        ("crossentropy w1", "crossentropy", {}, 1.0),
        ("class_balanced b0.999", "class_balanced", {"beta": 0.999}, None),
        ("class_balanced b0.9999", "class_balanced", {"beta": 0.9999}, None),
        ("logit_adjusted t1", "logit_adjusted", {"tau": 1.0}, None),
        ("logit_adjusted t0.5", "logit_adjusted", {"tau": 0.5}, None),
        ("logit_adjusted t1 w1", "logit_adjusted", {"tau": 1.0}, 1.0),
        ("ldam m0.5 s30", "ldam", {"max_margin": 0.5, "scale": 30.0}, None),
        ("ldam m0.5 s30 w1", "ldam", {"max_margin": 0.5, "scale": 30.0}, 1.0),
        ("focal g1 w1", "focal", {"gamma": 1.0}, 1.0),
        ("focal g2 w1", "focal", {"gamma": 2.0}, 1.0),
        ("poly1 e1 w1", "poly1", {"epsilon": 1.0}, 1.0),
        ("label_smoothing 0.1 w1", "crossentropy", {"label_smoothing": 0.1}, 1.0),
    ]


def random_candidates(n, seed=2024):
    """n random points of the bundled `imbalanced_multiclass` space (uniform family, then each range).

    The TOML file is read directly (min/max/sampling or values per hyperparameter; `class_weights.power`
    for the families that take class weights), so this sampler does not depend on losstune's space classes.
    """
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "search_spaces",
                        "imbalanced_multiclass.toml")
    with open(path, "rb") as fh:
        space = tomllib.load(fh)
    rng = np.random.default_rng(seed)

    def draw(spec):
        if not isinstance(spec, dict):
            return spec
        if "values" in spec:
            return spec["values"][int(rng.integers(len(spec["values"])))]
        lo, hi, sampling = float(spec["min"]), float(spec["max"]), spec.get("sampling", "linear")
        if sampling == "log":
            return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        if sampling == "reverse_log":
            return float(1.0 - math.exp(rng.uniform(math.log(1.0 - hi), math.log(1.0 - lo))))
        return float(rng.uniform(lo, hi))

    power_spec = space.get("class_weights", {}).get("power")
    out = []
    names = list(space["families"])
    for i in range(n):
        family = names[int(rng.integers(len(names)))]
        params = {k: draw(spec) for k, spec in (space["families"][family] or {}).items()}
        weightable = getattr(losstune.families.get(family), "weightable", True)
        power = draw(power_spec) if (power_spec is not None and weightable) else None
        desc = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        label = f"random{i + 1}: {family} {desc}" + (f" w{power:.2f}" if power else "")
        out.append((label, family, params, power))
    return out


def build_loss(family, params, power, counts):
    weights = losstune.class_weights_from_counts(counts, power, "multiclass") if power else None
    return losstune.families.get(family).build(params, task="multiclass", class_counts=counts,
                                               class_weights=weights)


# --------------------------------------------------------------------------------------------------
# Data and training
# --------------------------------------------------------------------------------------------------
def split_data(imbalance, seed=0):
    """Long-tailed training pool -> (training, stratified long-tailed validation); balanced test set."""
    data = datasets.long_tailed_digits(imbalance=imbalance, seed=seed, val_per_class=0)
    rng = np.random.default_rng(1000 + seed)
    val = []
    for c in np.unique(data.y_train):
        idx = np.flatnonzero(data.y_train == c)
        k = 0 if len(idx) < 2 else max(1, int(round(VAL_FRACTION * len(idx))))
        val.append(rng.choice(idx, size=k, replace=False))
    val = np.concatenate(val)
    train = np.setdiff1d(np.arange(len(data.y_train)), val)
    train = rng.permutation(train)
    return (data.x_train[train], data.y_train[train], data.x_train[val], data.y_train[val],
            data.x_test, data.y_test)


def macro_f1(y, p):
    return float(f1_score(y, p, average="macro", zero_division=0))


class Curves(keras.callbacks.Callback):
    """Validation and test macro-F1 after every epoch (one forward pass over both sets)."""

    def __init__(self, x_val, y_val, x_test, y_test):
        super().__init__()
        self.x = np.concatenate([x_val, x_test])
        self.n_val, self.y_val, self.y_test = len(y_val), y_val, y_test
        self.val, self.test = [], []

    def on_epoch_end(self, epoch, logs=None):
        pred = keras.ops.convert_to_numpy(self.model(self.x, training=False)).argmax(1)
        self.val.append(macro_f1(self.y_val, pred[: self.n_val]))
        self.test.append(macro_f1(self.y_test, pred[self.n_val:]))


def train_one(cand, data, seed, epochs):
    _, family, params, power = cand
    x_tr, y_tr, x_va, y_va, x_te, y_te = data
    counts = np.bincount(y_tr, minlength=10).tolist()
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(), loss=build_loss(family, params, power, counts),
                  steps_per_execution=4)
    cb = Curves(x_va, y_va, x_te, y_te)
    keras.utils.set_random_seed(seed)
    model.fit(x_tr, y_tr, batch_size=32, epochs=epochs, shuffle=True, verbose=0, callbacks=[cb])
    keras.backend.clear_session()
    return cb.val, cb.test


# --------------------------------------------------------------------------------------------------
# Score rules
# --------------------------------------------------------------------------------------------------
def ema(curve, alpha=EMA_ALPHA):
    out, s = [], curve[0]
    for v in curve:
        s = alpha * v + (1 - alpha) * s
        out.append(s)
    return np.asarray(out)


def _window(k):
    def rule(v, t):
        k_ = min(k, len(v))
        return float(np.mean(v[-k_:])), float(np.mean(t[-k_:]))
    return rule


def _best(v, t):
    i = int(np.argmax(v))
    return float(v[i]), float(t[i])


def _ema_best(v, t):
    s = ema(v)
    i = int(np.argmax(s))
    return float(s[i]), float(t[i])


RULES = {  # name -> f(val curve, test curve) -> (rule score, test read at the epoch(s) the rule reads)
    "best epoch": _best,
    "last epoch": _window(1),
    "mean last 3": _window(3),
    "mean last 5": _window(5),
    "mean last 10": _window(10),
    f"EMA({EMA_ALPHA}) best": _ema_best,
}


# --------------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------------
def analyse(labels, val, test, n_subsets=2000, subset_size=8, rng_seed=0):
    """val, test: arrays [candidate, seed, epoch]. Returns per-rule figures and the recipe table."""
    n_c, n_s, _ = val.shape
    final = test[:, :, -1]                  # [c, s]
    truth = final.mean(1)                   # expected retrain outcome per candidate
    rng = np.random.default_rng(rng_seed)
    size = min(subset_size, n_c)
    subsets = [rng.choice(n_c, size=size, replace=False) for _ in range(n_subsets)]
    out = {}
    for name, rule in RULES.items():
        score = np.zeros((n_c, n_s))
        matched = np.zeros((n_c, n_s))
        for c in range(n_c):
            for s in range(n_s):
                score[c, s], matched[c, s] = rule(val[c, s], test[c, s])
        mean_score = score.mean(1)
        rho_final = spearmanr(mean_score, truth).statistic if n_c > 2 else float("nan")
        rho_matched = spearmanr(mean_score, matched.mean(1)).statistic if n_c > 2 else float("nan")
        # single-seed searches
        picks1 = [int(np.argmax(score[:, s])) for s in range(n_s)]
        regret1 = float(np.mean([truth.max() - truth[p] for p in picks1]))
        bias1 = float(np.mean([score[p, s] - final[p, s] for s, p in enumerate(picks1)]))
        # searches that average k seeds per candidate, k = 1 .. n_s (mean over the seed combinations)
        regrets = [float(np.mean([truth.max() - truth[int(np.argmax(score[:, list(comb)].mean(1)))]
                                  for comb in itertools.combinations(range(n_s), k)]))
                   for k in range(1, n_s + 1)]
        # 3-seed-mean search
        pick3 = int(np.argmax(mean_score))
        regret3 = float(truth.max() - truth[pick3])
        bias3 = float(mean_score[pick3] - truth[pick3])
        # small budgets: random subsets of candidates
        sub1, sub3 = [], []
        for sub in subsets:
            best = truth[sub].max()
            sub3.append(best - truth[sub[int(np.argmax(mean_score[sub]))]])
            for s in range(n_s):
                sub1.append(best - truth[sub[int(np.argmax(score[sub, s]))]])
        # noise vs gaps
        sd = score.std(1, ddof=1) if n_s > 1 else np.zeros(n_c)
        order = np.argsort(-mean_score)
        gap12 = float(mean_score[order[0]] - mean_score[order[1]]) if n_c > 1 else float("nan")
        gap13 = float(mean_score[order[0]] - mean_score[order[2]]) if n_c > 2 else float("nan")
        top5_sd = float(sd[order[:5]].mean())
        out[name] = dict(rho_final=rho_final, rho_matched=rho_matched, regret1=regret1, regret3=regret3,
                         regrets=regrets,
                         sub_regret1=float(np.mean(sub1)), sub_regret3=float(np.mean(sub3)),
                         bias1=bias1, bias3=bias3, sd=float(sd.mean()), top5_sd=top5_sd, gap12=gap12,
                         gap13=gap13, picks1=[labels[p] for p in picks1], pick3=labels[pick3],
                         matched_pick3=float(matched[pick3].mean()))
    recipes = sorted(((labels[c], float(truth[c]), float(final[c].std(ddof=1)) if n_s > 1 else 0.0)
                      for c in range(n_c)), key=lambda r: -r[1])
    test_sd = float(final.std(1, ddof=1).mean()) if n_s > 1 else 0.0
    half = val.shape[2] // 2
    volatility = (float(np.abs(np.diff(val[:, :, half:], axis=2)).mean()),
                  float(np.abs(np.diff(test[:, :, half:], axis=2)).mean()))
    return out, recipes, (test_sd, volatility)


def repeats_needed(sd, gap):
    """Seeds per candidate so that a difference of `gap` is 2 standard errors of a paired-free difference."""
    if not gap or gap <= 0 or not math.isfinite(gap):
        return "inf"
    return str(max(1, math.ceil(8 * sd * sd / (gap * gap))))


def report(results, levels, n_seeds):
    print()
    for imbalance in levels:
        figures, recipes, test_sd, info = results[str(imbalance)]
        print(f"== imbalance {imbalance}:1 -- {info}")
        rows = []
        for name, f in figures.items():
            rows.append((name, f"{f['rho_final']:+.3f}", f"{f['rho_matched']:+.3f}", f"{f['regret1']:.4f}",
                         f"{f['regret3']:.4f}", f"{f['sub_regret1']:.4f}", f"{f['sub_regret3']:.4f}",
                         f"{f['bias1']:+.4f}", f"{f['bias3']:+.4f}"))
        print(_common.table(rows, ("rule", "rho vs final test", "rho vs matched test", "regret 1-seed",
                                   f"regret {n_seeds}-seed", "regret8 1-seed", f"regret8 {n_seeds}-seed",
                                   "bias 1-seed", f"bias {n_seeds}-seed")))
        rows = []
        for name, f in figures.items():
            rows.append((name, f"{f['sd']:.4f}", f"{f['top5_sd']:.4f}", f"{f['gap12']:.4f}", f"{f['gap13']:.4f}",
                         repeats_needed(f['top5_sd'], f['gap13']), repeats_needed(f['top5_sd'], 0.01),
                         f['pick3'], " | ".join(f['picks1'])))
        print(_common.table(rows, ("rule", "seed sd (all)", "seed sd (top 5)", "gap #1-#2", "gap #1-#3",
                                   "seeds for #1-#3", "seeds for 0.01", f"{n_seeds}-seed pick",
                                   "1-seed picks")))
        sd_t, (vol_v, vol_t) = test_sd
        rows = [(name, *[f"{r:.4f}" for r in f["regrets"]]) for name, f in figures.items()]
        print(_common.table(rows, ("rule", *[f"regret, mean of {k} seed{'s' if k > 1 else ''}"
                                             for k in range(1, n_seeds + 1)])))
        print(f"test macro-F1 after the last epoch, seed sd (mean over candidates): {sd_t:.4f}; mean |change| "
              f"between consecutive epochs over the second half of training: validation {vol_v:.4f}, "
              f"test {vol_t:.4f}")
        best = recipes[0][1]
        rows = [(i + 1, lab, f"{m:.4f} +/- {s:.4f}", f"{m - best:+.4f}") for i, (lab, m, s) in enumerate(recipes)]
        print(_common.table(rows, ("rank", "candidate", f"test macro-F1 ({n_seeds} seeds, last epoch)",
                                   "vs best")))
        print()
    # summary over imbalances
    names = list(RULES)
    rows = []
    for name in names:
        per = [results[str(i)][0][name] for i in levels]
        rows.append((name, f"{np.mean([p['rho_final'] for p in per]):+.3f}",
                     f"{min(p['rho_final'] for p in per):+.3f}",
                     f"{np.mean([p['regret1'] for p in per]):.4f}", f"{np.mean([p['regret3'] for p in per]):.4f}",
                     f"{np.mean([p['sub_regret1'] for p in per]):.4f}",
                     f"{np.mean([p['sub_regret3'] for p in per]):.4f}",
                     f"{np.mean([p['bias1'] for p in per]):+.4f}", f"{np.mean([p['sd'] for p in per]):.4f}",
                     " / ".join(f"{np.mean([p['regrets'][k] for p in per]):.4f}" for k in range(n_seeds))))
    print("== over imbalances " + ", ".join(map(str, levels)) + " (mean; min for rho)")
    print(_common.table(rows, ("rule", "mean rho", "min rho", "regret 1-seed", f"regret {n_seeds}-seed",
                               "regret8 1-seed", f"regret8 {n_seeds}-seed", "bias 1-seed", "seed sd",
                               "regret by seeds averaged " + "/".join(map(str, range(1, n_seeds + 1))))))
    # recipes across imbalances
    labels = [r[0] for r in results[str(levels[0])][1]]
    table = {lab: [] for lab in labels}
    for i in levels:
        recipes = results[str(i)][1]
        for rank, (lab, m, _) in enumerate(recipes):
            table[lab].append((m, rank + 1, m - recipes[0][1]))
    rows = sorted(((lab, *[f"{m:.4f} (#{r}, {d:+.3f})" for m, r, d in v], f"{np.mean([x[1] for x in v]):.1f}")
                   for lab, v in table.items()), key=lambda r: float(r[-1]))
    print(f"\n== recipes: test macro-F1 ({n_seeds}-seed mean, last epoch), rank and gap to the best, per imbalance")
    print(_common.table(rows, ("candidate", *[f"{i}:1" for i in levels], "mean rank")))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 candidates, 2 seeds, imbalance 50, 4 epochs")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--random", type=int, default=3, help="random points of the bundled space")
    parser.add_argument("--save", help="write the curves to this JSON file")
    parser.add_argument("--load", help="analyse curves saved by --save instead of training")
    args = parser.parse_args()
    if args.load:
        with open(args.load) as fh:
            saved = json.load(fh)
        levels, n_seeds, runs, infos = saved["levels"], saved["seeds"], saved["runs"], saved["info"]
        print(saved["machine"])
        print(saved["header"])
    else:
        cands = fixed_candidates() + random_candidates(args.random)
        if args.quick:
            cands, epochs, seeds, levels = cands[:2] + cands[5:6] + cands[-1:], 4, [0, 1], [50]
        else:
            epochs, seeds, levels = args.epochs, list(range(args.seeds)), [10, 50, 100]
        n_seeds = len(seeds)
        machine = _common.machine()
        header = (f"{len(cands)} candidates x {n_seeds} seeds x imbalance {levels}; MLP 64, Adam, batch 32, "
                  f"{epochs} epochs; validation: stratified {VAL_FRACTION:.0%} of the long-tailed training pool; "
                  f"test: balanced, 40 per class")
        print(machine)
        print(header, flush=True)
        start = time.perf_counter()
        runs, infos = {}, {}
        for imbalance in levels:
            data = split_data(imbalance)
            info = (f"{len(data[1])} training (per class {np.bincount(data[1], minlength=10).tolist()}), "
                    f"{len(data[3])} validation (per class {np.bincount(data[3], minlength=10).tolist()}), "
                    f"{len(data[5])} test")
            print(f"imbalance {imbalance}:1: {info}", flush=True)
            infos[str(imbalance)] = info
            runs[str(imbalance)] = {}
            for cand in cands:
                t0 = time.perf_counter()
                curves = [train_one(cand, data, s, epochs) for s in seeds]
                runs[str(imbalance)][cand[0]] = curves
                print(f"  {cand[0]:<55} val last " + " ".join(f"{v[-1]:.3f}" for v, _ in curves)
                      + "  test last " + " ".join(f"{t[-1]:.3f}" for _, t in curves)
                      + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
        print(f"training: {time.perf_counter() - start:.0f} s", flush=True)
        if args.save:
            with open(args.save, "w") as fh:
                json.dump(dict(machine=machine, header=header, levels=levels, seeds=n_seeds, runs=runs,
                               info=infos), fh)
    results = {}
    for imbalance in levels:
        per = runs[str(imbalance)]
        labels = list(per)
        val = np.array([[c[0] for c in per[lab]] for lab in labels])
        test = np.array([[c[1] for c in per[lab]] for lab in labels])
        results[str(imbalance)] = (*analyse(labels, val, test), infos[str(imbalance)])
    report(results, levels, n_seeds)


if __name__ == "__main__":
    main()
