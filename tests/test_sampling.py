"""The validation sample's own error (losstune/sampling.py) against independent references: scikit-learn,
Keras's own metrics, hand formulas and a loop-form recomputation of the documented bootstrap draws."""

import math
import os
import warnings

import numpy as np
import pytest
from sklearn.metrics import (average_precision_score, balanced_accuracy_score, f1_score, roc_auc_score)

from losstune import sampling, stats

RNG = np.random.default_rng(0)
N, C = 40, 5
IDS = RNG.integers(0, C - 1, size=N)  # class C-1 never occurs in y_true
PROBS = RNG.dirichlet(np.ones(C), size=N)
PROBS[:, C - 1] = 0.0  # ... and is never predicted
PROBS /= PROBS.sum(1, keepdims=True)
W = RNG.random(N) * 2
BIN_Y = RNG.integers(0, 2, size=N)
SCORES = np.round(RNG.random(N), 1)  # rounded: ties


def sk_f1(y, p, w=None, c=C):
    return f1_score(y, p.argmax(1), labels=range(c), average="macro", zero_division=0, sample_weight=w)


# --- metrics against scikit-learn and Keras -------------------------------------------------------------
@pytest.mark.parametrize("weights", [None, W], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("one_hot", [False, True], ids=["ids", "one_hot"])
def test_macro_f1_matches_sklearn(weights, one_hot):
    y = np.eye(C)[IDS] if one_hot else IDS
    assert sampling.macro_f1(y, PROBS, weights) == pytest.approx(sk_f1(IDS, PROBS, weights), abs=1e-12)


@pytest.mark.parametrize("weights", [None, W], ids=["unweighted", "weighted"])
def test_balanced_accuracy_matches_sklearn(weights):
    ref = balanced_accuracy_score(IDS, PROBS.argmax(1), sample_weight=weights)
    assert sampling.balanced_accuracy(IDS, PROBS, weights) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("weights", [None, W], ids=["unweighted", "weighted"])
def test_aucs_match_sklearn(weights):
    ap = average_precision_score(BIN_Y, SCORES, sample_weight=weights)
    assert sampling.pr_auc(BIN_Y, SCORES[:, None], weights) == pytest.approx(ap, abs=1e-12)
    roc = roc_auc_score(BIN_Y, -SCORES, sample_weight=weights)  # SCORES as distances: similarity = -distance
    assert sampling.pair_auc(BIN_Y, SCORES[:, None], weights) == pytest.approx(roc, abs=1e-12)
    assert sampling.roc_auc(BIN_Y, SCORES, weights) == pytest.approx(roc_auc_score(BIN_Y, SCORES,
                                                                                   sample_weight=weights), abs=1e-12)


def test_multilabel_pr_auc_is_sklearn_macro_average_precision():
    y = (RNG.random((N, 3)) < 0.3).astype(int)
    y[:, 2] = 0  # a label without positives: AP 0, as sklearn
    s = RNG.random((N, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = average_precision_score(y, s, average="macro")
    assert sampling.pr_auc(y, s) == pytest.approx(ref, abs=1e-12)


def test_mae_is_the_weighted_mean_absolute_error():
    y, p = RNG.normal(size=N), RNG.normal(size=(N, 1))
    assert sampling.mae(y, p, W) == pytest.approx(np.sum(W * np.abs(y - p[:, 0])) / W.sum(), abs=1e-12)


def test_macro_f1_matches_keras_including_an_absent_class():
    from losstune.objectives import MacroF1
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(C), size=N).astype("float32")
    for y, p in [(rng.integers(0, C, size=N), probs), (IDS, PROBS.astype("float32"))]:
        metric = MacroF1()
        metric.update_state(y, p)
        assert sampling.macro_f1(y, p) == pytest.approx(float(metric.result()), abs=1e-6)
    # Keras's F1Score counts a class absent from y_true and from the predictions as F1 = 0 in the mean:
    per_class = f1_score(IDS, PROBS.argmax(1), labels=range(C), average=None, zero_division=0)
    assert per_class[C - 1] == 0 and sampling.macro_f1(IDS, PROBS) == pytest.approx(per_class.sum() / C)


def test_metric_fn_names():
    assert sampling.metric_fn("val_macro_f1") is sampling.macro_f1
    assert sampling.metric_fn("pair_auc") is sampling.pair_auc
    assert sampling.metric_fn("val_mae") is sampling.mae
    assert sampling.metric_fn("val_my_metric") is None


def test_batched_index_equals_row_by_row():
    index = sampling.stratified_indices(IDS, 6, np.random.default_rng(1))
    for name in ("macro_f1", "balanced_accuracy"):
        f = sampling.metric_fn(name)
        rows = [f(IDS[i], PROBS[i], W[i]) for i in index]
        np.testing.assert_allclose(f(IDS, PROBS, W, index=index), rows, atol=1e-12)
    bindex = sampling.stratified_indices(BIN_Y, 6, np.random.default_rng(1))
    np.testing.assert_allclose(sampling.pr_auc(BIN_Y, SCORES, index=bindex),
                               [sampling.pr_auc(BIN_Y[i], SCORES[i]) for i in bindex], atol=1e-12)


# --- the balanced prior -----------------------------------------------------------------------------------
def test_balanced_prior_weights():
    w = sampling.prior_weights(IDS, C, "balanced")
    present = np.unique(IDS)
    for c in present:
        assert w[IDS == c].sum() == pytest.approx(N / present.size)
    np.testing.assert_array_equal(sampling.prior_weights(IDS, C, "validation"), np.ones(N))
    np.testing.assert_allclose(sampling.prior_weights(np.eye(C)[IDS], C, "balanced"), w)
    binary = sampling.prior_weights(np.array([0, 0, 0, 1]), 1, "balanced")  # binary: 2 classes
    np.testing.assert_allclose(binary, [4 / 6, 4 / 6, 4 / 6, 2.0])
    assert sampling.macro_f1(IDS, PROBS, w) == pytest.approx(sk_f1(IDS, PROBS, w), abs=1e-12)


def test_balanced_prior_equals_an_explicitly_rebalanced_copy():
    y = np.array([0] * 6 + [1] * 3 + [2] * 2)
    p = np.random.default_rng(4).dirichlet(np.ones(3), size=y.size)
    w = sampling.prior_weights(y, 3, "balanced")
    reps = np.array([1, 2, 3])[y]  # replicate: each class then has 6 examples
    y_copy, p_copy = np.repeat(y, reps), np.repeat(p, reps, axis=0)
    assert np.all(np.bincount(y_copy) == 6)
    assert sampling.macro_f1(y, p, w) == pytest.approx(sampling.macro_f1(y_copy, p_copy), abs=1e-12)
    assert sampling.macro_f1(y, p, w) == pytest.approx(sk_f1(y_copy, p_copy, c=3), abs=1e-12)


# --- resampling and the bootstrap -------------------------------------------------------------------------
def test_stratified_indices_keep_each_class():
    index = sampling.stratified_indices(IDS, 50, np.random.default_rng(2))
    assert index.shape == (50, N)
    np.testing.assert_array_equal(IDS[index], np.broadcast_to(IDS, index.shape))
    for row in index:
        np.testing.assert_array_equal(np.bincount(IDS[row], minlength=C), np.bincount(IDS, minlength=C))
    assert len({tuple(r) for r in index}) > 1


def test_small_classes_share_one_stratum_so_their_own_error_counts():
    y = np.array([0] * 8 + [1] * 6 + [2, 3, 4])
    np.testing.assert_array_equal(sampling.strata_of(y, "macro_f1"), [0] * 8 + [1] * 6 + [-1] * 3)
    # only the singleton classes 2-4 are predicted differently by a and b: a class-per-stratum bootstrap
    # would always redraw the same three examples (no error at all); pooled, they vary
    p_a = np.eye(5)[y]
    p_b = np.eye(5)[np.where(y >= 2, 0, y)]
    got = sampling.paired_bootstrap([(y, p_a, None)], [(y, p_b, None)], "macro_f1", n_boot=200, seed=0)
    assert got.diff > 0.5 and got.se_sample > 0.05


def test_paired_bootstrap_against_a_hand_computation():
    rng = np.random.default_rng(5)
    n, n_boot, seed = 8, 5, 11
    ys = [np.array([0, 0, 0, 1, 1, 2, 2, 0]), np.array([1, 1, 0, 0, 2, 2, 2, 0])]
    a = [(y, rng.dirichlet(np.ones(3), size=n), None) for y in ys]
    b = [(y, rng.dirichlet(np.ones(3), size=n), rng.random(n)) for y in ys]
    got = sampling.paired_bootstrap(a, b, "val_macro_f1", n_boot=n_boot, seed=seed)

    # the documented draws: one rng; per repeat, per stratum in ascending order, rng.integers(0, m, (n_boot, m));
    # the strata are the classes, those with fewer than 5 examples pooled as one (id -1)
    draw = np.random.default_rng(seed)
    idx = []
    for y in ys:
        strata = np.array([c if np.sum(y == c) >= 5 else -1 for c in y])
        rows = np.empty((n_boot, n), dtype=int)
        for c in np.unique(strata):
            members = np.flatnonzero(strata == c)
            rows[:, members] = members[draw.integers(0, members.size, size=(n_boot, members.size))]
        idx.append(rows)
    d = [sk_f1(y, pa, wa, 3) - sk_f1(y, pb, wb, 3) for (y, pa, wa), (_, pb, wb) in zip(a, b)]
    reps = []
    for k in range(n_boot):
        per_repeat = []
        for r, ((y, pa, wa), (_, pb, wb)) in enumerate(zip(a, b)):
            i = idx[r][k]
            per_repeat.append(sk_f1(y[i], pa[i], None, 3) - sk_f1(y[i], pb[i], wb[i], 3))
        reps.append(sum(per_repeat) / len(per_repeat))
    mean = sum(reps) / n_boot
    se_sample = math.sqrt(sum((v - mean) ** 2 for v in reps) / (n_boot - 1))
    se_seed = abs(d[0] - d[1]) / 2  # the SE of the mean of two values: sd / sqrt(2) = |d0 - d1| / 2
    assert got.diff == pytest.approx(sum(d) / 2, abs=1e-12)
    assert got.se_sample == pytest.approx(se_sample, abs=1e-12)
    assert got.se_seed == pytest.approx(se_seed, abs=1e-12)
    assert got.se_seed == pytest.approx(stats.mean_se(d)[1], abs=1e-12)
    assert got.se == pytest.approx(math.sqrt(se_sample ** 2 + se_seed ** 2), abs=1e-12)
    assert (got.repeats, got.n_boot) == (2, n_boot)
    assert got.dominant == ("validation sample" if se_sample >= se_seed else "seeds")
    assert sampling.paired_bootstrap(a, b, "macro_f1", n_boot=n_boot, seed=seed) == got  # deterministic

    single = sampling.single_bootstrap(a[:1], "macro_f1", n_boot=n_boot, seed=seed)
    ref = [sk_f1(ys[0][i], a[0][1][i], None, 3) for i in idx[0]]
    assert single.diff == pytest.approx(sk_f1(ys[0], a[0][1], None, 3), abs=1e-12)
    assert single.se_sample == pytest.approx(np.std(ref, ddof=1), abs=1e-12)
    assert single.se_seed is None and single.se == single.se_sample and single.dominant == "validation sample"


def _noisy_classifier(n, rng):
    y = rng.integers(0, 3, size=n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y]
    return y, logits


def test_a_large_validation_set_shrinks_se_sample():
    rng = np.random.default_rng(6)
    se = {}
    for n in (40, 4000):
        y, la = _noisy_classifier(n, rng)
        lb = rng.normal(size=(n, 3)) + 1.0 * np.eye(3)[y]
        se[n] = sampling.paired_bootstrap([(y, la, None)], [(y, lb, None)], "macro_f1", n_boot=200).se_sample
    assert se[4000] * 5 <= se[40]


def test_bad_input_names_the_argument():
    y, p = _noisy_classifier(10, np.random.default_rng(7))
    with pytest.raises(ValueError, match="`b`"):
        sampling.paired_bootstrap([(y, p, None)], [(np.roll(y, 1), p, None)], "macro_f1", n_boot=5)
    with pytest.raises(ValueError, match="`b`"):
        sampling.paired_bootstrap([(y, p, None)], [(y, p, None)] * 2, "macro_f1", n_boot=5)
    with pytest.raises(ValueError, match="`prior`"):
        sampling.prior_weights(y, 3, "uniform")
    with pytest.raises(ValueError, match="`a`"):
        sampling.paired_bootstrap([], [], "macro_f1")
    with pytest.raises(ValueError, match="`a`"):
        sampling.single_bootstrap([], "macro_f1")
    with pytest.raises(ValueError, match="`metric`"):
        sampling.single_bootstrap([(y, p, None)], "val_my_metric")


# --- in a search: every scored training keeps its validation predictions; intervals count the sample --------
@pytest.mark.parametrize("population", [1, 3])
def test_a_search_keeps_each_trainings_validation_predictions_and_bootstraps_them(tmp_path, population):
    import io
    import math

    import losstune
    from losstune import layout, predictions
    from losstune.stats import mean_se
    from tests.helpers import mlp, tiny_multiclass

    x, y = tiny_multiclass(n=150)
    result = losstune.search(mlp(3, inputs=8), x[:90], y[:90], validation_data=(x[90:], y[90:]),
                             space="imbalanced_multiclass", tuner="random", max_trials=3, epochs=3, race=2,
                             score="last", prior="validation", directory=str(tmp_path), population=population,
                             stream=io.StringIO())
    raced = [t for t in result.counted if len(t.scores) == 3]
    assert len(raced) >= 2
    for t in result.counted:
        runs = predictions.load(layout.trial_dir(result.directory, t.trial_id), len(t.scores))
        assert runs is not None and len(runs) == len(t.scores)
        for (y_true, y_pred), score in zip(runs, t.scores):
            assert np.array_equal(y_true, y[90:]) and y_pred.shape == (60, 3)
            # score="last": each repeat's score is its last epoch's val_macro_f1, which the kept predictions
            # (the model after training) reproduce
            assert sampling.macro_f1(y_true, y_pred) == pytest.approx(score, abs=1e-5)
    best = result.best_mean_trial
    runs = [(yt, yp, None) for yt, yp in best.runs]
    assert best.se_sample == pytest.approx(sampling.single_bootstrap(runs, "macro_f1", n_boot=500).se_sample)
    assert best.se_seed == pytest.approx(mean_se(best.scores)[1])
    assert best.se == pytest.approx(math.hypot(best.se_seed, best.se_sample))
    assert f"± {best.se:.4f}" in result.table()


# --- the class prior, explicit ------------------------------------------------------------------------------
def test_a_balanced_prior_search_scores_by_importance_weighted_validation(tmp_path):
    import io

    import losstune
    from tests.helpers import mlp, tiny_multiclass

    x, y = tiny_multiclass(n=400)
    keep = np.concatenate([np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:60], np.flatnonzero(y == 2)[:25]])
    x, y = x[keep], y[keep]  # long-tailed: about 130 / 60 / 25
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    xv, yv = x[:100], y[:100]
    result = losstune.search(mlp(3, inputs=8), x[100:], y[100:], validation_data=(xv, yv), prior="balanced",
                             space="imbalanced_multiclass", tuner="random", max_trials=2, epochs=3, race=0,
                             score="last", directory=str(tmp_path), stream=io.StringIO())
    assert result.context.prior == "balanced" and result.best_config["prior"] == "balanced"
    for t in result.counted:
        (y_true, y_pred), = t.runs
        balanced = sampling.macro_f1(y_true, y_pred, sampling.prior_weights(y_true, 3, "balanced"))
        assert t.score == pytest.approx(balanced, abs=1e-5)  # the objective itself is importance-weighted
        both = result.scores_by_prior(t)
        assert both["balanced"] == pytest.approx(balanced) and both["validation"] == pytest.approx(
            sampling.macro_f1(y_true, y_pred))
    assert "scores estimate val_macro_f1 under balanced classes" in result.summary()
    assert "(validation)" in result.summary() and "(balanced)" in result.summary()
    with pytest.raises(ValueError, match="different `prior`"):
        losstune.search(mlp(3, inputs=8), x[100:], y[100:], validation_data=(xv, yv), prior="validation",
                        space="imbalanced_multiclass", tuner="random", max_trials=2, epochs=3, race=0,
                        directory=str(tmp_path), stream=io.StringIO())


def test_the_prior_is_checked_before_anything_trains(tmp_path):
    import losstune
    from losstune.lossspace import LossSpace
    from tests.helpers import mlp, tiny_multiclass

    x, y = tiny_multiclass(n=60)
    with pytest.raises(ValueError, match="`prior` must be None or one of \\['validation', 'balanced'\\], got 'test'"):
        losstune.search(mlp(3, inputs=8), x, y, prior="test", directory=str(tmp_path))
    xr = np.random.default_rng(0).normal(size=(60, 8)).astype("float32")
    with pytest.raises(ValueError, match="`prior` must be one of \\['validation'\\] for task 'regression'"):
        losstune.search(mlp(1, activation=None, inputs=8), xr, xr[:, 0], prior="balanced", space="robust_regression",
                        directory=str(tmp_path))
    space = {"task": "multiclass", "baseline": "crossentropy", "families": {"crossentropy": {}}, "prior": "balanced"}
    assert LossSpace.from_dict(space).prior == "balanced" and LossSpace.from_dict(space).to_dict()["prior"] == "balanced"
    with pytest.raises(ValueError, match="my.toml: `prior` must be one of"):
        LossSpace.from_dict(dict(space, task="regression", families={"mse": {}}, baseline="mse"), source="my.toml")
    assert not os.path.exists(os.path.join(tmp_path, "search"))
