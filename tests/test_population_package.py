"""losstune.population as a package: the Keras and TensorFlow private names it relies on, the engine's shared
retry when a step cannot be traced, the one architecture key, and `train_members`' fallback to serial trials.

The private-name tests fail loudly, naming what the population would lose, when an upgrade of Keras (3.x) or
TensorFlow (2.x) changes one of them (each is marked `# Keras private` / `# TensorFlow private` where used).
"""

import inspect
import io

import keras
import numpy as np
import pytest

from losstune.checks import positive_int
from losstune.population import Member, NotVectorizable, architecture_key, train_members, train_population
from losstune.population.engine import Engine
from losstune.population.engine_jax import JaxEngine
from losstune.population.engine_tf import TFEngine


def _dense_model(units=3, inputs=4, layer=keras.layers.Dense):
    return keras.Sequential([keras.Input((inputs,)), layer(units)])


# --------------------------------------------------------------------------------------------------------
# Keras private names (3.x)
# --------------------------------------------------------------------------------------------------------
def test_keras_backend_trainers_hold_the_step_methods_a_model_inherits():
    # eligibility.backend_trainer_class: a model whose step methods are not the trainer's has its own step.
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    for method in ("train_step", "test_step", "compute_loss", "compute_metrics"):
        assert getattr(keras.Model, method) is getattr(TensorFlowTrainer, method), (
            f"keras.Model.{method} no longer comes from TensorFlowTrainer: populations cannot tell a custom step")
    pytest.importorskip("jax")
    from keras.src.backend.jax.trainer import JAXTrainer

    for method in ("train_step", "test_step", "compute_loss", "compute_metrics"):
        assert callable(getattr(JAXTrainer, method, None)), f"JAXTrainer.{method} is gone"


def test_keras_epoch_iterators_are_what_stream_builds():
    # stream.Stream builds the backend trainer's own epoch iterator, with `fit`'s arguments, and draws from it
    # as `fit` does: `for _, _, iterator in it: next(iterator)`, `reset()`, `num_batches`, `catch_stop_iteration`.
    from keras.src.backend.tensorflow.trainer import TFEpochIterator

    params = set(inspect.signature(TFEpochIterator.__init__).parameters)
    params |= set(inspect.signature(TFEpochIterator.__mro__[1].__init__).parameters)
    assert {"x", "y", "sample_weight", "batch_size", "steps_per_epoch", "shuffle", "steps_per_execution",
            "distribute_strategy"} <= params, f"TFEpochIterator's arguments changed: {sorted(params)}"
    for name in ("reset", "num_batches", "catch_stop_iteration"):
        assert hasattr(TFEpochIterator, name), f"EpochIterator.{name} is gone"
    from losstune.population import Stream

    stream = Stream(np.arange(5, dtype="float32"), np.zeros(5), batch_size=2)
    assert stream.steps == 3 and [len(x) for x, _, _ in stream.epoch()] == [2, 2, 1]
    pytest.importorskip("jax")
    from keras.src.backend.jax.trainer import JAXEpochIterator  # noqa: F401  (stream.py imports it on JAX)


def test_keras_compile_metrics_keep_unweighted_and_weighted_lists():
    # groups.masked_metrics (folds as members) updates every compiled metric with the member's mask:
    # `Model._compile_metrics._flat_metrics` (`metrics=`, updated without sample weights by Keras) and
    # `_flat_weighted_metrics` (`weighted_metrics=`).
    model = _dense_model()
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"], weighted_metrics=["mse"])
    model.compute_metrics(np.zeros((2, 4), "float32"), np.zeros((2, 3), "float32"), np.zeros((2, 3), "float32"), None)
    container = model._compile_metrics

    def names(flat):  # one MetricsList per output, passing its sample weight on to each of its metrics
        return [m.name for entry in flat if entry for m in entry.metrics]

    assert names(container._flat_metrics) == ["mae"], "CompileMetrics._flat_metrics changed"
    assert names(container._flat_weighted_metrics) == ["mse"], "CompileMetrics._flat_weighted_metrics changed"


def test_keras_layers_say_whether_call_takes_training():
    # forward.Forward and engine.Engine._probe pass `training=` only where `call` takes it.
    assert _dense_model()._call_has_training_arg is True, "Layer._call_has_training_arg is gone or changed"

    class NoTraining(keras.layers.Layer):
        def call(self, x):
            return x

    assert NoTraining()._call_has_training_arg is False


def test_keras_losses_override_replaces_a_models_own_losses():
    # groups.member_loss hands a member's regularizer and add_loss terms to compute_loss through it.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, kernel_regularizer="l2")])
    assert model._losses_override == [], "Layer._losses_override is gone"
    model._losses_override = [keras.ops.convert_to_tensor(5.0)]
    try:
        assert [float(v) for v in model.losses] == [5.0], "model.losses no longer returns _losses_override"
    finally:
        model._losses_override = []
    assert len(model.losses) == 1 and float(model.losses[0]) != 5.0


def test_keras_compiled_loss_lists_its_loss_objects():
    # groups.compiled_losses: a group patches the loss object the compiled loss calls.
    model = _dense_model()
    loss = keras.losses.Huber(delta=2.0)
    model.compile(optimizer="adam", loss=loss)
    x, y = np.zeros((2, 4), "float32"), np.zeros((2, 3), "float32")
    model.compute_loss(x, y, model(x), None, training=False)
    flat = model._compile_loss._flat_losses
    assert isinstance(flat, list) and any(entry[1] is loss for entry in flat), (
        f"Model._compile_loss._flat_losses no longer holds (path, loss, ...) entries: {flat!r}")


def test_keras_loss_function_wrapper_keeps_its_keyword_arguments():
    # groups.loss_kwargs / patched: the numbers a group maps over live in `_fn_kwargs`.
    from keras.src.losses.losses import LossFunctionWrapper

    wrapper = LossFunctionWrapper(keras.losses.huber, delta=2.0)
    assert isinstance(wrapper._fn_kwargs, dict) and wrapper._fn_kwargs == {"delta": 2.0}, (
        "LossFunctionWrapper._fn_kwargs is gone or no longer a dict")
    assert keras.losses.Huber(delta=0.5)._fn_kwargs["delta"] == 0.5
    wrapper._fn_kwargs["delta"] = 1.0  # updated in place, it changes what the wrapper computes
    y, p = np.zeros((1, 1), "float32"), np.full((1, 1), 3.0, "float32")
    assert float(wrapper(y, p)) == pytest.approx(float(keras.losses.huber(y, p, delta=1.0)[0]))


def test_keras_loss_tracker_is_the_mean_behind_the_logged_loss():
    # groups.member_loss updates it after compute_loss, as Keras's train_step does.
    model = _dense_model()
    model.compile(optimizer="adam", loss="mse")
    assert isinstance(model._loss_tracker, keras.metrics.Mean), "Model._loss_tracker is gone or not a Mean"
    assert model._loss_tracker in model.metrics


def test_keras_optimizer_records_variables_excluded_from_weight_decay():
    # eligibility.optimizer_reason refuses var_list exclusions (they name one model's variables).
    model = _dense_model()
    optimizer = keras.optimizers.AdamW()
    assert not getattr(optimizer, "_exclude_from_weight_decay", None)
    optimizer.exclude_from_weight_decay(var_list=[model.trainable_variables[0]])
    assert optimizer._exclude_from_weight_decay, "Optimizer._exclude_from_weight_decay is gone"


def test_keras_seed_generator_state_is_named_as_the_population_looks_for_it():
    # forward.seed_states tells Dropout's seed state from moving statistics by this name.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5), keras.layers.BatchNormalization()])
    names = [v.name for v in model.non_trainable_variables]
    assert names.count("seed_generator_state") == 1, f"the seed state's variable name changed: {names}"


# --------------------------------------------------------------------------------------------------------
# TensorFlow private names (2.x): the grouped Conv2D converter
# --------------------------------------------------------------------------------------------------------
def test_tensorflow_pfor_converter_registry_and_helpers():
    from tensorflow.python.ops.parallel_for import pfor

    assert isinstance(pfor._pfor_converter_registry, dict) and "Conv2D" in pfor._pfor_converter_registry, (
        "pfor._pfor_converter_registry no longer maps op types to converters")
    assert list(inspect.signature(pfor._create_op).parameters) == ["op_type", "inputs", "op_dtypes", "attrs"], (
        "pfor._create_op's signature changed")
    assert list(inspect.signature(pfor.wrap).parameters)[:2] == ["tensor", "is_stacked"], "pfor.wrap changed"
    assert {"t", "is_stacked", "is_sparse_stacked"} <= set(pfor.WrappedTensor._fields), "WrappedTensor changed"
    assert all(hasattr(pfor._PforInput, name) for name in ("op", "inputs", "outputs")), "_PforInput changed"


def test_grouped_conv2d_converter_matches_each_members_convolution():
    import tensorflow as tf
    from tensorflow.python.ops.parallel_for import pfor

    from losstune.population.forward import vmap

    rng = np.random.default_rng(0)
    filters = rng.normal(size=(3, 2, 2, 2, 4)).astype("float32")  # K = 3 members
    stacked_x = rng.normal(size=(3, 5, 6, 6, 2)).astype("float32")
    mapped = vmap(lambda a: tf.nn.conv2d(a[0], a[1], 1, "VALID"), (tf.constant(stacked_x), tf.constant(filters)))
    assert getattr(pfor._pfor_converter_registry["Conv2D"], "losstune_converter", False)
    for k in range(3):
        np.testing.assert_allclose(mapped[k], tf.nn.conv2d(stacked_x[k], filters[k], 1, "VALID"), atol=1e-5)


# --------------------------------------------------------------------------------------------------------
# The engine: one retry for both backends
# --------------------------------------------------------------------------------------------------------
def test_the_trace_retry_lives_once_in_the_backend_free_engine():
    assert issubclass(TFEngine, Engine) and issubclass(JaxEngine, Engine)
    assert "_trace_with_retry" in Engine.__dict__
    assert "_trace_with_retry" not in TFEngine.__dict__ and "_trace_with_retry" not in JaxEngine.__dict__
    assert {"_trace_steps", "_trace_probe", "_init_state", "_train_batch"} <= Engine.__abstractmethods__
    assert not TFEngine.__abstractmethods__ and not JaxEngine.__abstractmethods__


def _huber_members(deltas):
    def build(delta):
        keras.utils.set_random_seed(0)
        model = _dense_model()
        model.compile(optimizer="adam", loss=keras.losses.Huber(delta=delta))
        return Member(model)

    return [build(d) for d in deltas]


def _tracing_engine(base, fails):
    """`base` with a step trace that fails while any group is mapped (`fails="mapped"`) or always."""

    class Engine_(base):
        traces = []

        def _trace_steps(self):
            self.traces.append([g.mapped for g in self.groups])
            if fails == "always" or any(g.mapped for g in self.groups):
                raise RuntimeError("this metric does not map\nsecond line")
            super()._trace_steps()

    return Engine_


def test_a_failed_trace_retries_unmapped_then_refuses():
    x, y = np.zeros((8, 4), "float32"), np.zeros((8, 3), "float32")
    engine = _tracing_engine(TFEngine, "mapped")(_huber_members([1.0, 2.0]), (x[:4], y[:4], None))
    assert engine.traces == [[True], [False]] and not engine.groups[0].mapped
    members = _huber_members([1.0, 2.0])
    before = [w.copy() for w in members[0].model.get_weights()]
    refusing = _tracing_engine(TFEngine, "always")
    with pytest.raises(NotVectorizable, match="a layer does not vectorize: this metric does not map") as info:
        refusing(members, (x[:4], y[:4], None))
    assert refusing.traces == [[True], [False]] and info.value.reason.endswith("this metric does not map")
    assert all(np.array_equal(a, b) for a, b in zip(before, members[0].model.get_weights()))
    alone = _tracing_engine(TFEngine, "always")
    with pytest.raises(NotVectorizable):
        alone(_huber_members([1.0]), (x[:4], y[:4], None))
    assert alone.traces == [[False]]  # nothing mapped: no retry


JAX_SCRIPT = r"""
import json, sys
import numpy as np, keras
sys.path.insert(0, sys.argv[1])
import test_population_package as t
from losstune.population import Member, NotVectorizable, train_population
from losstune.population.engine_jax import JaxEngine
assert keras.backend.backend() == "jax"
out = {}
x, y = np.random.default_rng(0).normal(size=(8, 4)).astype("float32"), np.zeros((8, 3), "float32")
engine = t._tracing_engine(JaxEngine, "mapped")(t._huber_members([1.0, 2.0]), (x[:4], y[:4], None))
out["retried"] = engine.traces

class Branching(keras.layers.Layer):
    # Python branching on a value: fine eagerly, impossible to trace under jax.jit / jax.vmap.
    def call(self, x):
        return x * 2.0 if float(keras.ops.sum(x)) > 1e9 else x

    def compute_output_shape(self, shape):
        return shape

keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), Branching()])
model.compile(optimizer="adam", loss="mse")
before = [w.copy() for w in model.get_weights()]
try:
    train_population([Member(model)], x, y, epochs=1, batch_size=4, seed=0)
    out["refused"] = None
except NotVectorizable as err:
    out["refused"] = err.reason
out["untouched"] = all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
print("RESULT" + json.dumps(out))
"""


# --------------------------------------------------------------------------------------------------------
# One architecture key
# --------------------------------------------------------------------------------------------------------
class OtherDense(keras.layers.Dense):
    """Dense's weights under another class: what it computes may differ."""


def test_architecture_key_separates_layer_classes_and_equates_two_builds():
    assert architecture_key(_dense_model()) == architecture_key(_dense_model())
    assert architecture_key(_dense_model()) != architecture_key(_dense_model(layer=OtherDense))
    assert architecture_key(_dense_model(units=3)) != architecture_key(_dense_model(units=4))
    dropout = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dropout(0.1)])
    assert architecture_key(dropout) != architecture_key(_dense_model())  # a seed state, another layer


def test_architecture_key_separates_layers_that_differ_only_in_configuration():
    # A build_model with its own hyperparameters (an activation, a dropout rate) gives equal weight shapes;
    # a population runs its first member's forward pass for all, so these must not share one.
    def build(activation="relu", rate=0.1):
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation=activation),
                                 keras.layers.Dropout(rate)])

    assert architecture_key(build()) == architecture_key(build())
    assert architecture_key(build()) != architecture_key(build(activation="tanh"))
    assert architecture_key(build()) != architecture_key(build(rate=0.5))
    nested = [keras.Sequential([keras.Input((4,)), build(activation=a)]) for a in ("relu", "relu", "tanh")]
    assert architecture_key(nested[0]) == architecture_key(nested[1]) != architecture_key(nested[2])


def test_train_population_refuses_members_of_two_architectures_by_the_same_key():
    def member(layer):
        keras.utils.set_random_seed(0)
        model = _dense_model(layer=layer)
        model.compile(optimizer="adam", loss="mse")
        return Member(model)

    x, y = np.zeros((8, 4), "float32"), np.zeros((8, 3), "float32")
    with pytest.raises(ValueError, match="different architecture"):
        train_population([member(keras.layers.Dense), member(OtherDense)], x, y, epochs=1, batch_size=4, seed=0)


# --------------------------------------------------------------------------------------------------------
# train_members: one population per architecture, or serial trials with one line
# --------------------------------------------------------------------------------------------------------
class CustomStep(keras.Model):
    def train_step(self, data):
        return super().train_step(data)


def _custom_step_model(hp):
    inputs = keras.Input((8,))
    return CustomStep(inputs, keras.layers.Dense(3, activation="softmax")(inputs))


def _members(build, execution, count=2):
    import keras_tuner

    from losstune.hypermodel import LossHyperModel

    hypermodel = LossHyperModel(build, "imbalanced_multiclass", class_counts=[20, 20, 20], seed=1)
    hypermodel.execution = 7  # what KerasTuner's own loop would have set; train_members must not touch it
    members = []
    for k in range(count):
        hp = keras_tuner.HyperParameters()
        members.append(Member(hypermodel.build(hp, execution), name=f"m{k}", hyperparameters=hp))
    return hypermodel, members


def _fit():
    from tests.helpers import tiny_multiclass

    x, y = tiny_multiclass(n=60)
    return dict(x=x[:40], y=y[:40], validation_data=(x[40:], y[40:]), epochs=1, batch_size=16)


def test_train_members_falls_back_to_serial_trials_with_one_line():
    hypermodel, members = _members(_custom_step_model, execution=2)
    stream = io.StringIO()
    by_execution = {2: members}
    assert train_members(hypermodel, by_execution, _fit(), stream) is by_execution
    assert stream.getvalue() == ("population: training 2 trial(s) one by one: the model overrides `train_step`; "
                                 "a population runs Keras's own step for every member\n")
    assert hypermodel.execution == 7
    for member in members:
        assert member.failure is None and len(member.history["loss"]) == 1 and "val_loss" in member.history


def test_a_population_that_fails_mid_training_is_retrained_from_fresh_models(monkeypatch):
    from losstune.population import trials
    from tests.helpers import mlp

    hypermodel, members = _members(mlp(3, inputs=8), execution=1)
    old = [m.model for m in members]

    def broken(group, *args, **kwargs):
        group[0].model.set_weights([w + 1.0 for w in group[0].model.get_weights()])  # it moved a weight
        raise RuntimeError("the engine broke\nat some depth")

    monkeypatch.setattr(trials, "train_population", broken)
    stream = io.StringIO()
    train_members(hypermodel, {1: members}, _fit(), stream)
    assert stream.getvalue() == "population: training 2 trial(s) one by one: the population failed (the engine broke)\n"
    assert all(m.model is not o for m, o in zip(members, old))
    assert all(m.failure is None and len(m.history["loss"]) == 1 for m in members)
    members[0].hyperparameters = None  # nothing to rebuild it from: it fails instead of training moved weights
    train_members(hypermodel, {1: members}, _fit(), io.StringIO())
    assert "no hyperparameters" in members[0].failure and members[1].failure is None


def test_train_members_trains_one_architecture_as_one_population():
    from tests.helpers import mlp

    hypermodel, members = _members(mlp(3, inputs=8), execution=0, count=3)
    stream = io.StringIO()
    train_members(hypermodel, {0: members}, _fit(), stream)
    assert stream.getvalue() == "" and hypermodel.execution == 7
    for member in members:
        assert member.failure is None and len(member.history["val_loss"]) == 1


def test_positive_int_names_the_argument():
    assert positive_int("epochs", np.int64(3)) == 3
    with pytest.raises(ValueError, match=r"`epochs` must be an integer >= 0, got -1\."):
        positive_int("epochs", -1, minimum=0)
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1, got True"):
        positive_int("batch_size", True)


def test_stopped_members_are_restacked_only_when_that_pays():
    # driver._Loop.compact: the stopped rows' share of an epoch's time over the remaining epochs against
    # RESTACK_COST x what building the engine cost.
    import types

    from losstune.population import driver

    loop = driver._Loop.__new__(driver._Loop)
    loop.rows, loop.active, loop.restack_seconds, loop.verbose = [0, 1, 2, 3], [0, 1], 2.0, 0
    calls = []
    loop.engine = types.SimpleNamespace(survivors=lambda rows: calls.append(rows) or loop.engine)
    loop.compact(epoch_seconds=1.0, remaining=3)  # saves 2 of 4 rows x 1 s x 3 epochs = 1.5 s < 2 s
    assert calls == [] and loop.rows == [0, 1, 2, 3]
    loop.compact(epoch_seconds=1.0, remaining=5)  # 2.5 s > 2 s
    assert calls == [[0, 1]] and loop.rows == [0, 1]
    loop.compact(epoch_seconds=100.0, remaining=5)  # nothing stopped since
    assert calls == [[0, 1]]
