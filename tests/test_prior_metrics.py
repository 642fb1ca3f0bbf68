"""losstune.objectives under a class prior: MacroF1 and PRAUC with `class_weights`, and BalancedAccuracy,
against sklearn and losstune.sampling, by hand, serialized, and inside a population (members == solo fits)."""

import warnings

import keras
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score

from losstune import families, sampling
from losstune.objectives import PRAUC, BalancedAccuracy, MacroF1
from losstune.population import Member, train_population
from tests.helpers import tiny_multiclass

BATCHES = (0, 37, 90)  # three update_state batches of unequal sizes, the last one to the end
C = 4


def long_tailed(seed=0, n=160, classes=C):
    """(y, probs): a long-tailed label set (every class present) and random, somewhat informative probs."""
    rng = np.random.default_rng(seed)
    prior = 0.5 ** np.arange(classes)
    y = np.concatenate([np.arange(classes), rng.choice(classes, n - classes, p=prior / prior.sum())])
    rng.shuffle(y)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs.astype("float32")


def accumulate(metric, y, pred, weight=None):
    edges = BATCHES + (len(y),)
    for lo, hi in zip(edges[:-1], edges[1:]):
        metric.update_state(y[lo:hi], pred[lo:hi], None if weight is None else weight[lo:hi])
    return float(metric.result())


def balanced(y, classes):
    """w_c = n / (C_present n_c), per class (a list)."""
    counts = np.bincount(y, minlength=classes).astype("float64")
    present = (counts > 0).sum()
    return [len(y) / (present * n_c) if n_c else 0.0 for n_c in counts]


# -- MacroF1 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("onehot", [False, True])
@pytest.mark.parametrize("with_sample_weight", [False, True])
def test_macro_f1_with_class_weights_matches_sklearn(onehot, with_sample_weight):
    y, probs = long_tailed(seed=1 + onehot)
    class_weights = [0.5, 2.0, 3.0, 7.5]
    sw = np.random.default_rng(3).uniform(0.2, 2.0, len(y)) if with_sample_weight else None
    labels = np.eye(C)[y] if onehot else y
    value = accumulate(MacroF1(class_weights=class_weights), labels, probs, sw)
    weight = np.asarray(class_weights)[y] * (1.0 if sw is None else sw)
    expected = f1_score(y, probs.argmax(1), average="macro", labels=range(C), zero_division=0,
                        sample_weight=weight)
    unweighted = f1_score(y, probs.argmax(1), average="macro", labels=range(C), zero_division=0,
                          sample_weight=sw)
    assert abs(expected - unweighted) > 1e-3  # the weights matter in this case
    assert value == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("onehot", [False, True])
def test_macro_f1_balanced_weights_match_sampling(onehot):
    y, probs = long_tailed(seed=4)
    weights = balanced(y, C)
    np.testing.assert_allclose(np.asarray(weights)[y], sampling.prior_weights(y, C, "balanced"), rtol=1e-12)
    value = accumulate(MacroF1(class_weights=weights), np.eye(C)[y] if onehot else y, probs)
    expected = sampling.macro_f1(y, probs, weights=sampling.prior_weights(y, C, "balanced"))
    assert value == pytest.approx(expected, abs=1e-5)
    # without class_weights: unchanged, the validation prior
    assert accumulate(MacroF1(), y, probs) == pytest.approx(sampling.macro_f1(y, probs), abs=1e-5)


def test_balanced_prior_equals_replicating_classes_to_equal_counts():
    # Long tail: 60 / 30 / 10 examples (n = 100, 3 classes). Balanced weights n / (3 n_c) = 5/9, 10/9, 10/3.
    # Replicating each class's examples to 60 (x1, x2, x6) gives equal counts; importance weights
    # proportional to the replication factors (1 : 2 : 6 = 5/9 : 10/9 : 10/3) give the same counts up to a
    # common scale, which F1 ignores.
    rng = np.random.default_rng(7)
    counts, factors = [60, 30, 10], [1, 2, 6]
    y = np.repeat(np.arange(3), counts)
    logits = rng.normal(size=(100, 3)) + 1.0 * np.eye(3)[y]
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype("float32")
    weights = balanced(y, 3)
    np.testing.assert_allclose(weights, [5 / 9, 10 / 9, 10 / 3], rtol=1e-12)
    keep = np.repeat(np.arange(100), np.asarray(factors)[y])
    assert np.bincount(y[keep]).tolist() == [60, 60, 60]
    replicated = MacroF1()
    replicated.update_state(y[keep], probs[keep])
    weighted = MacroF1(class_weights=weights)
    weighted.update_state(y, probs)
    plain = MacroF1()
    plain.update_state(y, probs)
    assert float(weighted.result()) == pytest.approx(float(replicated.result()), abs=1e-5)
    assert abs(float(weighted.result()) - float(plain.result())) > 1e-3
    assert float(replicated.result()) == pytest.approx(
        f1_score(y[keep], probs[keep].argmax(1), average="macro", zero_division=0), abs=1e-5)


# -- PRAUC --------------------------------------------------------------------------------------------------
def binary_case(seed=0, n=400, column=True):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.15).astype("int64")  # ~15 % positives
    logits = (rng.normal(size=n) + 1.2 * y).astype("float32")
    return (y[:, None] if column else y), (logits[:, None] if column else logits)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("column", [False, True])
def test_prauc_unweighted_is_keras_auc_pr_exactly(from_logits, column):
    y, logits = binary_case(seed=2 + column, column=column)
    pred = logits if from_logits else 1 / (1 + np.exp(-logits))
    ours = PRAUC(from_logits=from_logits)
    theirs = keras.metrics.AUC(curve="PR", from_logits=from_logits, name="pr_auc")
    sw = np.random.default_rng(1).uniform(0.1, 2.0, len(y))
    assert accumulate(ours, y, pred, sw) == accumulate(theirs, y, pred, sw)
    ours.reset_state(), theirs.reset_state()
    assert accumulate(ours, y, pred) == accumulate(theirs, y, pred)
    assert ours.name == "pr_auc"


@pytest.mark.parametrize("column", [False, True])
def test_weighted_prauc_approaches_sklearn_weighted_average_precision(column):
    y, logits = binary_case(seed=5, column=column)
    probs = (1 / (1 + np.exp(-logits))).astype("float32")
    flat = y.reshape(-1)
    class_weights = balanced(flat, 2)
    w = np.asarray(class_weights)[flat]
    expected = average_precision_score(flat, probs.reshape(-1), sample_weight=w)
    assert expected == pytest.approx(sampling.pr_auc(flat, probs.reshape(-1), weights=w), abs=1e-9)
    plain = accumulate(PRAUC(num_thresholds=2000), y, probs)
    value = accumulate(PRAUC(class_weights=class_weights, num_thresholds=2000), y, probs)
    assert value == pytest.approx(expected, abs=1e-2)
    assert abs(value - expected) < abs(plain - expected)
    assert abs(plain - expected) > 0.05  # balancing the prior raises precision, so PR-AUC, a lot


# -- BalancedAccuracy ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("onehot", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_balanced_accuracy_matches_sklearn(onehot, weighted):
    y, probs = long_tailed(seed=8 + onehot)
    sw = np.random.default_rng(2).uniform(0.1, 3.0, len(y)) if weighted else None
    value = accumulate(BalancedAccuracy(C), np.eye(C)[y] if onehot else y, probs, sw)
    expected = balanced_accuracy_score(y, probs.argmax(1), sample_weight=sw)
    assert value == pytest.approx(expected, abs=1e-6)
    assert value == pytest.approx(sampling.balanced_accuracy(y, probs, weights=sw), abs=1e-6)


def test_balanced_accuracy_leaves_out_a_class_absent_from_y_true():
    # 5 classes, class 3 never a label but predicted for some rows: sklearn leaves it out of the mean
    # (with a warning), over the 4 classes present.
    y, probs = long_tailed(seed=11, classes=C)
    probs5 = np.concatenate([probs, np.zeros((len(y), 1), "float32")], 1)
    y5 = np.where(y == 3, 4, y)
    probs5[:20, 3] = 2.0  # the first 20 rows predict the absent class 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = balanced_accuracy_score(y5, probs5.argmax(1))
    recalls = [np.mean(probs5[y5 == c].argmax(1) == c) for c in (0, 1, 2, 4)]
    assert expected == pytest.approx(np.mean(recalls), abs=1e-12)
    assert accumulate(BalancedAccuracy(5), y5, probs5) == pytest.approx(expected, abs=1e-6)
    metric = BalancedAccuracy(5)
    assert float(metric.result()) == 0.0  # before any update


def test_balanced_accuracy_is_prior_invariant():
    # Replicating classes (a change of prior) changes macro F1 but not balanced accuracy.
    y, probs = long_tailed(seed=12)
    keep = np.repeat(np.arange(len(y)), np.asarray([1, 2, 3, 5])[y])
    a, b = BalancedAccuracy(C), BalancedAccuracy(C)
    a.update_state(y, probs)
    b.update_state(y[keep], probs[keep])
    assert float(a.result()) == pytest.approx(float(b.result()), abs=1e-6)


def test_ties_go_to_the_first_class():
    probs = np.array([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2]], "float32")
    metric = BalancedAccuracy(3)
    metric.update_state(np.array([0, 1]), probs)
    assert float(metric.result()) == pytest.approx(0.5, abs=1e-6)  # class 0 right, class 1 wrong


# -- configuration ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", [
    MacroF1(name="bal_f1", class_weights=[0.5, 2.0, 1.0, 4.0]),
    PRAUC(name="bal_pr", from_logits=True, class_weights=[0.6, 3.0], num_thresholds=500),
    BalancedAccuracy(4, name="bacc"),
    MacroF1(),
], ids=["macro_f1", "prauc", "balanced_accuracy", "macro_f1_plain"])
def test_serialization_round_trip(metric):
    config = metric.get_config()
    restored = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert type(restored) is type(metric) and restored.get_config() == config
    assert type(metric).from_config(config).get_config() == config
    if isinstance(metric, PRAUC):
        y, logits = binary_case(seed=3)
        assert accumulate(restored, y, logits) == accumulate(metric, y, logits)
    else:
        y, probs = long_tailed(seed=3)
        assert accumulate(restored, y, probs) == pytest.approx(accumulate(metric, y, probs), abs=1e-7)


def test_configs():
    assert MacroF1(class_weights=np.array([1, 2.5])).get_config() == {
        "name": "macro_f1", "class_weights": [1.0, 2.5], "dtype": "float32"}
    assert MacroF1().get_config()["class_weights"] is None
    assert PRAUC().get_config() == {"name": "pr_auc", "from_logits": False, "class_weights": None,
                                    "num_thresholds": 200, "dtype": "float32"}
    assert BalancedAccuracy(3).get_config() == {"num_classes": 3, "name": "balanced_accuracy",
                                                "dtype": "float32"}


@pytest.mark.parametrize("bad", [[], [0.0, 0.0], [1.0, -0.5], [1.0, float("nan")], [1.0, float("inf")],
                                 "1,2", {0: 1.0}, [True, 1.0], [[1.0, 2.0]], np.ones((2, 2)), 3.0])
def test_bad_class_weights(bad):
    for make in (lambda: MacroF1(class_weights=bad), lambda: PRAUC(class_weights=bad)):
        with pytest.raises(ValueError, match="class_weights") as info:
            make()
        assert "finite floats >= 0" in str(info.value)


def test_prauc_needs_two_class_weights_and_good_thresholds():
    with pytest.raises(ValueError, match=r"class_weights.*\[w_0, w_1\]"):
        PRAUC(class_weights=[1.0, 2.0, 3.0])
    for bad in (1, 0, 2.5, "200", True):
        with pytest.raises(ValueError, match="num_thresholds"):
            PRAUC(num_thresholds=bad)
    with pytest.raises(ValueError, match="from_logits"):
        PRAUC(from_logits="yes")


def test_class_count_mismatch_is_a_clear_error():
    y, probs = long_tailed(seed=0)
    with pytest.raises(ValueError, match=r"`y_pred` has 4 columns.*`class_weights`.*expects 3"):
        MacroF1(class_weights=[1.0, 2.0, 3.0]).update_state(y, probs)
    with pytest.raises(ValueError, match=r"`y_pred` has 4 columns.*`num_classes` expects 5"):
        BalancedAccuracy(5).update_state(y, probs)
    with pytest.raises(ValueError, match=r"`y_pred` has 4 columns.*binary"):
        PRAUC(class_weights=[1.0, 2.0]).update_state(np.eye(4)[y], probs)


@pytest.mark.parametrize("bad", [1, 0, -2, 2.0, "3", None, True])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes") as info:
        BalancedAccuracy(bad)
    assert repr(bad) in str(info.value)


def test_balanced_accuracy_takes_no_class_weights():
    with pytest.raises(TypeError):
        BalancedAccuracy(3, class_weights=[1.0, 1.0, 1.0])


# -- mapped over members with no per-member loop (strict vmap), as the population engine maps metrics -----------
def strict_vmap(fn, elements):
    if keras.backend.backend() == "jax":
        import jax

        return jax.vmap(fn)(elements)
    import tensorflow as tf

    return tf.vectorized_map(fn, elements, fallback_to_while_loop=False)


@pytest.mark.parametrize("kind", ["macro_f1", "prauc", "balanced_accuracy"])
def test_update_and_result_map_over_members(kind):
    if kind == "prauc":
        y, _ = binary_case(seed=6, n=160)
        metric = PRAUC(class_weights=[0.6, 3.0], from_logits=True)
        preds = [binary_case(seed=6, n=160)[1] + k for k in range(3)]
    else:
        y, _ = long_tailed(seed=6)
        metric = (MacroF1(class_weights=[0.5, 2.0, 1.0, 4.0]) if kind == "macro_f1" else BalancedAccuracy(C))
        preds = [long_tailed(seed=20 + k)[1] for k in range(3)]
    solo = [accumulate(keras.metrics.deserialize(keras.metrics.serialize(metric)), y, p) for p in preds]
    metric.update_state(y[:2], preds[0][:2])  # builds the variables (F1Score/AUC build on first update)
    metric.reset_state()
    stacked = keras.ops.convert_to_tensor(np.stack(preds))
    state = [keras.ops.zeros((3,) + tuple(v.shape), v.dtype) for v in metric.variables]
    edges = BATCHES + (len(y),)
    for lo, hi in zip(edges[:-1], edges[1:]):
        def one(args, lo=lo, hi=hi):
            pred, values = args
            with keras.StatelessScope(state_mapping=list(zip(metric.variables, values))) as scope:
                metric.update_state(y[lo:hi], pred[lo:hi])
            return [scope.get_current_value(v) for v in metric.variables]

        state = strict_vmap(one, (stacked, state))

    def result(values):
        with keras.StatelessScope(state_mapping=list(zip(metric.variables, values))):
            return metric.result()

    np.testing.assert_allclose(np.asarray(strict_vmap(result, list(state))), solo, rtol=0, atol=1e-6)
    assert len(set(np.round(solo, 6))) == 3


# -- inside a population ------------------------------------------------------------------------------------
GAMMAS = (0.5, 1.0, 2.0)


def _population_matches_solo(task, x, y, metrics, names, capsys):
    xt, yt, xv, yv = x[:120], y[:120], x[120:], y[120:]  # 30 validation rows: batches of 16 and 14
    width = 1 if task == "binary" else 3
    counts = np.bincount(yt.reshape(-1), minlength=2 if task == "binary" else 3).astype("float64")

    def compiled(gamma):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(width, activation="sigmoid" if width == 1 else "softmax")])
        loss = families.get("focal").build({"gamma": gamma}, task=task, class_counts=counts)
        model.compile(optimizer="adam", loss=loss, metrics=metrics())
        return model

    members = [Member(compiled(g), name=f"gamma={g}") for g in GAMMAS]
    train_population(members, xt, yt, validation_data=(xv, yv), epochs=2, batch_size=16, seed=0, verbose=1)
    assert "x3 (gamma per member), mapped" in capsys.readouterr().out  # one group, metrics mapped
    for gamma, member in zip(GAMMAS, members):
        assert member.failure is None
        model = compiled(gamma)
        keras.utils.set_random_seed(0)
        history = model.fit(xt, yt, validation_data=(xv, yv), epochs=2, batch_size=16, shuffle=True,
                            verbose=0).history
        for name in names:
            np.testing.assert_allclose(member.history[f"val_{name}"], history[f"val_{name}"], rtol=0,
                                       atol=1e-4, err_msg=name)
    return members


def test_population_multiclass_members_report_their_solo_metrics(capsys):
    x, y = tiny_multiclass(n=150, classes=3, features=8, seed=0)
    weights = balanced(y[120:], 3)
    members = _population_matches_solo(
        "multiclass", x, y,
        lambda: [MacroF1(name="bal_f1", class_weights=weights), BalancedAccuracy(3)],
        ("bal_f1", "balanced_accuracy"), capsys)
    xv, yv = x[120:], y[120:]
    for member in members:
        probs = member.model.predict(xv, verbose=0)
        w = sampling.prior_weights(yv, 3, "balanced")
        assert member.history["val_bal_f1"][-1] == pytest.approx(sampling.macro_f1(yv, probs, w), abs=1e-4)
        assert member.history["val_balanced_accuracy"][-1] == pytest.approx(
            balanced_accuracy_score(yv, probs.argmax(1)), abs=1e-4)


def test_population_binary_members_report_their_solo_prauc(capsys):
    x, y = tiny_multiclass(n=150, classes=3, features=8, seed=1)
    y = (y == 2).astype("int64")  # ~1/3 positives
    weights = balanced(y[120:], 2)
    _population_matches_solo("binary", x, y,
                             lambda: [PRAUC(name="bal_pr_auc", class_weights=weights), PRAUC()],
                             ("bal_pr_auc", "pr_auc"), capsys)
