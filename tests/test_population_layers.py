"""Layer coverage of populations: each layer in a tiny model (tests/helpers.LAYER_CASES), two members with
different losses trained by `train_population`, then the second (`COMPARED`) trained alone with `model.fit`
(same seed). A row either matches, or is refused with a `NotVectorizable` whose reason names the layer (class
and name). Nothing turns serial silently: the ops TensorFlow maps with a loop over members (no vectorized
form) are listed per row and checked.

Matching means every variable (weights, moving statistics, seed states) within 1e-5 absolute after 2 epochs,
on weights of O(0.1-1), and every logged value within 1e-5 relative; measured differences are 0 to 2e-7
(float rounding: a batched matmul or convolution may round differently from a single one). Where a weight has
a zero gradient by construction (a bias before BatchNormalization, MultiHeadAttention's key bias), Adam turns
the rounding noise of that zero into steps of ~1e-5 that differ between any two computations: the models
avoid the first and the MultiHeadAttention row trains with SGD.
"""

from dataclasses import dataclass

import keras
import numpy as np
import pytest

from losstune import families
from losstune.population import Member, NotVectorizable, train_population, vectorizable
from tests.helpers import TINY, layer_data, layer_model, pfor_loops

SEED = 3
EPOCHS, BATCH, N, N_VAL = 2, 16, 64, 32
ATOL, RTOL = 1e-5, 1e-5
# One loss group mapped over gamma: the second member's loss is not the group model's own.
LOSSES = [("focal", {"gamma": 0.5}), ("focal", {"gamma": 2.0})]
# The member compared with its solo fit: the second, whose loss, weights and state a mix-up between members
# would change (and the two members must differ). Every member of the engine's generic bookkeeping is compared
# in tests/test_population.py; comparing both here too costs a third of this file's time.
COMPARED = 1


@dataclass(frozen=True)
class Row:
    layer: str  # a key of tests/helpers.LAYER_CASES
    optimizer: str = "adam"
    refused: bool = False  # on TensorFlow: NotVectorizable, naming the layer
    loops: tuple = ()  # TensorFlow ops mapped by a loop over members (no vectorized form)
    validate: bool = False  # the layer acts differently at inference: validation logs compared too

    @property
    def id(self):
        return self.layer if self.optimizer == "adam" else f"{self.layer}-{self.optimizer}"


ROWS = [
    Row("Dense"), Row("Conv1D"), Row("Conv2D"),
    Row("Conv3D"),  # converters.py: depth taps of grouped Conv2Ds (TensorFlow maps Conv3D by a loop)
    Row("DepthwiseConv2D"), Row("SeparableConv2D"), Row("Conv2DTranspose"),
    Row("MaxPooling2D"), Row("AveragePooling2D"), Row("GlobalAveragePooling2D"),
    Row("BatchNormalization", validate=True), Row("LayerNormalization"), Row("GroupNormalization"),
    # Adam applies an Embedding's sparse TensorFlow gradient slice by slice (eligibility.sparse_gradient_reason)
    Row("Embedding", refused=True), Row("Embedding", optimizer="sgd"),
    Row("LSTM"), Row("GRU"),
    # SGD: the key projection's bias has a zero gradient (softmax ignores a shift shared by all keys), and
    # Adam scales its rounding noise up to steps of ~1e-5 that differ between the two sides (measured 2.5e-5
    # to 4.9e-5 apart over 5 seeds, every other weight within 1e-7).
    Row("MultiHeadAttention", optimizer="sgd"),
    *[Row(name, validate=True) for name in ("Dropout", "GaussianNoise", "RandomFlip", "RandomTranslation",
                                             "RandomRotation", "RandomZoom", "RandomContrast")],
]


def compiled(row, spec, run_eagerly=False):
    """A member's model as a solo trial builds it: seed, build, compile with its own loss and a fresh
    optimizer."""
    family, params = spec
    keras.utils.set_random_seed(SEED)
    model = layer_model(row.layer, TINY)
    model.compile(optimizer=keras.optimizers.get(row.optimizer),
                  loss=families.get(family).build(params, task="multiclass"), run_eagerly=run_eagerly)
    return model


def row_data(row):
    x, y = layer_data(row.layer, TINY, N + N_VAL)
    validation = (x[N:], y[N:]) if row.validate else None
    return x[:N], y[:N], validation


def population(row):
    x, y, validation = row_data(row)
    members = [Member(compiled(row, spec)) for spec in LOSSES]
    train_population(members, x, y, validation_data=validation, epochs=EPOCHS, batch_size=BATCH, seed=SEED)
    return members


def solo(row, spec):
    """The member's solo trial: `model.fit`, run eagerly (the same kernels, data order and random draws as a
    compiled fit, without the trace that dominates on models this small: half the time; tests/test_population.py
    compares with compiled fits)."""
    x, y, validation = row_data(row)
    model = compiled(row, spec, run_eagerly=keras.backend.backend() == "tensorflow")
    keras.utils.set_random_seed(SEED)  # losstune's LossHyperModel seeds again right before fit
    history = model.fit(x, y, validation_data=validation, epochs=EPOCHS, batch_size=BATCH, shuffle=True,
                        verbose=0)
    return model, history.history


def differences(members, solos):
    """(largest |member - solo| over all variables, its variable, largest relative difference of a logged
    value, its name); moving statistics and seed states are variables too."""
    dw, dh = (0.0, ""), (0.0, "")
    for member, (model, history) in zip(members, solos):
        assert sorted(member.history) == sorted(history)
        for v, w in zip(model.variables, member.model.variables):
            dw = max(dw, (float(np.max(np.abs(np.asarray(v) - np.asarray(w)))), v.path))
        for name, values in history.items():
            for a, b in zip(values, member.history[name]):
                dh = max(dh, (abs(a - b) / max(abs(a), 1e-6), name))
    return dw + dh


def named(model, class_name):
    """How a refusal must name the model's layer of that class: its class and name."""
    layer = next(l for l in model.layers if type(l).__name__ == class_name)
    return f"{class_name} {layer.name!r}"


# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.id)
def test_layer_trains_in_a_population_as_alone_or_is_refused_by_name(row):
    if row.refused:
        members = [Member(compiled(row, spec)) for spec in LOSSES]
        x, y, _ = row_data(row)
        with pytest.raises(NotVectorizable) as refusal:
            train_population(members, x, y, epochs=EPOCHS, batch_size=BATCH, seed=SEED)
        assert named(members[0].model, row.layer) in refusal.value.reason, refusal.value.reason
        return
    with pfor_loops() as loops:
        members = population(row)
    assert sorted(set(loops)) == sorted(row.loops), f"ops mapped by a loop over members: {loops}"
    dw, variable, dh, logged = differences(members[COMPARED:COMPARED + 1], [solo(row, LOSSES[COMPARED])])
    assert dw <= ATOL, f"{variable} differs by {dw:.1e}"
    assert dh <= RTOL, f"{logged} differs by {dh:.1e} (relative)"
    assert not np.allclose(members[0].model.get_weights()[-1], members[1].model.get_weights()[-1])


class RawCounter(keras.layers.Layer):
    """Keeps TensorFlow state of its own, outside Keras's variables: it cannot be mapped over members."""

    def build(self, input_shape):
        import tensorflow as tf

        self.count = tf.Variable(0.0, trainable=False)

    def call(self, x):
        return x + self.count.assign_add(1.0)


def test_a_layer_that_cannot_be_mapped_is_named():
    def build():
        keras.utils.set_random_seed(SEED)
        inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), RawCounter(name="counter")],
                                 name="block")
        model = keras.Sequential([keras.Input((8,)), keras.layers.GaussianNoise(0.1), keras.layers.Dense(4), inner,
                                  keras.layers.Dense(3)])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        return model

    # Found by cutting the model after each layer (forward.failing_layer), inside the nested model too; the
    # weightless first layer, run once for all members, is not blamed.
    assert "a layer does not vectorize: RawCounter 'counter': " in vectorizable(build())
    x, y = layer_data("Dense", TINY, N)
    with pytest.raises(NotVectorizable, match="a layer does not vectorize: RawCounter 'counter': "):
        train_population([Member(build()), Member(build())], x, y, epochs=1, batch_size=BATCH, seed=SEED)


class Doubled(keras.layers.Layer):
    """Python code in the step (tf.py_function): `tf.vectorized_map` runs it as a loop over members."""

    def call(self, x):
        import tensorflow as tf

        y = tf.py_function(lambda t: t * 2.0, [x], x.dtype)
        y.set_shape(x.shape)
        return y


def test_a_python_op_is_refused_where_its_gradient_would_run_in_the_loop():
    def build(python_first):
        keras.utils.set_random_seed(SEED)
        inner = [Doubled(name="python"), keras.layers.Dense(4)] if python_first else [
            keras.layers.Dense(4), Doubled(name="python")]
        model = keras.Sequential([keras.Input((8,))] + inner + [keras.layers.Dense(3)])
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    x, y = layer_data("Dense", TINY, N)
    # After a weight layer its gradient runs inside the loop, which traces but fails when run: refused before
    # anything trains, naming the layer (it used to pass the check and fail on the first batch).
    expected = "a layer does not vectorize: Doubled 'python': the gradient of a Python op (EagerPyFunc"
    assert expected in vectorizable(build(False))
    members = [Member(build(False)), Member(build(False))]
    before = members[0].model.get_weights()
    with pytest.raises(NotVectorizable, match=r"the gradient of a Python op \(EagerPyFunc"):
        train_population(members, x, y, epochs=1, batch_size=BATCH, seed=SEED)
    for got, want in zip(members[0].model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    # On the shared input no gradient passes through it: it trains, as alone.
    assert vectorizable(build(True)) is None
    members = [Member(build(True)), Member(build(True))]
    train_population(members, x, y, epochs=1, batch_size=BATCH, seed=SEED)
    alone = build(True)
    keras.utils.set_random_seed(SEED)
    alone.fit(x, y, epochs=1, batch_size=BATCH, verbose=0)
    for got, want in zip(members[0].model.get_weights(), alone.get_weights()):
        np.testing.assert_allclose(got, want, atol=ATOL)


def test_the_search_check_traces_recurrent_layers():
    # `vectorizable` (what a search asks before choosing populations) traced its step with eager constants
    # captured, which broke the mapping of a recurrent layer's while loop (LSTM, GRU): such models trained
    # one by one, refused as "Tensor.op is undefined when eager execution is enabled".
    inputs = keras.Input(TINY.shapes["sequence"])
    outputs = keras.layers.Dense(3)(keras.layers.LSTM(4)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert vectorizable(model) is None


def test_an_embedding_inside_a_custom_layer_is_found():
    # Keras private (3.x): eligibility.sparse_gradient_reason walks layers with `Layer._flatten_layers()`.
    class Tokens(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.table = keras.layers.Embedding(10, 4, name="table")

        def call(self, x):
            return self.table(x)

    inputs = keras.Input((6,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(Tokens()(inputs))))
    model.compile(optimizer="adam", loss="mse")
    assert "Embedding 'table' gets sparse gradients on TensorFlow, which Adam applies" in vectorizable(model)
    assert "SGD with clipvalue" in vectorizable(model, keras.optimizers.SGD(clipvalue=1.0))
    assert vectorizable(model, keras.optimizers.SGD(momentum=0.9)) is None
    assert vectorizable(model, keras.optimizers.Lion()) is None
    model.layers[1].trainable = False  # a frozen table gets no gradient
    assert vectorizable(model) is None


def test_tensorflow_pfor_fallback_converter_takes_what_grouped_conv3d_does_not_map():
    # TensorFlow private (2.x): converters.py's Conv3D converter hands a case it does not map (here a filter
    # shared by all members) to `pfor._fallback_converter`, the loop TensorFlow uses for an op without one.
    import inspect

    import tensorflow as tf
    from tensorflow.python.ops.parallel_for import pfor

    from losstune.population.forward import vmap

    assert list(inspect.signature(pfor._fallback_converter).parameters) == ["pfor_input", "root_cause", "warn"]
    rng = np.random.default_rng(0)
    x, f = rng.normal(size=(2, 3, 4, 4, 4, 2)).astype("float32"), rng.normal(size=(2, 2, 2, 2, 3)).astype("float32")
    with pfor_loops() as loops:
        mapped = vmap(lambda a: tf.nn.conv3d(a, f, [1] * 5, "VALID"), tf.constant(x))
    assert loops == ["Conv3D"] and getattr(pfor._pfor_converter_registry["Conv3D"], "losstune_converter", False)
    for k in range(2):
        np.testing.assert_allclose(mapped[k], tf.nn.conv3d(x[k], f, [1] * 5, "VALID"), atol=1e-5)


def test_keras_accuracy_metric_maps_without_a_loop():
    # Keras's "accuracy" takes an argmax, which calls signbit, a Bitcast on TensorFlow: pfor has no converter
    # for Bitcast and looped over members (converters.py adds one). Members equal their solo trainings.
    from losstune.population.forward import vmap

    x, y = layer_data("Dense", TINY, N, seed=0)

    def compiled(gamma):
        keras.utils.set_random_seed(SEED)
        model = keras.Sequential([keras.Input(TINY.shapes["flat"]), keras.layers.Dense(TINY.width, activation="relu"),
                                  keras.layers.Dense(3, activation="softmax")])
        model.compile(optimizer="adam", loss=families.get("focal").build({"gamma": gamma}, task="multiclass"),
                      metrics=["accuracy"])
        return model

    with pfor_loops() as loops:
        members = [Member(compiled(g)) for g in (0.5, 2.0)]
        train_population(members, x, y, validation_data=(x[:N_VAL], y[:N_VAL]), epochs=EPOCHS, batch_size=BATCH,
                         seed=SEED)
    assert loops == [], f"ops mapped by a loop over members: {loops}"
    solo = compiled(2.0)
    keras.utils.set_random_seed(SEED)
    history = solo.fit(x, y, validation_data=(x[:N_VAL], y[:N_VAL]), epochs=EPOCHS, batch_size=BATCH,
                       shuffle=True, verbose=0).history
    for key in ("accuracy", "val_accuracy"):
        np.testing.assert_allclose(members[1].history[key], history[key], atol=1e-6)
    # the converter itself: a stacked bitcast between types of one width and to a narrower type
    import tensorflow as tf

    values = tf.constant([[1.5, -2.0], [0.0, -0.0]])
    np.testing.assert_array_equal(vmap(lambda v: tf.bitcast(v, tf.int32), values), tf.bitcast(values, tf.int32))
    np.testing.assert_array_equal(vmap(lambda v: tf.bitcast(v, tf.uint8), values), tf.bitcast(values, tf.uint8))


# --------------------------------------------------------------------------------------------------------
# A representative subset, two models (JAX compiles each step, which dominates here): an augmentation layer,
# Conv2D and BatchNormalization; an Embedding (its gradients are dense on JAX on both sides: it trains with
# Adam as alone) and an LSTM. And a layer JAX cannot vmap, named in the refusal.
JAX_ROWS = [Row("RandomFlip+Conv2D+BatchNormalization", validate=True), Row("Embedding+LSTM")]
JAX_SCRIPT = r"""
import json, sys
import jax, keras, numpy as np
sys.path.insert(0, sys.argv[1])
import test_population_layers as t
from losstune.population import Member, NotVectorizable, train_population
assert keras.backend.backend() == "jax"
out = {}
for row in t.JAX_ROWS:
    members = t.population(row)
    out[row.id] = t.differences(members[t.COMPARED:t.COMPARED + 1], [t.solo(row, t.LOSSES[t.COMPARED])])

# A layer that trains alone but cannot be vmapped (a host callback without a vmap rule) is named.
@jax.custom_jvp
def host_double(x):
    return jax.pure_callback(lambda a: np.asarray(a) * 2, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

@host_double.defjvp
def _(primals, tangents):
    return host_double(primals[0]), 2 * tangents[0]

class HostCall(keras.layers.Layer):
    def call(self, x):
        return host_double(x)

def build():
    keras.utils.set_random_seed(t.SEED)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), HostCall(name="host"), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model

x, y = t.layer_data("Dense", t.TINY, t.N)
build().fit(x, y, epochs=1, verbose=0)
try:
    train_population([Member(build()), Member(build())], x, y, epochs=1, batch_size=t.BATCH, seed=t.SEED)
except NotVectorizable as refusal:
    out["refusal"] = refusal.reason
print("RESULT" + json.dumps(out))
"""
