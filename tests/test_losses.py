"""The loss library against independent references: NumPy formulas, Keras built-ins, finite differences."""

import numpy as np
import pytest
import tensorflow as tf

import keras
import losstune
from losstune import families

RNG = np.random.default_rng(0)
N, C = 12, 5
LOGITS = RNG.normal(size=(N, C)) * 3
IDS = RNG.integers(0, C, size=N)
ONE_HOT = np.eye(C)[IDS]
PROBS = np.exp(LOGITS) / np.exp(LOGITS).sum(1, keepdims=True)
BIN_LOGITS = RNG.normal(size=(N, 1)) * 3
BIN_Y = RNG.integers(0, 2, size=(N, 1)).astype(float)
ML_Y = (RNG.random((N, C)) < 0.3).astype(float)
COUNTS = [50.0, 20.0, 8.0, 3.0, 1.0]


def value(loss, y, p):
    return float(keras.ops.convert_to_numpy(loss(y, p.astype("float32"))))


def build(name, params=None, task=None, **kw):
    return families.get(name).build(params or {}, task=task, **kw)


# --- NumPy references -------------------------------------------------------------------------------
def log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def np_ce(t, z):
    return (-(t * log_softmax(z)).sum(1)).mean()


def np_bce(t, z):
    p = 1 / (1 + np.exp(-z))
    return (-(t * np.log(p) + (1 - t) * np.log(1 - p))).mean()


def np_focal(t, z, gamma, alpha=None):
    p = np.exp(log_softmax(z))
    el = -t * (1 - p) ** gamma * np.log(p)
    return ((alpha if alpha is not None else 1.0) * el).sum(1).mean()


def np_binary_focal(t, z, gamma, alpha):
    p = 1 / (1 + np.exp(-z))
    el = -(alpha * t * (1 - p) ** gamma * np.log(p) + (1 - alpha) * (1 - t) * p ** gamma * np.log(1 - p))
    return el.mean()


@pytest.mark.parametrize("labels", [IDS, ONE_HOT], ids=["sparse", "one_hot"])
@pytest.mark.parametrize("from_logits", [True, False])
def test_reductions_to_crossentropy(labels, from_logits):
    pred = LOGITS if from_logits else PROBS
    ce = np_ce(ONE_HOT, LOGITS)
    kw = dict(task="multiclass", from_logits=from_logits)
    assert value(build("crossentropy", **kw), labels, pred) == pytest.approx(ce, rel=1e-4)
    assert value(build("focal", {"gamma": 0.0}, **kw), labels, pred) == pytest.approx(ce, rel=1e-4)
    assert value(build("poly1", {"epsilon": 0.0}, **kw), labels, pred) == pytest.approx(ce, rel=1e-4)
    assert value(build("logit_adjusted", {"tau": 0.0}, class_counts=COUNTS, **kw), labels, pred) == pytest.approx(ce, rel=1e-4)
    assert value(build("class_balanced", {"beta": 0.0}, class_counts=COUNTS, **kw), labels, pred) == pytest.approx(ce, rel=1e-4)
    weights = losstune.class_weights_from_counts(COUNTS, 0.0)
    assert value(build("focal", {"gamma": 2.0}, class_weights=weights, **kw), labels, pred) == pytest.approx(
        value(build("focal", {"gamma": 2.0}, **kw), labels, pred), rel=1e-6)


@pytest.mark.parametrize("labels", [IDS, ONE_HOT], ids=["sparse", "one_hot"])
def test_crossentropy_matches_keras_with_label_smoothing(labels):
    ours = build("crossentropy", {"label_smoothing": 0.1}, task="multiclass", from_logits=True)
    ref = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    assert value(ours, labels, LOGITS) == pytest.approx(value(ref, ONE_HOT, LOGITS), rel=1e-5)
    ours = build("crossentropy", {"label_smoothing": 0.1}, task="binary", from_logits=True)
    ref = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1)
    assert value(ours, BIN_Y, BIN_LOGITS) == pytest.approx(value(ref, BIN_Y, BIN_LOGITS), rel=1e-5)


@pytest.mark.parametrize("gamma", [0.5, 2.0, 4.0])
def test_focal_matches_numpy(gamma):
    ours = build("focal", {"gamma": gamma, "alpha": 0.25}, task="multiclass", from_logits=True)
    assert value(ours, IDS, LOGITS) == pytest.approx(np_focal(ONE_HOT, LOGITS, gamma, 0.25), rel=1e-4)
    ours = build("focal", {"gamma": gamma, "alpha": 0.25}, task="binary", from_logits=True)
    assert value(ours, BIN_Y, BIN_LOGITS) == pytest.approx(np_binary_focal(BIN_Y, BIN_LOGITS, gamma, 0.25), rel=1e-4)
    # binary alpha is honoured (Keras's BinaryFocalCrossentropy ignores it unless apply_class_balancing)
    a1 = value(build("focal", {"gamma": gamma, "alpha": 0.9}, task="binary", from_logits=True), BIN_Y, BIN_LOGITS)
    assert a1 != pytest.approx(value(ours, BIN_Y, BIN_LOGITS))


def test_multiclass_families_match_numpy():
    t, z = ONE_HOT, LOGITS
    p = np.exp(log_softmax(z))
    p_t = (t * p).sum(1)
    got = value(build("poly1", {"epsilon": 2.0}, task="multiclass", from_logits=True), IDS, z)
    assert got == pytest.approx(np_ce(t, z) + 2.0 * (1 - p_t).mean(), rel=1e-4)
    prior = np.array(COUNTS) / sum(COUNTS)
    got = value(build("logit_adjusted", {"tau": 1.5}, task="multiclass", from_logits=True, class_counts=COUNTS), IDS, z)
    assert got == pytest.approx(np_ce(t, z + 1.5 * np.log(prior)), rel=1e-4)
    margins = 0.5 * np.array(COUNTS) ** -0.25 / (np.array(COUNTS) ** -0.25).max()
    got = value(build("ldam", {"max_margin": 0.5, "scale": 10.0}, task="multiclass", from_logits=True,
                      class_counts=COUNTS), IDS, z)
    assert got == pytest.approx(np_ce(t, 10.0 * (log_softmax(z) - t * margins)), rel=1e-4)
    beta = 0.99
    w = (1 - beta) / (1 - beta ** np.array(COUNTS))
    w = w * C / w.sum()
    got = value(build("class_balanced", {"beta": beta}, task="multiclass", from_logits=True, class_counts=COUNTS), IDS, z)
    assert got == pytest.approx((w[IDS] * -(t * log_softmax(z)).sum(1)).mean(), rel=1e-4)
    zt = (t * z).sum(1)
    other = np.where(t > 0, -np.inf, z).max(1)
    got = value(build("hinge", {"margin": 0.7}, task="multiclass", from_logits=True), IDS, z)
    assert got == pytest.approx(np.maximum(0, 0.7 + other - zt).mean(), rel=1e-4)


def test_sigmoid_families_match_numpy_and_keras():
    z, y = BIN_LOGITS, BIN_Y
    p = 1 / (1 + np.exp(-z))
    got = value(build("weighted_bce", {"pos_weight": 3.0}, task="binary", from_logits=True), y, z)
    assert got == pytest.approx((-(3 * y * np.log(p) + (1 - y) * np.log(1 - p))).mean(), rel=1e-4)
    got = value(build("hinge", {}, task="binary", from_logits=True), y, z)
    assert got == pytest.approx(value(keras.losses.Hinge(), 2 * y - 1, z), rel=1e-5)
    got = value(build("hinge", {"squared": True}, task="binary", from_logits=True), y, z)
    assert got == pytest.approx(value(keras.losses.SquaredHinge(), 2 * y - 1, z), rel=1e-5)
    zm = LOGITS
    pm = 1 / (1 + np.exp(-zm))
    pm_shift = np.maximum(pm - 0.05, 0)
    ref = -(ML_Y * (1 - pm) ** 1 * np.log(pm) + (1 - ML_Y) * pm_shift ** 3 * np.log(1 - pm_shift))
    got = value(build("asymmetric", {"gamma_pos": 1.0, "gamma_neg": 3.0, "clip": 0.05}, task="multilabel",
                      from_logits=True), ML_Y, zm)
    assert got == pytest.approx(ref.mean(), rel=1e-4)
    got = value(build("asymmetric", {"gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0}, task="multilabel",
                      from_logits=True), ML_Y, zm)
    assert got == pytest.approx(np_bce(ML_Y, zm), rel=1e-4)


def test_metric_learning_families_match_numpy():
    d = np.abs(RNG.normal(size=(N, 1)))
    y = BIN_Y
    got = value(build("contrastive", {"margin": 0.8}, task="pairs"), y, d)
    assert got == pytest.approx((y * d ** 2 + (1 - y) * np.maximum(0.8 - d, 0) ** 2).mean(), rel=1e-5)
    emb = RNG.normal(size=(N, 4))
    labels = RNG.integers(0, 3, size=N)
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dist = np.sqrt(((e[:, None] - e[None]) ** 2).sum(-1))
    hard, every = [], []
    for a in range(N):
        pos = [j for j in range(N) if labels[j] == labels[a] and j != a]
        neg = [j for j in range(N) if labels[j] != labels[a]]
        if not pos or not neg:
            hard.append(0.0), every.append(0.0)
            continue
        hard.append(max(0.0, max(dist[a, pos]) - min(dist[a, neg]) + 0.2))
        every.append(np.mean([max(0.0, dist[a, p_] - dist[a, n_] + 0.2) for p_ in pos for n_ in neg]))
    assert value(build("triplet", {"margin": 0.2}, task="embedding"), labels, emb) == pytest.approx(np.mean(hard), rel=1e-4)
    assert value(build("triplet", {"margin": 0.2, "mining": "all"}, task="embedding"), labels, emb) == pytest.approx(
        np.mean(every), rel=1e-4)


def np_tversky(t, p, alpha, beta, smooth):
    """One value per sample, the counts summed over the labels (Salehi et al. 2017, smoothed)."""
    tp, fp, fn = (t * p).sum(1), ((1 - t) * p).sum(1), (t * (1 - p)).sum(1)
    return 1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


@pytest.mark.parametrize("alpha, beta, smooth", [(0.3, 0.7, 1.0), (0.9, 0.1, 0.5), (0.5, 0.5, 0.0), (0.0, 1.0, 2.0)])
def test_tversky_matches_numpy(alpha, beta, smooth):
    params = {"alpha": alpha, "beta": beta, "smooth": smooth}
    pm = 1 / (1 + np.exp(-LOGITS))
    ref = np_tversky(ML_Y, pm, alpha, beta, smooth)
    assert value(build("tversky", params, task="multilabel", from_logits=True), ML_Y, LOGITS) == pytest.approx(
        ref.mean(), rel=1e-4)
    assert value(build("tversky", params, task="multilabel"), ML_Y, pm) == pytest.approx(ref.mean(), rel=1e-4)
    # binary: one probability per sample, labels (n,) or (n, 1); a negative sample's loss is alpha p / (smooth + alpha p)
    pb = 1 / (1 + np.exp(-BIN_LOGITS))
    ref = np_tversky(BIN_Y, pb, alpha, beta, smooth)
    for labels in (BIN_Y, BIN_Y[:, 0]):
        assert value(build("tversky", params, task="binary", from_logits=True), labels, BIN_LOGITS) == pytest.approx(
            ref.mean(), rel=1e-4)
    # per sample: Keras's sample_weight and reductions apply as to every loss
    loss = build("tversky", params, task="multilabel", from_logits=True)
    per_sample = keras.ops.convert_to_numpy(loss.call(ML_Y.astype("float32"), LOGITS.astype("float32")))
    np.testing.assert_allclose(per_sample, np_tversky(ML_Y, pm, alpha, beta, smooth), rtol=1e-4, atol=1e-6)


def test_tversky_is_dice_at_one_half_and_keras_swaps_alpha_and_beta():
    pm = (1 / (1 + np.exp(-LOGITS))).astype("float32")
    ours = build("tversky", {"alpha": 0.5, "beta": 0.5, "smooth": 0.0}, task="multilabel")
    dice = keras.ops.mean(keras.losses.dice(ML_Y, pm, axis=-1))
    assert value(ours, ML_Y, pm) == pytest.approx(float(dice), rel=1e-5)
    ours = build("tversky", {"alpha": 0.2, "beta": 0.8, "smooth": 0.0}, task="multilabel")
    swapped = keras.ops.mean(keras.losses.tversky(ML_Y, pm, alpha=0.8, beta=0.2, axis=-1))
    as_named = keras.ops.mean(keras.losses.tversky(ML_Y, pm, alpha=0.2, beta=0.8, axis=-1))
    assert value(ours, ML_Y, pm) == pytest.approx(float(swapped), rel=1e-5)
    assert value(ours, ML_Y, pm) != pytest.approx(float(as_named), rel=1e-3)
    # beta > alpha: missing a positive costs more than a false alarm of the same size
    recall = build("tversky", {"alpha": 0.2, "beta": 0.8}, task="binary")
    missed, false_alarm = value(recall, np.array([[1.0]]), np.array([[0.2]])), value(recall, np.array([[0.0]]), np.array([[0.8]]))
    assert missed > false_alarm


@pytest.mark.parametrize("name, params, ref", [
    ("mse", {}, keras.losses.MeanSquaredError()),
    ("huber", {"delta": 0.5}, keras.losses.Huber(delta=0.5)),
    ("log_cosh", {}, keras.losses.LogCosh()),
    ("msle", {}, keras.losses.MeanSquaredLogarithmicError()),
    ("quantile", {"quantile": 0.5}, keras.losses.MeanAbsoluteError()),
])
def test_regression_families_match_keras(name, params, ref):
    y, p = RNG.normal(size=(N, 2)) * 3, RNG.normal(size=(N, 2)) * 3
    scale = 0.5 if name == "quantile" else 1.0
    assert value(build(name, params, task="regression"), y, p) == pytest.approx(scale * value(ref, y, p), rel=1e-5)
    tau = 0.9
    e = y - p
    got = value(build("quantile", {"quantile": tau}, task="regression"), y, p)
    assert got == pytest.approx(np.maximum(tau * e, (tau - 1) * e).mean(), rel=1e-5)


# --- gradients ----------------------------------------------------------------------------------------
def _extreme_cases(task):
    if task == "multiclass":
        z = np.array([[100.0, -100.0, 0.0], [-100.0, 100.0, -100.0], [0.0, 0.0, 0.0], [100.0, 100.0, -100.0]])
        p = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
        return np.array([0, 0, 2, 2]), [(z, True), (p, False)]
    if task in ("binary", "multilabel"):
        y = np.array([[1.0], [0.0], [1.0], [0.0]])
        return y, [(np.array([[100.0], [100.0], [-100.0], [-100.0]]), True), (np.array([[1.0], [1.0], [0.0], [0.0]]), False)]
    if task == "pairs":
        return np.array([1.0, 0.0, 1.0, 0.0]), [(np.array([[0.0], [0.0], [1e4], [1e4]]), False)]
    if task == "embedding":
        return np.array([0, 0, 1, 1]), [(np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]), False)]
    return np.array([[0.0], [1e4], [-1e4], [0.0]]), [(np.array([[1e4], [0.0], [1e4], [0.0]]), False)]


def _valid_grid(fam):
    """Each hyperparameter at the ends of its valid range (large finite stand-ins for unbounded ends)."""
    grid = [{}]
    for h in fam.hyperparameters:
        if h.kind in ("choice", "bool"):
            options = list(h.values) if h.kind == "choice" else [False, True]
        else:
            low = h.low if h.low is not None else -10.0
            high = h.high if h.high is not None else 10.0 * max(1.0, h.search[1] if h.search else 1.0)
            low = low if h.low_inclusive else low + 1e-3
            high = high if h.high_inclusive else high - 1e-3
            options = sorted({low, high, h.search[0] if h.search else low, 0.3 if low <= 0.3 <= high else low})
        grid = [dict(g, **{h.name: o}) for g in grid for o in options]
    return grid


@pytest.mark.parametrize("name", families.available())
def test_finite_loss_and_gradients_over_the_valid_range(name):
    fam = families.get(name)
    for task in fam.tasks:
        y, preds = _extreme_cases(task)
        counts = [3.0, 1.0, 1.0] if task == "multiclass" else [2.0, 2.0]
        for params in _valid_grid(fam):
            for pred, from_logits in preds:
                if task == "multilabel":
                    pred = np.repeat(pred, 3, 1)
                    yy = np.repeat(y, 3, 1)
                    cnt = [2.0, 2.0, 2.0]
                else:
                    yy, cnt = y, counts
                loss = fam.build(params, task=task, from_logits=from_logits,
                                 class_counts=cnt if fam.needs_class_counts else None)
                x = tf.Variable(pred.astype("float32"))
                with tf.GradientTape() as tape:
                    out = loss(yy, x)
                grad = tape.gradient(out, x)
                assert np.isfinite(out.numpy()), (name, task, params, from_logits)
                assert grad is not None and np.all(np.isfinite(grad.numpy())), (name, task, params, from_logits)


@pytest.mark.parametrize("name, params, task", [
    ("focal", {"gamma": 0.5}, "multiclass"), ("focal", {"gamma": 2.0, "alpha": 0.3}, "binary"),
    ("ldam", {"max_margin": 0.4, "scale": 5.0}, "multiclass"), ("poly1", {"epsilon": 2.0}, "multiclass"),
    ("asymmetric", {}, "multilabel"), ("contrastive", {"margin": 1.5}, "pairs"), ("huber", {"delta": 0.7}, "regression"),
    ("class_balanced", {"base_loss": "focal"}, "multiclass"), ("asymmetric", {"gamma_neg": 0.5, "clip": 0.1}, "multilabel"),
    ("triplet", {"margin": 0.5}, "embedding"), ("triplet", {"margin": 0.5, "mining": "all"}, "embedding"),
    ("tversky", {}, "multilabel"), ("tversky", {"alpha": 0.8, "beta": 0.1, "smooth": 0.5}, "binary"),
    ("tversky", {"alpha": 0.5, "beta": 0.5, "smooth": 0.0}, "multilabel"),
])
def test_gradients_match_finite_differences(name, params, task):
    keras.config.set_floatx("float64")
    try:
        rng = np.random.default_rng(3)
        if task == "multiclass":
            y, pred = rng.integers(0, 4, 6), rng.normal(size=(6, 4))
        elif task == "multilabel":
            y, pred = (rng.random((6, 4)) < 0.5).astype(float), rng.normal(size=(6, 4))
        elif task == "binary":
            y, pred = rng.integers(0, 2, (6, 1)).astype(float), rng.normal(size=(6, 1))
        elif task == "pairs":
            y, pred = rng.integers(0, 2, 6).astype(float), np.abs(rng.normal(size=(6, 1))) + 0.1
        elif task == "embedding":
            y, pred = np.array([0, 0, 1, 1, 2, 2]), rng.normal(size=(6, 4))
        else:
            y, pred = rng.normal(size=(6, 1)), rng.normal(size=(6, 1))
        loss = families.get(name).build(params, task=task, from_logits=task not in ("pairs", "regression"),
                                        class_counts=[5, 3, 2, 1] if families.get(name).needs_class_counts else None,
                                        )
        loss.dtype_policy = keras.dtype_policies.DTypePolicy("float64")
        x = tf.Variable(pred)
        with tf.GradientTape() as tape:
            out = loss(y, x)
        grad = tape.gradient(out, x).numpy()
        numeric = np.zeros_like(pred)
        h = 1e-6
        for idx in np.ndindex(pred.shape):
            up, down = pred.copy(), pred.copy()
            up[idx] += h
            down[idx] -= h
            numeric[idx] = (float(loss(y, up)) - float(loss(y, down))) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-7)
    finally:
        keras.config.set_floatx("float32")


def test_class_weights_raise_the_minority_gradient_with_power():
    counts = [90.0, 10.0]
    y = np.array([0, 1])
    z = np.zeros((2, 2), "float32")
    minority = []
    for power in (0.0, 0.5, 1.0):
        loss = build("focal", {"gamma": 1.0}, task="multiclass", from_logits=True,
                     class_weights=losstune.class_weights_from_counts(counts, power))
        x = tf.Variable(z)
        with tf.GradientTape() as tape:
            out = loss(y, x)
        g = tape.gradient(out, x).numpy()
        minority.append(np.abs(g[1]).sum())
    assert minority[0] < minority[1] < minority[2]


# --- serialization ------------------------------------------------------------------------------------
def _example(task):
    if task == "multiclass":
        return IDS % 3, PROBS[:, :3] / PROBS[:, :3].sum(1, keepdims=True), 3
    if task in ("binary",):
        return BIN_Y, 1 / (1 + np.exp(-BIN_LOGITS)), 1
    if task == "multilabel":
        return ML_Y[:, :3], 1 / (1 + np.exp(-LOGITS[:, :3])), 3
    if task == "pairs":
        return BIN_Y[:, 0], np.abs(BIN_LOGITS), 1
    if task == "embedding":
        return IDS % 3, LOGITS[:, :3], 3
    return LOGITS[:, :1], LOGITS[:, 1:2], 1


@pytest.mark.parametrize("name", families.available())
def test_config_round_trip_and_saved_model(name, tmp_path):
    fam = families.get(name)
    task = fam.tasks[0]
    y, pred, width = _example(task)
    counts = [4.0, 2.0, 1.0] if task == "multiclass" else [3.0, 1.0]
    weights = None
    if fam.weightable:
        weights = losstune.class_weights_from_counts(counts if task != "multilabel" else [3.0, 2.0, 1.0], 0.5, task)
    loss = fam.build({}, task=task, class_counts=counts if fam.needs_class_counts else None, class_weights=weights)
    again = type(loss).from_config(loss.get_config())
    assert again.get_config() == loss.get_config()
    via_keras = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(via_keras) is type(loss) and via_keras.get_config() == loss.get_config()
    assert value(again, y, pred) == pytest.approx(value(loss, y, pred), rel=1e-6)
    # a compiled model saved as .keras and loaded back computes the same loss
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(width, activation="sigmoid")])
    model.compile(optimizer="sgd", loss=loss)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.loss) is type(loss) and loaded.loss.get_config() == loss.get_config()
    x = RNG.normal(size=(N, 4)).astype("float32")
    assert float(loaded.evaluate(x, y, verbose=0)) == pytest.approx(float(model.evaluate(x, y, verbose=0)), rel=1e-5)


def test_huber_keeps_delta_through_save(tmp_path):
    loss = build("huber", {"delta": 0.25}, task="regression")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(loss=loss)
    model.save(tmp_path / "m.keras")
    assert keras.saving.load_model(tmp_path / "m.keras").loss.get_config()["delta"] == 0.25


# --- bad hyperparameters --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, params, task, pattern", [
    ("focal", {"gamma": -1.0}, "multiclass", "focal: `gamma` must be in \\[0.0, inf\\), got -1.0"),
    ("focal", {"alpha": 1.5}, "binary", "focal: `alpha` must be in \\[0.0, 1.0\\], got 1.5"),
    ("crossentropy", {"label_smoothing": 1.5}, "multiclass", "crossentropy: `label_smoothing` must be in \\[0.0, 1.0\\), got 1.5"),
    ("contrastive", {"margin": 0.0}, "pairs", "contrastive: `margin` must be in \\(0.0, inf\\), got 0.0"),
    ("triplet", {"margin": -0.2}, "embedding", "triplet: `margin` must be in \\(0.0, inf\\), got -0.2"),
    ("tversky", {"alpha": 1.5}, "binary", "tversky: `alpha` must be in \\[0.0, 1.0\\], got 1.5"),
    ("tversky", {"smooth": -1.0}, "multilabel", "tversky: `smooth` must be in \\[0.0, inf\\), got -1.0"),
    ("tversky", {}, "multiclass", "tversky: does not fit task 'multiclass'; it fits \\['binary', 'multilabel'\\]"),
    ("hinge", {"margin": 0}, "binary", "hinge: `margin` must be in \\(0.0, inf\\), got 0"),
    ("quantile", {"quantile": 1.0}, "regression", "quantile: `quantile` must be in \\(0.0, 1.0\\), got 1.0"),
    ("huber", {"delta": -1}, "regression", "huber: `delta` must be in \\(0.0, inf\\)"),
    ("poly1", {"epsilon": -2}, "multiclass", "poly1: `epsilon` must be in \\[-1.0, inf\\)"),
    ("class_balanced", {"beta": 1.0}, "multiclass", "class_balanced: `beta` must be in \\[0.0, 1.0\\)"),
    ("focal", {"gamma": "big"}, "multiclass", "focal: `gamma` must be a finite number, got 'big'"),
    ("focal", {"beta": 1.0}, "multiclass", "focal: unknown hyperparameter 'beta'"),
    ("ldam", {}, "binary", "ldam: does not fit task 'binary'; it fits \\['multiclass'\\]"),
    ("ldam", {}, "multiclass", "ldam: needs `class_counts`"),
])
def test_bad_hyperparameters_name_family_argument_value_and_range(name, params, task, pattern):
    with pytest.raises(ValueError, match=pattern):
        families.get(name).build(params, task=task)


# The constructors' and the registry's checks, and the registry's listing by task: tests/test_families.py.
