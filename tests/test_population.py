"""Population training (losstune.population): members trained as one vectorized computation end as the same
trials trained alone with `model.fit`.

Exactness is tested with weights after two epochs within ATOL = 1e-5 (absolute; the weights are O(0.1-1)) and
every logged value (loss, macro-F1, val_loss, val_macro-F1) within a relative 1e-5. The two sides differ only
in float rounding: a batched matmul may round differently from a single one.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from losstune import families, objectives
from losstune.population import Member, train_population, vectorizable

SEED = 3
ATOL = 1e-5
RTOL = 1e-5
_digits = load_digits()
X = (_digits.data / 16.0).astype("float32")
Y = _digits.target
XT, YT, XV, YV = X[:200], Y[:200], X[200:260], Y[200:260]  # 7 batches of 32, the last one partial
COUNTS = np.bincount(YT, minlength=10).astype("float64")
INVERSE = list(COUNTS.mean() / COUNTS)

# (family, params, class-weight power). Pairs that differ only in a number form one group each: focal's
# gamma and the class weights are mapped over the pair; the label-smoothing pair is computed member by
# member inside the same step as long as cross-entropy branches in Python on `not label_smoothing`.
MLP_MEMBERS = [
    ("focal", {"gamma": 2.0}, None),
    ("focal", {"gamma": 0.5}, None),
    ("crossentropy", {}, 1.0),
    ("crossentropy", {}, 0.5),
    ("crossentropy", {"label_smoothing": 0.1}, None),
    ("crossentropy", {"label_smoothing": 0.2}, None),
]
CONV_MEMBERS = [("crossentropy", {}, None), ("focal", {"gamma": 2.0}, None), ("crossentropy", {}, 1.0)]


def mlp():
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def conv():
    return keras.Sequential([
        keras.Input((64,)), keras.layers.Reshape((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.BatchNormalization(),
        keras.layers.Conv2D(6, 3, strides=2, activation="relu"), keras.layers.Flatten(),
        keras.layers.Dropout(0.3), keras.layers.Dense(10, activation="softmax"),
    ])


def make_loss(spec):
    family, params, power = spec
    weights = None if power is None else [w ** power for w in INVERSE]
    return families.get(family).build(params, task="multiclass", class_counts=COUNTS, class_weights=weights)


def compiled(builder, loss, optimizer="adam"):
    """A member's model as a solo trial builds it: seed, build, compile (fresh optimizer and metrics)."""
    keras.utils.set_random_seed(SEED)
    model = builder()
    model.compile(optimizer=keras.optimizers.get(optimizer), loss=loss, metrics=[objectives.MacroF1()])
    return model


def solo(builder, loss, epochs=2):
    """The solo trial: losstune's LossHyperModel seeds again right before fit."""
    model = compiled(builder, loss)
    keras.utils.set_random_seed(SEED)
    history = model.fit(XT, YT, batch_size=32, epochs=epochs, shuffle=True, validation_data=(XV, YV), verbose=0)
    return model, history.history


def assert_same_trial(member, model, history, epochs=None):
    assert len(model.variables) == len(member.model.variables)
    for v, w in zip(model.variables, member.model.variables):
        np.testing.assert_allclose(np.asarray(w), np.asarray(v), rtol=0, atol=ATOL, err_msg=v.path)
    assert sorted(member.history) == sorted(history)
    for name, values in history.items():
        values = values[:epochs] if epochs else values
        np.testing.assert_allclose(member.history[name], values, rtol=RTOL, atol=1e-7, err_msg=name)


# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlp_population(tmp_path_factory):
    """The MLP members trained together; one more stops itself after its first epoch; member 0 records
    what its callbacks see, member 1 logs to TensorBoard."""
    records = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            records.append((epoch, dict(logs), [w.copy() for w in self.model.get_weights()]))

    class StopAfterFirst(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    members = [Member(compiled(mlp, make_loss(spec)), name=str(spec)) for spec in MLP_MEMBERS]
    members[0].callbacks.append(Record())
    members[1].callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tmp_path_factory.mktemp("tb"))))
    stopped = Member(compiled(mlp, make_loss(MLP_MEMBERS[0])), callbacks=[StopAfterFirst()], name="stops")
    train_population(members + [stopped], XT, YT, validation_data=(XV, YV), epochs=2, batch_size=32,
                     seed=SEED)
    return members, stopped, records


def test_mlp_members_match_solo_fits(mlp_population):
    members, stopped, records = mlp_population
    solos = [solo(mlp, make_loss(spec)) for spec in MLP_MEMBERS]
    for spec, member, (model, history) in zip(MLP_MEMBERS, members, solos):
        assert member.failure is None and member.stopped_epoch is None
        assert_same_trial(member, model, history)
        if spec == MLP_MEMBERS[0]:  # the member that stopped itself kept its first epoch
            assert stopped.stopped_epoch == 0 and len(stopped.history["loss"]) == 1
            for name, values in history.items():
                assert stopped.history[name][0] == pytest.approx(values[0], rel=RTOL)
    # Callbacks saw the member's own logs, and its current weights at each epoch end.
    assert [r[0] for r in records] == [0, 1]
    for epoch, logs, weights in records:
        assert logs == {name: values[epoch] for name, values in members[0].history.items()}
    for a, b in zip(records[-1][2], members[0].model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(records[0][2], records[1][2]))
    # TensorBoard wrote the member's epochs and its evaluations at the member's own step counts.
    from tensorboard.backend.event_processing import event_accumulator

    log_dir = members[1].callbacks[0].log_dir
    val = event_accumulator.EventAccumulator(os.path.join(log_dir, "validation"))
    val.Reload()
    steps = [e.step for e in val.Tensors("evaluation_loss_vs_iterations")]
    values = [float(tf.make_ndarray(e.tensor_proto)) for e in val.Tensors("epoch_loss")]
    assert steps == [7, 14]
    np.testing.assert_allclose(values, members[1].history["val_loss"], rtol=1e-6)
    # The member's step count is fit's (callbacks log against it); the population's own optimizer and metric
    # state trained and scored it, so the member's optimizer holds no moments.
    assert int(members[2].model.optimizer.iterations.numpy()) == 14
    assert not members[2].model.optimizer.built


def test_conv_batchnorm_dropout_members_match_solo_fits():
    members = [Member(compiled(conv, make_loss(spec))) for spec in CONV_MEMBERS]
    train_population(members, XT, YT, validation_data=(XV, YV), epochs=2, batch_size=32, seed=SEED)
    for spec, member in zip(CONV_MEMBERS, members):
        model, history = solo(conv, make_loss(spec))
        # model.variables include BatchNormalization's moving statistics and Dropout's seed state
        assert_same_trial(member, model, history)


def test_stopped_members_leave_the_stack_and_the_others_go_on_exactly(capsys, monkeypatch):
    # Two of four conv members stop after their first epoch; the other two are restacked without them (a new
    # trace of a population of 2, the optimizer's slots carried over) and still end as their solo fits. (For a
    # model this small masking is cheaper than a new trace: RESTACK_COST 0 makes the restack happen anyway.)
    from losstune.population import driver

    monkeypatch.setattr(driver, "RESTACK_COST", 0.0)
    class StopAfterFirst(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    specs = CONV_MEMBERS[:2] + CONV_MEMBERS[:2]
    members = [Member(compiled(conv, make_loss(spec)), callbacks=[StopAfterFirst()] if k >= 2 else [])
               for k, spec in enumerate(specs)]
    train_population(members, XT, YT, validation_data=(XV, YV), epochs=3, batch_size=32, seed=SEED, verbose=1)
    assert "population: 2 members go on as a population of 2 (2 stopped)" in capsys.readouterr().out
    for k, (spec, member) in enumerate(zip(specs, members)):
        model = compiled(conv, make_loss(spec))
        keras.utils.set_random_seed(SEED)
        history = model.fit(XT, YT, batch_size=32, epochs=3, shuffle=True, validation_data=(XV, YV), verbose=0,
                            callbacks=[StopAfterFirst()] if k >= 2 else []).history
        assert member.stopped_epoch == (0 if k >= 2 else None)
        assert_same_trial(member, model, history)


class Confident(keras.losses.Loss):
    """Cross-entropy that turns NaN once the model predicts any class with probability above `limit`."""

    def __init__(self, limit=0.5, name="confident"):
        super().__init__(name=name)
        self.limit = limit

    def call(self, y_true, y_pred):
        ce = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        return ce + keras.ops.where(keras.ops.max(y_pred) > self.limit, float("nan"), 0.0)

    def get_config(self):
        return {"limit": self.limit, "name": self.name}


def test_a_non_finite_member_fails_alone():
    from losstune.hypermodel import NonFiniteLossGuard

    healthy = ("crossentropy", {}, None)

    def sgd(loss):
        return compiled(mlp, loss, optimizer={"class_name": "SGD", "config": {"learning_rate": 0.5}})

    members = [Member(sgd(make_loss(healthy))), Member(sgd(Confident()))]
    train_population(members, XT, YT, validation_data=(XV, YV), epochs=2, batch_size=32, seed=SEED)
    # The solo trial of the failing loss stops at the same batch, with the same message.
    model, guard = sgd(Confident()), NonFiniteLossGuard()
    keras.utils.set_random_seed(SEED)
    model.fit(XT, YT, batch_size=32, epochs=2, validation_data=(XV, YV), callbacks=[guard], verbose=0)
    assert guard.failure and members[1].failure == guard.failure, (members[1].failure, guard.failure)
    assert members[1].stopped_epoch == int(guard.failure.rsplit(" ", 1)[1])
    assert all(np.all(np.isfinite(w)) for w in members[1].model.get_weights())  # its last finite weights
    solo_model = sgd(make_loss(healthy))
    keras.utils.set_random_seed(SEED)
    history = solo_model.fit(XT, YT, batch_size=32, epochs=2, validation_data=(XV, YV), verbose=0).history
    assert members[0].failure is None
    assert_same_trial(members[0], solo_model, history)


# --------------------------------------------------------------------------------------------------------
class CustomStep(keras.Model):
    def train_step(self, data):
        return super().train_step(data)


class RawCounter(keras.layers.Layer):
    """Keeps TensorFlow state of its own, outside Keras's variables: it cannot be mapped over members."""

    def build(self, input_shape):
        self.count = tf.Variable(0.0, trainable=False)

    def call(self, x):
        return x + self.count.assign_add(1.0)


def test_vectorizable_says_why_members_cannot_share_a_computation():
    model = compiled(mlp, "sparse_categorical_crossentropy")
    assert vectorizable(model) is None
    assert vectorizable(compiled(conv, "sparse_categorical_crossentropy")) is None
    inputs = keras.Input((4,))
    custom = CustomStep(inputs, keras.layers.Dense(2)(inputs))
    custom.compile(optimizer="adam", loss="mse")
    assert "overrides `train_step`" in vectorizable(custom)
    assert "global_clipnorm" in vectorizable(model, keras.optimizers.Adam(global_clipnorm=1.0))
    assert "clipnorm" in vectorizable(model, keras.optimizers.SGD(clipnorm=1.0))
    assert vectorizable(model, keras.optimizers.SGD(clipvalue=1.0)) is None
    assert "Adafactor" in vectorizable(model, keras.optimizers.Adafactor())
    stateful = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), RawCounter(), keras.layers.Dense(2)])
    stateful.compile(optimizer="adam", loss="mse")
    reason = vectorizable(stateful)
    assert reason and reason.startswith("a layer does not vectorize"), reason
    two = keras.Input((4,))
    outputs = keras.Model(two, [keras.layers.Dense(1)(two), keras.layers.Dense(1)(two)])
    outputs.compile(optimizer="adam", loss="mse")
    assert "2 outputs" in vectorizable(outputs)
    # train_population traces the step itself and refuses before touching any weight
    members = [Member(stateful)]
    before = [w.copy() for w in stateful.get_weights()]
    with pytest.raises(ValueError, match="cannot be trained as one population: a layer does not vectorize"):
        train_population(members, XT[:, :4], np.zeros((len(XT), 2), "float32"), epochs=1, batch_size=32, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, stateful.get_weights()))
    with pytest.raises(ValueError, match="global_clipnorm"):
        members = [Member(compiled(mlp, "sparse_categorical_crossentropy",
                                   optimizer=keras.optimizers.Adam(global_clipnorm=1.0)))]
        train_population(members, XT, YT, epochs=1, batch_size=32, seed=0)


def test_train_population_checks_its_arguments():
    def members():
        return [Member(compiled(mlp, "sparse_categorical_crossentropy")) for _ in range(2)]

    with pytest.raises(ValueError, match="`members` must be a non-empty list of Member"):
        train_population([], XT, YT, epochs=1, batch_size=32, seed=0)
    with pytest.raises(ValueError, match="`epochs` must be an integer >= 0, got -1"):
        train_population(members(), XT, YT, epochs=-1, batch_size=32, seed=0)
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1, got 0"):
        train_population(members(), XT, YT, epochs=1, batch_size=0, seed=0)
    with pytest.raises(ValueError, match="`shuffle` must be True, False or \"batch\""):
        train_population(members(), XT, YT, epochs=1, batch_size=32, seed=0, shuffle="yes")
    with pytest.raises(ValueError, match="Data cardinality is ambiguous"):  # Keras's own check of (x, y)
        train_population(members(), XT, YT[:10], epochs=1, batch_size=32, seed=0)
    with pytest.raises(ValueError, match="`validation_data` must be \\(x_val, y_val\\)"):
        train_population(members(), XT, YT, validation_data=(XV,), epochs=1, batch_size=32, seed=0)
    other = compiled(conv, "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="different architecture"):
        train_population(members()[:1] + [Member(other)], XT, YT, epochs=1, batch_size=32, seed=0)
    sgd = compiled(mlp, "sparse_categorical_crossentropy", optimizer="sgd")
    with pytest.raises(ValueError, match="share one optimizer configuration"):
        train_population(members()[:1] + [Member(sgd)], XT, YT, epochs=1, batch_size=32, seed=0)
    with pytest.raises(ValueError, match="`model` must be a keras.Model"):
        Member("not a model")


# --------------------------------------------------------------------------------------------------------
JAX_SCRIPT = r"""
import json, sys
import numpy as np, keras
sys.path.insert(0, sys.argv[1])
import test_population as t
from losstune.population import Member, train_population
assert keras.backend.backend() == "jax"
out = {}
# Two focal members (one mapped group, gamma per member) of the Conv2D + BatchNormalization + Dropout model,
# on whole batches only (JAX compiles a step per batch shape, on both sides); the member compared is the one
# whose gamma is not the group model's own.
t.XT, t.YT, t.XV, t.YV = t.X[:192], t.Y[:192], t.X[200:264], t.Y[200:264]
members = [Member(t.compiled(t.conv, t.make_loss(s))) for s in t.MLP_MEMBERS[:2]]
train_population(members, t.XT, t.YT, validation_data=(t.XV, t.YV), epochs=2, batch_size=32, seed=t.SEED)
model, history = t.solo(t.conv, t.make_loss(t.MLP_MEMBERS[1]))
out["dw"] = max(float(np.max(np.abs(np.asarray(v) - np.asarray(w))))
                for v, w in zip(model.variables, members[1].model.variables))
out["dh"] = max(abs(a - b) / max(abs(a), 1e-6) for k in history for a, b in zip(history[k], members[1].history[k]))
out["same_logs"] = sorted(history) == sorted(members[1].history)
# population="auto" on JAX's CPU device reads the host's free memory
from losstune.population import auto_size, free_memory_bytes
out["free"] = free_memory_bytes()
out["auto"] = auto_size(members[0].model, 32, limit=8)[0]
print("RESULT" + json.dumps(out))
"""
