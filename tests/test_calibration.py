"""losstune.calibration: the ECE metric against its NumPy reference, the reference against hand computations,
serialization, and the metric mapped over a population's members (stateless, stacked state)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from losstune import families
from losstune.calibration import ExpectedCalibrationError, expected_calibration_error
from losstune.population import Member, train_population
from tests.helpers import tiny_multiclass

ATOL = 1e-5
BATCHES = (0, 37, 90, 150)  # three update_state batches of unequal sizes


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def random_case(task, seed=0, n=150, classes=5):
    """(y, logits, probs) of a random case; the logits are scaled up so confidences spread over the bins."""
    rng = np.random.default_rng(seed)
    if task == "multiclass":
        logits = (rng.normal(size=(n, classes)) * 2.5).astype("float32")
        return rng.integers(0, classes, size=n), logits, softmax(logits.astype("float64")).astype("float32")
    width = 1 if task == "binary" else 4
    logits = (rng.normal(size=(n, width)) * 2.5).astype("float32")
    y = rng.integers(0, 2, size=(n,) if task == "binary" else (n, width))
    return y, logits, sigmoid(logits.astype("float64")).astype("float32")


def accumulate(metric, y, pred, weight=None):
    for lo, hi in zip(BATCHES[:-1], BATCHES[1:]):
        metric.update_state(y[lo:hi], pred[lo:hi], None if weight is None else weight[lo:hi])
    return float(metric.result())


# -- the Keras metric equals the NumPy reference ----------------------------------------------------------
@pytest.mark.parametrize("task", ["multiclass", "multiclass_onehot", "binary", "binary_column", "multilabel"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("from_logits", [False, True])
def test_metric_matches_reference(task, weighted, from_logits):
    base = task.split("_")[0]
    y, logits, probs = random_case(base, seed=len(task) + 2 * weighted + from_logits)
    if task == "multiclass_onehot":
        y = np.eye(probs.shape[1])[y]
    if task == "binary_column":
        y = y[:, None]
    weight = np.random.default_rng(1).uniform(0.1, 3.0, size=len(y)) if weighted else None
    metric = ExpectedCalibrationError(num_bins=10, from_logits=from_logits, multi_label=base == "multilabel")
    value = accumulate(metric, y, logits if from_logits else probs, weight)
    expected = expected_calibration_error(y, probs, num_bins=10, sample_weight=weight,
                                          multi_label=base == "multilabel")
    assert expected > 0.01  # a random case is miscalibrated: the comparison is not 0 == 0
    assert value == pytest.approx(expected, abs=ATOL)


def test_multilabel_per_label_weights_and_reset():
    y, _, probs = random_case("multilabel", seed=4)
    weight = np.random.default_rng(2).uniform(0.0, 2.0, size=y.shape)
    metric = ExpectedCalibrationError(multi_label=True)
    value = accumulate(metric, y, probs, weight)
    assert value == pytest.approx(expected_calibration_error(y, probs, sample_weight=weight, multi_label=True),
                                  abs=ATOL)
    metric.reset_state()
    assert float(metric.result()) == 0.0


# -- the reference against hand computations --------------------------------------------------------------
def test_reference_hand_computed_multiclass():
    # 3 classes, 3 bins (0, 1/3], (1/3, 2/3], (2/3, 1]; (confidence, correct) per row:
    #   (0.5, 1) (0.6, 0) -> bin 1: n=2, acc 0.5, conf 0.55, gap 0.05
    #   (0.8, 1) (0.9, 1) (0.7, 0) (1.0, 1) -> bin 2 (1.0 included): n=4, acc 0.75, conf 0.85, gap 0.1
    #   bin 0 is empty. ECE = 2/6 * 0.05 + 4/6 * 0.1 = 1/60 + 4/60 = 1/12.
    # With weights (2, 1, 1, 1, 1, 1): bin 1 has n=3, acc 2/3, conf 1.6/3, gap 0.4/3; bin 2 as before;
    #   ECE = 3/7 * 0.4/3 + 4/7 * 0.1 = 0.4/7 + 0.4/7 = 4/35.
    probs = np.array([[.5, .3, .2], [.6, .2, .2], [.1, .8, .1], [.05, .05, .9], [.7, .2, .1], [0., 1., 0.]])
    y = np.array([0, 1, 1, 2, 2, 1])
    assert expected_calibration_error(y, probs, num_bins=3) == pytest.approx(1 / 12, abs=1e-12)
    assert expected_calibration_error(np.eye(3)[y], probs, num_bins=3) == pytest.approx(1 / 12, abs=1e-12)
    weight = np.array([2.0, 1, 1, 1, 1, 1])
    assert expected_calibration_error(y, probs, 3, sample_weight=weight) == pytest.approx(4 / 35, abs=1e-12)
    metric = ExpectedCalibrationError(num_bins=3)
    metric.update_state(y, probs.astype("float32"), sample_weight=weight)
    assert float(metric.result()) == pytest.approx(4 / 35, abs=ATOL)


def test_reference_hand_computed_binary():
    # p = (0.9, 0.2, 0.6, 0.5), y = (1, 1, 0, 1), 2 bins (0, 0.5], (0.5, 1]:
    #   top-label confidence max(p, 1-p) = (0.9, 0.8, 0.6, 0.5); correct (p >= 0.5) == y: (1, 0, 0, 1).
    #   bin 0 holds 0.5 (right-closed): n=1, gap |1 - 0.5| = 0.5;
    #   bin 1: n=3, acc 1/3, conf 2.3/3, gap 1.3/3.  ECE = 1/4 * 0.5 + 3/4 * 1.3/3 = 0.125 + 0.325 = 0.45.
    p, y = np.array([0.9, 0.2, 0.6, 0.5]), np.array([1, 1, 0, 1])
    assert expected_calibration_error(y, p, num_bins=2) == pytest.approx(0.45, abs=1e-12)
    metric = ExpectedCalibrationError(num_bins=2)
    metric.update_state(y, p[:, None].astype("float32"))
    assert float(metric.result()) == pytest.approx(0.45, abs=ATOL)


@pytest.mark.parametrize("impl", ["reference", "metric"])
def test_bin_edges(impl):
    def ece(p, y, num_bins):
        if impl == "reference":
            return expected_calibration_error(y, p, num_bins)
        metric = ExpectedCalibrationError(num_bins=num_bins)
        metric.update_state(np.asarray(y), np.asarray(p, "float32")[:, None])
        return float(metric.result())

    # 4 bins. Confidence 0.75 (correct) and 0.8 (wrong): 0.75 closes bin (0.5, 0.75], 0.8 is in (0.75, 1],
    # so ECE = 0.5 * 0.25 + 0.5 * 0.8 = 0.525 (right-open bins would pool them: 0.275).
    assert ece([0.75, 0.8], [1, 0], 4) == pytest.approx(0.525, abs=ATOL)
    # Confidence exactly 1.0 (wrong) shares the last bin with 0.9 (correct): acc 0.5, conf 0.95 -> 0.45.
    assert ece([1.0, 0.9], [0, 1], 4) == pytest.approx(0.45, abs=ATOL)


@pytest.mark.parametrize("impl", ["reference", "metric"])
def test_perfectly_calibrated_and_maximally_overconfident(impl):
    def ece(y, p, num_bins=10):
        if impl == "reference":
            return expected_calibration_error(y, p, num_bins)
        metric = ExpectedCalibrationError(num_bins=num_bins)
        metric.update_state(y, np.asarray(p, "float32"))
        return float(metric.result())

    # Per bin, 20 predictions with confidence c of which 20c are right: acc(b) == conf(b) in every bin.
    p, y = [], []
    for c in (0.55, 0.65, 0.75, 0.85, 0.95):
        right = int(round(20 * c))
        p += [c] * 20
        y += [1] * right + [0] * (20 - right)
    p, y = np.array(p)[:, None], np.array(y)
    assert ece(y, p) == pytest.approx(0.0, abs=ATOL)
    # The mirror image (p -> 1 - p, y -> 1 - y) is the same top-label prediction: still 0.
    assert ece(1 - y, 1 - p) == pytest.approx(0.0, abs=ATOL)
    # Certain and always wrong: conf 1, acc 0 -> the maximum, 1.
    probs = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    assert ece(np.array([1, 2, 0, 2, 0, 1]), probs) == pytest.approx(1.0, abs=ATOL)


# -- configuration ------------------------------------------------------------------------------------------
def test_serialization_round_trip():
    metric = ExpectedCalibrationError(num_bins=7, from_logits=True, multi_label=True, name="label_ece")
    config = metric.get_config()
    assert config == {"num_bins": 7, "from_logits": True, "multi_label": True, "name": "label_ece",
                      "dtype": "float32"}
    for restored in (keras.metrics.deserialize(keras.metrics.serialize(metric)),
                     ExpectedCalibrationError.from_config(config)):
        assert type(restored) is ExpectedCalibrationError and restored.get_config() == config
        y, logits, probs = random_case("multilabel", seed=5)
        assert accumulate(restored, y, logits) == pytest.approx(
            expected_calibration_error(y, probs, 7, multi_label=True), abs=ATOL)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "15", None])
def test_bad_num_bins(bad):
    with pytest.raises(ValueError, match="num_bins") as info:
        ExpectedCalibrationError(num_bins=bad)
    assert repr(bad) in str(info.value)
    with pytest.raises(ValueError, match="num_bins"):
        expected_calibration_error([0], [[0.7]], num_bins=bad)


def test_bad_flags():
    with pytest.raises(ValueError, match="from_logits"):
        ExpectedCalibrationError(from_logits="yes")
    with pytest.raises(ValueError, match="multi_label"):
        ExpectedCalibrationError(multi_label=1)


# -- vectorized over members ------------------------------------------------------------------------------
def strict_vmap(fn, elements):
    """Map `fn` over the leading axis with no per-member loop to fall back on."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.vmap(fn)(elements)
    import tensorflow as tf

    return tf.vectorized_map(fn, elements, fallback_to_while_loop=False)


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel"])
def test_update_and_result_map_over_members(task):
    """As the population engine drives metrics (groups.member_loss, engine._results_fn): each member's
    state is a slice of stacked values, bound to the metric's variables by a StatelessScope."""
    metric = ExpectedCalibrationError(from_logits=True, multi_label=task == "multilabel")
    cases = [random_case(task, seed=10 + k) for k in range(3)]
    y = cases[0][0]  # the labels are shared, as in a population; the predictions differ per member
    logits = ops.convert_to_tensor(np.stack([c[1] for c in cases]))
    weight = np.random.default_rng(3).uniform(0.1, 2.0, size=len(y)).astype("float32")
    state = [ops.zeros((3,) + tuple(v.shape), v.dtype) for v in metric.variables]

    def update(lo, hi):
        def one(args):
            pred, values = args
            with keras.StatelessScope(state_mapping=list(zip(metric.variables, values))) as scope:
                metric.update_state(y[lo:hi], pred[lo:hi], sample_weight=weight[lo:hi])
            return [scope.get_current_value(v) for v in metric.variables]

        return one

    for lo, hi in zip(BATCHES[:-1], BATCHES[1:]):
        state = strict_vmap(update(lo, hi), (logits, state))

    def result(values):
        with keras.StatelessScope(state_mapping=list(zip(metric.variables, values))):
            return metric.result()

    results = np.asarray(strict_vmap(result, list(state)))
    assert all(float(np.asarray(v.numpy()).sum()) == 0.0 for v in metric.variables)  # untouched
    for k, (_, _, probs) in enumerate(cases):
        expected = expected_calibration_error(y, probs, sample_weight=weight, multi_label=task == "multilabel")
        assert results[k] == pytest.approx(expected, abs=ATOL)
    assert len(set(np.round(results, 6))) == 3  # each member its own value


def test_population_members_report_their_solo_val_ece(capsys):
    x, y = tiny_multiclass(n=150, classes=3, features=8, seed=0)
    xt, yt, xv, yv = x[:120], y[:120], x[120:], y[120:]  # 30 validation rows: batches of 16 and 14
    counts = np.bincount(yt, minlength=3).astype("float64")
    gammas = (0.5, 1.0, 2.0)  # members differ in focal's gamma: one group, its loss and metrics mapped

    def compiled(gamma):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(3, activation="softmax")])
        loss = families.get("focal").build({"gamma": gamma}, task="multiclass", class_counts=counts)
        model.compile(optimizer="adam", loss=loss, metrics=[ExpectedCalibrationError()])
        return model

    members = [Member(compiled(g), name=f"gamma={g}") for g in gammas]
    train_population(members, xt, yt, validation_data=(xv, yv), epochs=2, batch_size=16, seed=0, verbose=1)
    assert "x3 (gamma per member), mapped" in capsys.readouterr().out
    for gamma, member in zip(gammas, members):
        model = compiled(gamma)
        keras.utils.set_random_seed(0)
        history = model.fit(xt, yt, validation_data=(xv, yv), epochs=2, batch_size=16, shuffle=True,
                            verbose=0).history
        assert member.failure is None
        for name in ("ece", "val_ece"):
            np.testing.assert_allclose(member.history[name], history[name], rtol=0, atol=1e-4, err_msg=name)
        final = expected_calibration_error(yv, member.model.predict(xv, verbose=0))
        assert member.history["val_ece"][-1] == pytest.approx(final, abs=1e-4)


def test_ties_go_to_the_first_class_as_argmax():
    # Rows tied between classes 0 and 1: the prediction is class 0 (the first maximum, as argmax), so
    # label 1 is wrong and label 0 right. Confidence 0.4 in bin (1/3, 2/3] with acc 0.5 -> ECE 0.1.
    probs = np.array([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2]])
    y = np.array([1, 0])
    assert expected_calibration_error(y, probs, num_bins=3) == pytest.approx(0.1, abs=1e-12)
    metric = ExpectedCalibrationError(num_bins=3)
    metric.update_state(np.eye(3)[y], probs.astype("float32"))
    assert float(metric.result()) == pytest.approx(0.1, abs=ATOL)


# --- calibration in the search: per trial, in the table, the export, TensorBoard and a warning ---------------
def test_a_search_reports_each_trials_calibration_error_by_its_score_rule(tmp_path):
    import io

    import losstune
    from losstune import layout, stats
    from tests.helpers import mlp, tiny_multiclass

    x, y = tiny_multiclass()
    result = losstune.search(mlp(3, inputs=8), x, y, validation_data=(x, y), space="imbalanced_multiclass",
                             tuner="random", max_trials=2, epochs=4, directory=str(tmp_path), race=0,
                             executions_per_trial=2, stream=io.StringIO())
    for t in result.trials:
        repeats = layout.Repeats.load(layout.trial_dir(result.directory, t.trial_id))
        assert len(repeats.ece) == 2 and t.ece == pytest.approx(np.mean(repeats.ece))
        assert 0.0 <= t.ece <= 1.0
    # the ECE of execution 0 is its last-quarter mean of val_ece, as TensorBoard's epoch_ece shows it
    from tensorboard.backend.event_processing import event_accumulator

    run = os.path.join(result.directory, result.context.logdir, result.trials[0].trial_id, "execution0", "validation")
    events = event_accumulator.EventAccumulator(run, size_guidance={"tensors": 0})
    events.Reload()
    curve = [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("epoch_ece")]
    repeats = layout.Repeats.load(layout.trial_dir(result.directory, result.trials[0].trial_id))
    assert len(curve) == 4 and repeats.ece[0] == pytest.approx(stats.curve_score(curve, "last_quarter", "min"),
                                                                abs=1e-6)
    assert "ECE" in result.table().splitlines()[0] and "| ECE |" in result.to_markdown()
    assert result.best_config["calibration"]["best"] == result.best_trial.ece


def test_a_much_worse_calibrated_pick_gets_a_warning():
    from losstune.lossspace import TrialLoss
    from tests.test_quality import _record, _result

    base = _record(0, [0.70, 0.71, 0.72], TrialLoss("crossentropy", {"label_smoothing": 0.0}, 0.0),
                   is_baseline=True, ece=0.04)
    pick = _record(1, [0.80, 0.81, 0.82], TrialLoss("focal", {"gamma": 2.0}, 0.5), ece=0.15)
    text = "\n".join(_result([base, pick]).warnings())
    assert "worse calibrated than the baseline (expected calibration error 0.150 against 0.040" in text
    pick.ece = 0.08  # worse by 0.04 only: no warning
    assert "calibrated" not in "\n".join(_result([base, pick]).warnings())
