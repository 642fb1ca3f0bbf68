"""Population training: K trials of one model trained at once, vectorized over stacked weights.

A loss search trains the same architecture again and again; only the loss differs between trials. Here the
members' weights are stacked along a new leading axis of size K and the user's model is mapped over them
(`model.stateless_call` under `tf.vectorized_map` on TensorFlow, `jax.vmap` on JAX): one traced step, one
batched matmul per layer instead of K small ones, one pass over the data. It is never K models side by side
in one multi-output model (measured: 1.6x against 8.7x at K = 8).

Every member stays a real trial:

* its own compiled `keras.Model` (loss, metrics, optimizer config); after training it holds the member's
  final weights, and at each epoch end its current weights and step count, for ordinary Keras callbacks.
  The population's stacked state, not the model's own optimizer and metric objects, trains and scores it:
  those are left unbuilt (building K of them cost 0.9 s of a 32-trial search), so a member's checkpoint holds
  its weights and a zero step count (tuner.SaveBestAtTrainEnd): what KerasTuner's `load_model` restores from
  any trial's checkpoint;
* its own loss and metrics. Members whose losses differ only in numbers (focal with different gammas,
  cross-entropy with different class weights) form a group whose loss is mapped over a vector of those
  numbers; each group is traced once per population, whatever its size. A loss that branches in Python on
  one of its numbers cannot take a tensor there: its members are computed one after the other inside the
  same traced step. Either way there is one trace per population, not one per trial;
* gradients that never mix: the population's total loss is the sum of the members' losses and a member's
  weights reach only its own loss;
* its own optimizer state: one optimizer over the stacked variables equals K separate optimizers for
  optimizers whose update is elementwise (SGD, Adam, RMSprop, ...; see `vectorizable`);
* the same initial weights, data order, dropout masks and BatchNormalization statistics as a solo
  `model.fit` with that seed (`epoch_batches` reproduces Keras's shuffling; non-trainable variables,
  moving statistics and seed-generator states, are stacked and updated per member). Results agree with
  solo training up to float rounding (a batched matmul may round differently from a single one); the
  tests hold weights after two epochs to 1e-5;
* its own failure: a member whose loss or gradients become non-finite is frozen from that batch on (its
  update is masked, not its gradient: Adam moves weights even with a zero gradient); the others go on.

    members = [Member(build_and_compile(loss)) for loss in losses]   # same builder, same seed
    train_population(members, x, y, validation_data=(xv, yv), epochs=5, batch_size=32, seed=0)
    members[0].history["val_macro_f1"]
"""

from __future__ import annotations

import json
import math
import os
import time

import keras
import numpy as np
from keras import ops

__all__ = ["Member", "epoch_batches", "train_population", "vectorizable"]

# Optimizers whose update of one weight depends only on that weight's gradient and slots and on the shared
# step count: on stacked variables they act exactly as K separate optimizers. Others (LAMB's trust ratio,
# Adafactor's factored moments, Muon's orthogonalisation) look at whole variables and would couple members.
_ELEMENTWISE_OPTIMIZERS = (
    "SGD", "Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Adagrad", "Adadelta", "Lion", "Ftrl",
)
# Trainer methods a model may not override: the population runs its own step in their place.
_STEP_METHODS = ("train_step", "test_step", "compute_loss", "compute_metrics")


class Member:
    """One trial of a population.

    Attributes:
        model: the member's compiled `keras.Model` (its own loss, metrics and a fresh optimizer). All members
            of a population come from the same builder and seed; after training it holds the member's final
            weights (at each epoch end, its current weights and its optimizer's step count, for callbacks).
        callbacks: `keras.callbacks.Callback` objects for this member alone. They get `on_train_begin`,
            `on_epoch_begin`, `on_test_begin`/`on_test_end`, `on_epoch_end(epoch, logs)` and `on_train_end`
            with the member's own logs; batch-level hooks are not called. A callback that sets
            `model.stop_training` stops this member alone (after that epoch, as in `fit`).
        history: per-epoch logs as in `keras.callbacks.History.history`: "loss", each compiled metric,
            "val_loss", "val_<metric>".
        failure: None, or why the member stopped, e.g. "training loss became nan at batch 12 of epoch 3".
        stopped_epoch: the epoch after which the member stopped (failure or `stop_training`), else None.
        name: a label for messages (default: the model's name).
    """

    def __init__(self, model, callbacks=None, name=None):
        if not isinstance(model, keras.Model):
            raise ValueError(f"`model` must be a keras.Model, got {type(model).__name__}.")
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, keras.callbacks.Callback):
                raise ValueError(
                    f"`callbacks` must hold keras.callbacks.Callback objects, got {type(cb).__name__}."
                )
        self.model = model
        self.callbacks = callbacks
        self.name = name or model.name
        self.history = {}
        self.failure = None
        self.stopped_epoch = None

    def __repr__(self):
        state = f"failed: {self.failure}" if self.failure else f"{len(self.history.get('loss', []))} epochs"
        return f"Member({self.name!r}, {state})"


# --------------------------------------------------------------------------------------------------------
# How many members at once? (population="auto")
# --------------------------------------------------------------------------------------------------------
AUTO_MAX = 32  # the largest population measured (benchmarks/population_search.py)
# Measured (benchmarks/population_memory.py, CPU, TensorFlow, batch 32): each member adds about 63 bytes per
# parameter: weights, gradients, Adam's two slots and the vectorized step's intermediate copies.
BYTES_PER_PARAMETER = 64


def member_bytes(model, batch_size):
    """Estimated memory one more member of `model` needs: BYTES_PER_PARAMETER per parameter, plus a batch of
    every layer's output kept for the backward pass and its gradient (float32), where the layers have
    symbolic outputs (a subclassed model counts its parameters only)."""
    activations = 0
    for layer in model.layers:
        try:
            shapes = [tuple(t.shape) for t in keras.tree.flatten(layer.output)]
        except (AttributeError, ValueError):  # a layer never called on symbolic inputs
            continue
        activations += sum(int(np.prod([d or 1 for d in shape[1:]])) for shape in shapes)
    return BYTES_PER_PARAMETER * model.count_params() + 2 * 4 * batch_size * activations


def free_memory_bytes():
    """Free memory where members train, or None where it cannot be read: the accelerator's under JAX (its
    memory statistics), None on a TensorFlow GPU (TensorFlow reports use, not capacity), else the host's
    (Linux `MemAvailable`, else `sysconf`)."""
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            stats = device.memory_stats() or {}
            if "bytes_limit" in stats:
                return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
            return None
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.config.list_logical_devices("GPU"):
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def auto_size(model, batch_size, limit, free_bytes=None):
    """(K, why): the population size for `model` that `population="auto"` picks: at most `limit` and
    AUTO_MAX members, and no more than fit in half the free memory at `member_bytes` each (`free_bytes`:
    default `free_memory_bytes()`; unknown free memory bounds nothing)."""
    per_member = member_bytes(model, batch_size)
    free = free_memory_bytes() if free_bytes is None else free_bytes
    size, why = min(limit, AUTO_MAX), f"at most {min(limit, AUTO_MAX)}"
    megabytes = f"about {per_member / 2**20:.1f} MB per member for {model.count_params():,} parameters"
    if free is None:
        return size, f"{why}; {megabytes}, free memory unknown"
    fits = int(free // 2 // max(per_member, 1))
    if fits < size:
        size, why = max(fits, 1), f"{fits} fit in half the free memory"
    return size, f"{why}; {megabytes}, {free / 2**20:,.0f} MB free"


# --------------------------------------------------------------------------------------------------------
# Can members share one computation?
# --------------------------------------------------------------------------------------------------------
def vectorizable(model, optimizer=None, *, trace=True):
    """None when members of `model` trained with `optimizer` can share one vectorized computation, else one
    line saying why not (the caller then trains them one by one).

    `optimizer` defaults to `model.optimizer`. Refused: a backend other than TensorFlow and JAX; a model
    that overrides `train_step`, `test_step`, `compute_loss` or `compute_metrics`; a model with several
    outputs; a weight constraint other than `NonNeg` (a norm constraint would see all members at once); an
    optimizer other than the elementwise ones, or with an option that couples members (`clipnorm`,
    `global_clipnorm`: norms over the stacked variable) or that populations do not handle (EMA, gradient
    accumulation, loss scaling); and, with `trace` on TensorFlow, a layer that `tf.vectorized_map` cannot
    map even op by op (checked by tracing a training step of two members on the model's symbolic inputs;
    a model without them is checked when its population is traced). An op without a vectorized form runs
    as a loop over members inside the step: correct, and slower (Conv2D with per-member filters is mapped
    as one grouped convolution, and Dropout draws one mask for all members: see `_Forward`).
    """
    if keras.backend.backend() not in ("tensorflow", "jax"):
        return f"backend {keras.backend.backend()!r}: populations run on TensorFlow and JAX"
    if not isinstance(model, keras.Model):
        return f"not a keras.Model: {type(model).__name__}"
    base = _backend_trainer_class()
    for method in _STEP_METHODS:
        if getattr(type(model), method) is not getattr(base, method):
            return f"the model overrides `{method}`; a population runs Keras's own step for every member"
    if not model.built or not model.trainable_variables:
        return "the model is not built or has no trainable weights (give it an Input or call it once)"
    outputs = getattr(model, "outputs", None)
    if outputs is not None and len(keras.tree.flatten(outputs)) != 1:
        return f"the model has {len(keras.tree.flatten(outputs))} outputs; populations support one output"
    for v in model.trainable_variables:
        if v.constraint is not None and not isinstance(v.constraint, keras.constraints.NonNeg):
            return (f"weight {v.path} has a {type(v.constraint).__name__} constraint, which would act on all "
                    f"members' weights at once")
    reason = _optimizer_reason(model.optimizer if optimizer is None else optimizer)
    if reason:
        return reason
    if trace and keras.backend.backend() == "tensorflow" and getattr(model, "inputs", None):
        return _trace_reason(model)
    return None


def _backend_trainer_class():
    if keras.backend.backend() == "jax":
        from keras.src.backend.jax.trainer import JAXTrainer as trainer
    else:
        from keras.src.backend.tensorflow.trainer import TensorFlowTrainer as trainer
    return trainer


def _optimizer_reason(optimizer):
    if optimizer is None:
        return "no optimizer: compile the model first"
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        return f"optimizer {optimizer!r} is not a keras.optimizers.Optimizer instance"
    name = type(optimizer).__name__
    if type(optimizer) is not getattr(keras.optimizers, name, None) or name not in _ELEMENTWISE_OPTIMIZERS:
        return (f"optimizer {name} is not known to update each weight on its own; populations take "
                f"{', '.join(_ELEMENTWISE_OPTIMIZERS)}")
    for option in ("global_clipnorm", "clipnorm"):
        if getattr(optimizer, option, None):
            return (f"optimizer option {option}={getattr(optimizer, option)} clips by a norm over all members' "
                    f"gradients at once; use clipvalue or train the trials one by one")
    if getattr(optimizer, "use_ema", False):
        return "optimizer option use_ema=True is not supported in populations"
    if getattr(optimizer, "gradient_accumulation_steps", None):
        return "optimizer option gradient_accumulation_steps is not supported in populations"
    if getattr(optimizer, "loss_scale_factor", None):
        return "optimizer option loss_scale_factor is not supported in populations"
    if getattr(optimizer, "_exclude_from_weight_decay", None):
        return "exclude_from_weight_decay(var_list=...) names variables of one model; use var_names="
    return None


def _trace_reason(model):
    """Trace a training step (forward and gradient) of two stacked members; why it fails, or None."""
    import tensorflow as tf

    inputs = model.inputs
    specs = [tf.TensorSpec((2,) + tuple(t.shape[1:]), t.dtype) for t in inputs]
    shared = _seed_states(model)
    stacked = [tf.zeros((2,) + tuple(v.shape), v.dtype) for v in model.trainable_variables]
    # Seed-generator states are passed once, unstacked, as in the population's own step.
    non_trainable = [tf.zeros(tuple(v.shape) if i in shared else (2,) + tuple(v.shape), v.dtype)
                     for i, v in enumerate(model.non_trainable_variables)]
    forward = _Forward(model, shared=shared)

    def step(*x):
        x = x[0] if len(x) == 1 else list(x)
        with tf.GradientTape() as tape:
            tape.watch(stacked)
            out, _, losses = forward(stacked, non_trainable, x, training=True)
            total = tf.reduce_sum(tf.cast(out, "float32")) + tf.add_n([tf.reduce_sum(l) for l in losses] + [0.0])
        tape.gradient(total, stacked)
        return total

    try:
        tf.function(step, autograph=False).get_concrete_function(*specs)
    except Exception as e:  # any failure to trace means: train these members one by one
        return f"a layer does not vectorize: {_first_line(e)}"
    return None


def _first_line(error):
    """The message of a (traced) error without TensorFlow's node dump and traceback lines."""
    lines = [l.strip() for l in str(error).splitlines()
             if l.strip() and l.strip() != "in user code:" and not l.strip().startswith("File ")]
    line = lines[0] if lines else type(error).__name__
    return line.split(" for '{{node")[0].strip()[:300]


# --------------------------------------------------------------------------------------------------------
# Data order
# --------------------------------------------------------------------------------------------------------
def epoch_batches(num_samples, batch_size, *, seed, epochs, shuffle=True):
    """The index batches of each epoch that `model.fit(x, y, batch_size=..., epochs=..., shuffle=...)` uses
    on arrays of `num_samples` rows after `keras.utils.set_random_seed(seed)`: a list (one per epoch) of
    lists of int64 index arrays.

    It runs Keras's own array data adapter the way the backend's `fit` iterates it, so the order is the
    adapter's, not a copy of its algorithm. On TensorFlow the permutation comes from the global seed through
    the adapter's `tf.data` pipeline, and Keras 3.15 draws the same permutation every epoch; on JAX, `fit`
    draws from NumPy's global generator, once to build the model's metrics and then once per epoch.
    Resets the global seeds, as the solo trial does.
    """
    num_samples = _check_int("num_samples", num_samples, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    epochs = _check_int("epochs", epochs, 0)
    if shuffle not in (True, False):
        raise ValueError(f"`shuffle` must be True or False, got {shuffle!r}.")
    if not shuffle:
        order = [np.arange(i, min(i + batch_size, num_samples), dtype="int64")
                 for i in range(0, num_samples, batch_size)]
        return [list(order) for _ in range(epochs)]
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    keras.utils.set_random_seed(int(seed))
    adapter = ArrayDataAdapter(np.arange(num_samples, dtype="int64"), batch_size=batch_size, shuffle=True)
    if keras.backend.backend() == "tensorflow":
        dataset = adapter.get_tf_dataset()
        return [[np.asarray(b, dtype="int64") for b in dataset] for _ in range(epochs)]
    # The JAX trainer's `_symbolic_build` takes a first batch from an iterator of its own before epoch 0.
    next(iter(adapter.get_numpy_iterator()))
    return [[np.asarray(b, dtype="int64") for b in adapter.get_numpy_iterator()] for _ in range(epochs)]


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    return int(value)


# --------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------
def train_population(members, x, y, *, validation_data=None, epochs, batch_size, shuffle=True, seed,
                     verbose=0):
    """Train `members` together; each ends as if `model.fit` had trained it alone with this seed.

    Args:
        members: `Member`s whose models come from the same builder and seed (identical architecture and
            initial weights), each compiled with its own loss and metrics and an optimizer of one common
            configuration. `vectorizable(members[0].model)` must be None.
        x, y: training arrays (x may be a list/tuple/dict of arrays for a multi-input model).
        validation_data: `(x_val, y_val)` or None; validated each epoch with each member's own compiled
            loss and metrics, batched by `batch_size` like `fit`.
        epochs, batch_size, shuffle: as in `model.fit` (`shuffle` True or False).
        seed: the seed a solo trial passes to `keras.utils.set_random_seed` right before `fit`; it fixes the
            data order (see `epoch_batches`).
        verbose: 0 silent, 1 a line for the plan and one per epoch.

    Returns:
        `members`, with `history`, `failure` and `stopped_epoch` filled and each model holding its final
        weights (see `Member`).
    """
    members = list(members) if isinstance(members, (list, tuple)) else members
    if not isinstance(members, list) or not members or not all(isinstance(m, Member) for m in members):
        raise ValueError(f"`members` must be a non-empty list of Member, got {members!r}.")
    epochs = _check_int("epochs", epochs, 0)
    batch_size = _check_int("batch_size", batch_size, 1)
    if shuffle not in (True, False):
        raise ValueError(f"`shuffle` must be True or False, got {shuffle!r}.")
    if verbose not in (0, 1, 2):
        raise ValueError(f"`verbose` must be 0, 1 or 2, got {verbose!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`seed` must be an integer, got {seed!r}.")
    _check_members(members)
    x, y, num_samples = _check_arrays("x", x, "y", y)
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            length = len(validation_data) if isinstance(validation_data, (tuple, list)) else "?"
            raise ValueError(f"`validation_data` must be a tuple (x_val, y_val) or None, got "
                             f"{type(validation_data).__name__} of length {length}.")
        val_x, val_y, _ = _check_arrays("validation_data[0]", validation_data[0],
                                        "validation_data[1]", validation_data[1])
        validation_data = (val_x, val_y)
    order = epoch_batches(num_samples, batch_size, seed=seed, epochs=epochs, shuffle=shuffle)
    engine = (_JaxPopulation if keras.backend.backend() == "jax" else _TFPopulation)(members, x, y)
    if verbose:
        print(f"population of {len(members)}: {engine.describe()}", flush=True)
    return _run(engine, members, order, validation_data, epochs, batch_size, verbose)


def _check_members(members):
    template = members[0].model
    reason = vectorizable(template, trace=False)  # the population's own trace checks the layers
    if reason:
        raise ValueError(f"`members` cannot be trained as one population: {reason}.")
    shapes = [tuple(v.shape) for v in template.variables]
    config = _optimizer_config(template.optimizer)
    for m in members:
        if not m.model.compiled or m.model.loss is None:
            raise ValueError(f"`members`: the model of {m.name!r} is not compiled with a loss.")
        if type(m.model) is not type(template) or len(m.model.layers) != len(template.layers) or \
                [tuple(v.shape) for v in m.model.variables] != shapes:
            raise ValueError(
                f"`members`: {m.name!r} has a different architecture from {members[0].name!r}; a population "
                f"holds models of one builder (group members by architecture)."
            )
        if _optimizer_config(m.model.optimizer) != config:
            raise ValueError(
                f"`members`: {m.name!r} has optimizer {_optimizer_config(m.model.optimizer)}, "
                f"{members[0].name!r} has {config}; members share one optimizer configuration."
            )
        if m.model.optimizer.built and int(m.model.optimizer.iterations.numpy()) != 0:
            raise ValueError(f"`members`: the optimizer of {m.name!r} has already trained; give each member a "
                             f"fresh optimizer.")
    if len({id(m.model) for m in members}) != len(members):
        raise ValueError("`members`: the same model object appears twice; give each member its own model.")


def _optimizer_config(optimizer):
    config = dict(optimizer.get_config())
    config.pop("name", None)
    return config


def _check_arrays(x_name, x, y_name, y):
    def convert(a, name):
        if a is None:
            raise ValueError(f"`{name}` must be an array, got None.")
        if hasattr(a, "element_spec") or callable(getattr(a, "__next__", None)):
            raise ValueError(f"`{name}` must be arrays (NumPy or tensors); datasets and generators are not "
                             f"supported in populations, got {type(a).__name__}.")
        return np.asarray(a)

    x = keras.tree.map_structure(lambda a: convert(a, x_name), x)
    y = convert(y, y_name)
    lengths = {a.shape[0] if a.ndim else None for a in keras.tree.flatten(x)} | {y.shape[0] if y.ndim else None}
    if len(lengths) != 1 or None in lengths or 0 in lengths:
        raise ValueError(f"`{x_name}` and `{y_name}` must hold the same number (>= 1) of examples along their "
                         f"first axis, got {sorted(str(n) for n in lengths)}.")
    return x, y, lengths.pop()


def _run(engine, members, order, validation_data, epochs, batch_size, verbose):
    """The epoch loop of `fit`, for every member at once: callbacks, training, validation, logs."""
    lists = [keras.callbacks.CallbackList(m.callbacks, add_history=False, add_progbar=False, model=m.model,
                                          epochs=epochs, steps=len(order[0]) if order else 0, verbose=0)
             for m in members]
    active = list(range(len(members)))
    logs = [None] * len(members)
    for k, m in enumerate(members):
        m.history, m.failure, m.stopped_epoch = {}, None, None
        m.model.stop_training = False
        lists[k].on_train_begin()
    for epoch in range(epochs):
        if not active:
            break
        start = time.perf_counter()
        for k in active:
            lists[k].on_epoch_begin(epoch)
        engine.reset_metrics()
        engine.train_epoch(order[epoch], epoch)
        engine.sync_iterations(active)  # callbacks such as TensorBoard log against optimizer.iterations
        failed = engine.failures()
        train_logs = engine.collect_logs()
        epoch_logs = {k: train_logs[k] for k in active}
        if validation_data is not None:
            for k in active:
                lists[k].on_test_begin()
            engine.reset_metrics()
            engine.evaluate(validation_data[0], validation_data[1], batch_size)
            test_logs = engine.collect_logs()
            for k in active:
                val = test_logs[k]
                lists[k].on_test_end(val)
                epoch_logs[k].update({f"val_{name}": value for name, value in val.items()})
        # A member that failed keeps the weights it had before its first non-finite step.
        engine.write_back(active)
        for k in active:
            m = members[k]
            if k in failed:
                m.failure = failed[k]
            for name, value in epoch_logs[k].items():
                m.history.setdefault(name, []).append(value)
            lists[k].on_epoch_end(epoch, epoch_logs[k])
            logs[k] = epoch_logs[k]
        stopped = [k for k in active if members[k].failure or members[k].model.stop_training]
        for k in stopped:
            members[k].stopped_epoch = epoch
            lists[k].on_train_end(logs[k])
        active = [k for k in active if k not in stopped]
        engine.freeze(stopped)
        if verbose:
            print(f"population epoch {epoch + 1}/{epochs}: {len(active)} of {len(members)} members training, "
                  f"{time.perf_counter() - start:.2f}s", flush=True)
    for k in active:
        lists[k].on_train_end(logs[k])
    return members


# --------------------------------------------------------------------------------------------------------
# Groups: members whose loss and metrics differ only in numbers share one mapped computation
# --------------------------------------------------------------------------------------------------------
class _Group:
    """Members computed together: same loss function up to the numbers in `params`, same metrics.

    `model` is the first member's model: its compiled loss and metrics compute the whole group, with the
    loss object's numeric arguments replaced by the member's values (`params`: name -> stacked array).
    When `mapped` is False, the members are computed one after the other, each with its own model.
    """

    def __init__(self, indices, models):
        self.indices = list(indices)
        self.models = models
        self.model = models[0]
        self.loss = self.model.loss if isinstance(self.model.loss, keras.losses.Loss) else None
        self.params = {}
        kwargs = [_loss_kwargs(m) for m in models]
        if kwargs[0]:
            for name, value in kwargs[0].items():
                values = [kw[name] for kw in kwargs]
                if _numeric(value) and any(not np.array_equal(np.asarray(v), np.asarray(value)) for v in values):
                    self.params[name] = np.stack([np.asarray(v, dtype=keras.config.floatx()) for v in values])
        # A member alone is computed as it is: mapping it would only add a vectorized copy to the trace.
        self.mapped = len(self.indices) > 1
        self.results_mapped = True

    def describe(self):
        name = getattr(self.loss, "name", None) or str(self.model.loss)
        varied = f" ({', '.join(self.params)} per member)" if self.params else ""
        how = "mapped" if self.mapped else "one by one"
        return f"{name} x{len(self.indices)}{varied}, {how}"


def _loss_kwargs(model):
    """The keyword arguments a compiled loss passes to its function (`LossFunctionWrapper` and losstune's
    losses keep them in `_fn_kwargs`), or None for a loss without them."""
    loss = model.loss
    kwargs = getattr(loss, "_fn_kwargs", None) if isinstance(loss, keras.losses.Loss) else None
    if not isinstance(kwargs, dict) or not any(loss is entry[1] for entry in _compiled_losses(model)):
        return None
    return kwargs


def _compiled_losses(model):
    compile_loss = getattr(model, "_compile_loss", None)
    return getattr(compile_loss, "_flat_losses", None) or []


def _numeric(value):
    """Floats and arrays of floats may differ between members of a group (they become tensors); ints,
    bools, strings and None are part of the loss's identity (they may drive Python branches or shapes)."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        return False
    if isinstance(value, (float, np.floating)):
        return True
    if isinstance(value, (list, tuple, np.ndarray)):
        try:
            return np.asarray(value).dtype.kind == "f"
        except (ValueError, TypeError):  # ragged or mixed
            return False
    return False


def _signature(model):
    """What members must share to be computed together: the loss apart from its numbers, the metrics."""
    loss = model.loss
    kwargs = _loss_kwargs(model)
    if kwargs is not None:
        fixed = tuple(sorted((k, repr(v)) for k, v in kwargs.items() if not _numeric(v)))
        # Zero often switches a term off in a loss's Python code: members at zero form their own group,
        # where the zero stays a Python constant.
        shapes = tuple(sorted((k, np.shape(v), bool(np.ndim(v) == 0 and v == 0))
                              for k, v in kwargs.items() if _numeric(v)))
        loss_part = (type(loss), getattr(loss, "fn", None), loss.reduction, str(loss.dtype), fixed, shapes)
    elif isinstance(loss, keras.losses.Loss):
        loss_part = (type(loss), json.dumps(loss.get_config(), sort_keys=True, default=repr))
    else:
        loss_part = ("identifier", repr(loss))
    try:
        config = model.get_compile_config() or {}
        metrics_part = json.dumps([config.get("metrics"), config.get("weighted_metrics"),
                                   config.get("loss_weights")], sort_keys=True, default=repr)
    except Exception:  # metrics Keras cannot describe: this member is a group of its own
        metrics_part = f"model {id(model)}"
    return loss_part, metrics_part


def _make_groups(models):
    by_key = {}
    for k, model in enumerate(models):
        by_key.setdefault(_signature(model), []).append(k)
    return [_Group(indices, [models[k] for k in indices]) for indices in by_key.values()]


def _member_loss(model, loss, params, x, y, y_pred, extra, metric_values, *, training):
    """One member's loss, as Keras's `train_step`/`test_step` compute it, and its updated metric state.

    `params` replace numeric arguments of `loss` (the loss object inside `model`'s compiled loss) for this
    call; `extra` are the member's additional losses (regularizers, `add_loss`), each one scalar.
    """
    model._losses_override = list(extra)
    try:
        mapping = list(zip(model.metrics_variables, metric_values))
        with _patched(loss, params), keras.StatelessScope(state_mapping=mapping) as scope:
            value = model.compute_loss(x, y, y_pred, None, training=training)
            model._loss_tracker.update_state(value, sample_weight=ops.shape(keras.tree.flatten(x)[0])[0])
            model.compute_metrics(x, y, y_pred, None)
        new_values = [scope.get_current_value(v) for v in model.metrics_variables]
    finally:
        model._losses_override = []
    return value, new_values


class _patched:
    """Context: `loss` computes with `params` (tensors) in place of its numeric arguments."""

    def __init__(self, loss, params):
        self.loss, self.params = loss, params

    def __enter__(self):
        if self.params:
            self.saved = dict(self.loss._fn_kwargs)
            self.loss._fn_kwargs.update(self.params)
        return self

    def __exit__(self, *exc):
        if self.params:
            self.loss._fn_kwargs.clear()
            self.loss._fn_kwargs.update(self.saved)


class _Forward:
    """`model.stateless_call` mapped over the leading (member) axis of the stacked variables.

    Returns the stacked outputs, the stacked updated non-trainable values and the members' additional
    losses (regularizers, `add_loss`), each summed to one scalar per member. Non-trainable variables listed
    in `shared` (seed-generator states equal in every member) are passed once, not mapped: Dropout then
    draws one mask for all members, exactly the mask each solo trial draws, and TensorFlow needs no
    per-member loop for the random op.
    """

    def __init__(self, model, shared):
        self.model = model
        self.shared = tuple(shared)
        self.mapped_nt = [i for i in range(len(model.non_trainable_variables)) if i not in self.shared]

    def __call__(self, trainable, non_trainable, x, *, training):
        model, shared = self.model, self.shared
        shared_values = {i: non_trainable[i] for i in shared}

        def one(args):
            tr, nt_mapped = args
            nt = [None] * len(model.non_trainable_variables)
            for i, value in zip(self.mapped_nt, nt_mapped):
                nt[i] = value
            for i, value in shared_values.items():
                nt[i] = value
            kwargs = {"training": training} if model._call_has_training_arg else {}
            out, new_nt, losses = model.stateless_call(tr, nt, x, return_losses=True, **kwargs)
            losses = [ops.sum(ops.cast(l, keras.config.floatx())) for l in losses]
            return out, [new_nt[i] for i in self.mapped_nt], [new_nt[i] for i in shared], losses

        mapped = [non_trainable[i] for i in self.mapped_nt]
        out, new_mapped, new_shared, losses = _vmap(one, (list(trainable), mapped))
        new_nt = [None] * len(non_trainable)
        for i, value in zip(self.mapped_nt, new_mapped):
            new_nt[i] = value
        for i, value in zip(shared, new_shared):
            new_nt[i] = value[0]  # the same in every member
        return out, new_nt, losses


def _seed_states(model):
    """Indices of the model's non-trainable variables that are states of `keras.random.SeedGenerator`s."""
    return [i for i, v in enumerate(model.non_trainable_variables) if v.name == "seed_generator_state"]


def _vmap(fn, elements):
    if keras.backend.backend() == "jax":
        import jax

        return jax.vmap(fn)(elements)
    import tensorflow as tf

    _install_grouped_conv2d()
    return tf.vectorized_map(fn, elements, fallback_to_while_loop=True)


def _install_grouped_conv2d():
    """Teach `tf.vectorized_map` to map a Conv2D over per-member filters as one grouped convolution.

    TensorFlow's own converter wants the filter to be the same in every iteration and otherwise falls back
    to a loop over members (forward and backward). K members' filters (K, kh, kw, C, F) are one grouped
    convolution of the members' inputs laid side by side in the channels (B, H, W, K*C) with K groups, or,
    when all members see the same input (a first layer), one convolution with K*F output channels. Same
    arithmetic per output element as the members' own convolutions; measured 3.7x faster than the loop
    (K = 16, 8x8x16 -> 32 channels, forward + backward, 2 CPU cores). Installed once per process, for
    NHWC Conv2D ops only; anything else goes to TensorFlow's converter as before.
    """
    try:
        from tensorflow.python.ops.parallel_for import pfor as pfor_lib

        registry = pfor_lib._pfor_converter_registry
        original = registry["Conv2D"]
    except (ImportError, AttributeError, KeyError):  # another TensorFlow: keep its converter
        return
    if getattr(original, "losstune_grouped", False):
        return
    import tensorflow as tf

    def convert(pfor_input):
        attrs = pfor_input.op.node_def.attr
        x_in, f_in = pfor_input.inputs[0], pfor_input.inputs[1]
        if not f_in.is_stacked or attrs["data_format"].s != b"NHWC" or x_in.is_sparse_stacked:
            return original(pfor_input)
        f = f_in.t  # (K, kh, kw, C, F)
        k, kh, kw, c, out = (tf.shape(f)[i] for i in range(5))
        filters = tf.reshape(tf.transpose(f, [1, 2, 3, 0, 4]), tf.stack([kh, kw, c, k * out]))
        x = x_in.t
        if x_in.is_stacked:  # (K, B, H, W, C) -> (B, H, W, K*C), member-major channels
            shape = tf.shape(x)
            x = tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]), tf.stack([shape[1], shape[2], shape[3], k * c]))
        y = pfor_lib._create_op("Conv2D", [x, filters], [pfor_input.outputs[0].dtype], attrs=attrs).outputs[0]
        shape = tf.shape(y)
        y = tf.reshape(y, tf.stack([shape[0], shape[1], shape[2], k, out]))
        return [pfor_lib.wrap(tf.transpose(y, [3, 0, 1, 2, 4]), True)]

    convert.losstune_grouped = True
    registry["Conv2D"] = convert


def _take(value, indices):
    return value if indices is None else ops.take(value, indices, axis=0)


class _Population:
    """The stacked state of a population and the pure computation of its members' losses; the backend
    subclasses trace it and keep the state."""

    def __init__(self, members, x, y):
        self.members = members
        self.models = [m.model for m in members]
        self.template = self.models[0]
        self.size = len(members)
        self.x, self.y = x, y
        self._built = set()
        self._probe(x, y)
        self.groups = _make_groups(self.models)
        order = [k for g in self.groups for k in g.indices]
        # Losses come out group by group; this puts them back in member order.
        self.inverse = None if order == list(range(self.size)) else np.argsort(order).astype("int32")
        for g in self.groups:
            g.take = None if g.indices == list(range(self.size)) else np.asarray(g.indices, "int32")
        self._build([g.model for g in self.groups])
        self.shared = self._shared_seed_states()
        self.forward = _Forward(self.template, self.shared)
        self._reported = set()
        self._results = [None] * len(self.groups)

    def write_back(self, indices):
        """Copy the stacked weights and non-trainable state of members `indices` into their own models,
        so callbacks and the caller see each member's weights (TensorFlow variables and JAX arrays alike)."""
        t_vals = [np.asarray(v) for v in self.trainable]
        n_vals = [np.asarray(v) for v in self.non_trainable]
        for k in indices:
            model = self.models[k]
            for v, value in zip(model.trainable_variables, t_vals):
                v.assign(value[k])
            for i, (v, value) in enumerate(zip(model.non_trainable_variables, n_vals)):
                v.assign(value if i in self.shared else value[k])

    def _probe(self, x, y):
        """A tiny batch, the initial predictions on it (members start from the same weights, so one member's
        serve all) and each member's compiled loss built on it (grouping reads the built loss)."""
        self._probe_x = keras.tree.map_structure(lambda a: a[:2], x)
        self._probe_y = y[:2]
        kwargs = {"training": False} if self.template._call_has_training_arg else {}
        self._probe_pred = self.template(self._probe_x, **kwargs)
        for model in self.models:
            model.compute_loss(self._probe_x, self._probe_y, self._probe_pred, None, training=False)

    def _build(self, models):
        """Build the compiled loss and metrics of `models` (they create their variables on first use, which
        must not happen inside a traced step) and reset them. Only the models that compute are built: a
        mapped group's first model, every model of a group computed one by one."""
        for model in models:
            if id(model) in self._built:
                continue
            model.compute_metrics(self._probe_x, self._probe_y, self._probe_pred, None)
            model.reset_metrics()
            self._built.add(id(model))

    def _build_unmapped(self):
        self._build([model for g in self.groups if not g.mapped for model in g.models])

    def _shared_seed_states(self):
        """Indices of the non-trainable variables that are seed-generator states equal in all members."""
        out = []
        for i in _seed_states(self.template):
            value = np.asarray(self.template.non_trainable_variables[i].numpy())
            if all(np.array_equal(np.asarray(m.non_trainable_variables[i].numpy()), value) for m in self.models):
                out.append(i)
        return out

    def describe(self):
        return "; ".join(g.describe() for g in self.groups)

    def _probe_groups(self):
        """Trace each group's loss with its per-member numbers as tensors, on a tiny batch. A loss whose
        Python code branches on such a number (`if not label_smoothing:`) cannot take a tensor there:
        that group is computed one member at a time."""
        y = self._probe_y
        for g in self.groups:
            if not g.params:
                continue
            preds = ops.stack([self._probe_pred] * len(g.indices))
            params = {name: ops.convert_to_tensor(value) for name, value in g.params.items()}

            def mapped(p, g=g, params=params):
                def one(args):
                    pred, member_params = args
                    with _patched(g.loss, member_params):
                        return g.loss(y, pred)

                return _vmap(one, (p, params))

            try:
                self._trace_probe(mapped, preds)
            except Exception:  # Python branching on a hyperparameter, or an op that takes no tensor there
                g.mapped = False
        self._build_unmapped()

    def _group_losses(self, g, x, y, preds, extra, state, *, training):
        """Losses (one per member of `g`) and updated metric states of the group's members."""
        if g.mapped:
            params = {name: ops.convert_to_tensor(value) for name, value in g.params.items()}

            def one(args):
                pred, member_params, member_extra, member_state = args
                return _member_loss(g.model, g.loss, member_params, x, y, pred, member_extra, member_state,
                                    training=training)

            return _vmap(one, (preds, params, list(extra), list(state)))
        losses, states = [], []
        for j, model in enumerate(g.models):
            value, new = _member_loss(model, None, None, x, y, preds[j], [e[j] for e in extra],
                                      [s[j] for s in state], training=training)
            losses.append(value)
            states.append(new)
        return ops.stack(losses), [ops.stack(list(s)) for s in zip(*states)]

    def member_losses(self, trainable, non_trainable, metric_state, x, y, *, training):
        """Forward pass of all members, then each group's losses and metric updates.

        Returns the (K,) vector of member losses in member order, the new non-trainable values and the
        new metric states (one list per group).
        """
        y_pred, new_nt, extra = self.forward(trainable, non_trainable, x, training=training)
        parts, new_state = [], []
        for g, state in zip(self.groups, metric_state):
            preds = _take(y_pred, g.take)
            g_extra = [_take(e, g.take) for e in extra]
            value, state = self._group_losses(g, x, y, preds, g_extra, state, training=training)
            parts.append(ops.cast(value, "float32"))
            new_state.append(state)
        losses = parts[0] if len(parts) == 1 else ops.concatenate(parts)
        return _take(losses, self.inverse), new_nt, new_state

    # -- bookkeeping shared by the backends -----------------------------------------------------------
    def failures(self):
        """{member index: message} for the members that failed during the last epoch."""
        out = {}
        step, value = self._failed_at()
        for k in range(self.size):
            if step[k] >= 0 and k not in self._reported:
                self._reported.add(k)
                epoch, batch = divmod(int(step[k]), self.steps_per_epoch)
                what = (f"training loss became {float(value[k])}" if not math.isfinite(value[k])
                        else "gradients became non-finite")
                out[k] = f"{what} at batch {batch} of epoch {epoch}"
        return out

    def collect_logs(self):
        """{member index: logs} from the current metric state: what each member's own metrics report
        (`get_metrics_result`) for its slice, computed for a whole group at once."""
        out = {}
        for gi, g in enumerate(self.groups):
            results = None
            if g.results_mapped:
                try:
                    results = self._group_results(gi)
                except Exception:  # a metric whose result does not map: ask each member's metrics
                    g.results_mapped = False
            for j, k in enumerate(g.indices):
                if results is not None:
                    out[k] = {name: _py(value[j]) for name, value in results.items()}
                else:
                    model = self.models[k]
                    self._build([model])
                    for v, value in zip(model.metrics_variables, self._metric_values(g)):
                        v.assign(value[j])
                    out[k] = {name: _py(value) for name, value in model.get_metrics_result().items()}
        return out

    def _results_fn(self, g):
        """A function of a group's stacked metric state -> {name: stacked result}."""

        def results(*state):
            def one(values):
                with keras.StatelessScope(state_mapping=list(zip(g.model.metrics_variables, values))):
                    return g.model.get_metrics_result()

            return _vmap(one, list(state))

        return results

    def sync_iterations(self, indices):
        """Set the step count of members' own optimizers to the population's (as `fit` would have)."""
        position = next(i for i, v in enumerate(self.optimizer.variables) if v is self.optimizer.iterations)
        count = int(np.asarray(self._optimizer_value(position)))
        for k in indices:
            self.models[k].optimizer.iterations.assign(count)

    def _initial_metric_state(self, g):
        g.model.reset_metrics()
        return [np.stack([np.asarray(v.numpy())] * len(g.indices)) for v in g.model.metrics_variables]


def _py(value):
    """A logged value as a Python float (or list of floats), as Keras's History keeps it."""
    value = np.asarray(value)
    return float(value) if value.ndim == 0 else value.tolist()


def _expand(mask, like):
    """A (K,) mask reshaped to broadcast against a stacked (K, ...) value."""
    return ops.reshape(mask, (-1,) + (1,) * (len(like.shape) - 1))


def _finite_members(losses, grads, size):
    """(K,) booleans: the member's loss and all its gradients are finite."""
    ok = ops.isfinite(losses)
    for g in grads:
        ok = ops.logical_and(ok, ops.all(ops.isfinite(ops.reshape(g, (size, -1))), axis=1))
    return ok


def _read(variable):
    """The current value of a TensorFlow-backed keras.Variable as a tensor (a read, ordered in the trace)."""
    import tensorflow as tf

    return tf.convert_to_tensor(variable.value)


def _stack_variables(models, variables_of, shared=()):
    """Numpy stacks (K, ...) of the members' variables; the `shared` ones once, unstacked."""
    out = []
    for i, v in enumerate(variables_of(models[0])):
        if i in shared:
            out.append(np.asarray(v.numpy()))
        else:
            out.append(np.stack([np.asarray(variables_of(m)[i].numpy()) for m in models]))
    return out


def _fresh_optimizer(model):
    opt = model.optimizer
    new = type(opt).from_config(opt.get_config())
    pattern = getattr(opt, "_exclude_from_weight_decay_pattern", None)
    if pattern is not None:
        new._exclude_from_weight_decay_pattern = pattern
    return new


class _TFPopulation(_Population):
    """TensorFlow: the stacked state lives in variables and one `tf.function` updates it in place, as
    Keras's own TensorFlow trainer does."""

    def __init__(self, members, x, y):
        import tensorflow as tf

        self.tf = tf
        super().__init__(members, x, y)
        t = self.template
        K = self.size
        self.trainable = [
            keras.Variable(value, dtype=v.dtype, name=v.name, constraint=v.constraint)
            for v, value in zip(t.trainable_variables, _stack_variables(self.models, lambda m: m.trainable_variables))
        ]
        self.non_trainable = [
            keras.Variable(value, dtype=v.dtype, name=v.name, trainable=False)
            for v, value in zip(t.non_trainable_variables,
                                _stack_variables(self.models, lambda m: m.non_trainable_variables, self.shared))
        ]
        self.metric_state = [[keras.Variable(value, dtype=v.dtype, trainable=False)
                              for v, value in zip(g.model.metrics_variables, self._initial_metric_state(g))]
                             for g in self.groups]
        self.optimizer = _fresh_optimizer(t)
        self.optimizer.build(self.trainable)
        self.alive = tf.Variable(tf.ones((K,), tf.bool), trainable=False)
        self.failed_step = tf.Variable(tf.fill((K,), tf.constant(-1, tf.int64)), trainable=False)
        self.failed_value = tf.Variable(tf.zeros((K,), tf.float32), trainable=False)
        self.x_tensor = keras.tree.map_structure(tf.convert_to_tensor, self.x)
        self.y_tensor = tf.convert_to_tensor(self.y)
        self._probe_groups()

        try:
            self._trace()
        except Exception as first:
            error = first
            if any(g.mapped for g in self.groups):  # a loss or metric that does not map: one by one
                for g in self.groups:
                    g.mapped = False
                self._build_unmapped()
                try:
                    self._trace()
                    error = None
                except Exception as second:
                    error = second
            if error is not None:  # a layer that cannot be mapped, even in a loop; no weight was touched
                raise ValueError(f"`members` cannot be trained as one population: a layer does not vectorize: "
                                 f"{_first_line(error)}") from error

    def _trace(self):
        """Trace the training and test steps once each: the batch axis is left unknown so the last,
        partial batch reuses the trace."""
        tf = self.tf

        def spec(t, batch=None):
            return tf.TensorSpec((batch,) + tuple(t.shape[1:]), t.dtype)

        x_spec = keras.tree.map_structure(lambda t: spec(t, t.shape[0]), self.x_tensor)
        y_spec = spec(self.y_tensor, self.y_tensor.shape[0])
        self._train = tf.function(
            self._train_step, jit_compile=False, autograph=False,
            input_signature=[x_spec, y_spec, tf.TensorSpec((None,), tf.int64), tf.TensorSpec((), tf.int64)])
        self._test = tf.function(
            self._test_step, jit_compile=False, autograph=False,
            input_signature=[keras.tree.map_structure(spec, self.x_tensor), spec(self.y_tensor)])
        self._train.get_concrete_function()
        self._test.get_concrete_function()

    def _trace_probe(self, fn, preds):
        self.tf.function(fn, autograph=False).get_concrete_function(preds)

    # -- traced steps ---------------------------------------------------------------------------------
    def _metric_values(self, g):
        return [v.numpy() for v in self.metric_state[self.groups.index(g)]]

    def _assign_metrics(self, new_state):
        for variables, values in zip(self.metric_state, new_state):
            for v, value in zip(variables, values):
                v.assign(value)

    def _train_step(self, x_all, y_all, idx, code):
        tf = self.tf
        x = keras.tree.map_structure(lambda a: tf.gather(a, idx), x_all)
        y = tf.gather(y_all, idx)
        state = [[_read(v) for v in variables] for variables in self.metric_state]
        alive = self.alive.value()
        with tf.GradientTape() as tape:
            trainable = [_read(v) for v in self.trainable]
            tape.watch(trainable)
            losses, new_nt, new_state = self.member_losses(trainable, [_read(v) for v in self.non_trainable],
                                                           state, x, y, training=True)
            # A frozen member's loss is left out, so its NaN cannot reach the gradients of the sum.
            total = tf.reduce_sum(tf.where(alive, losses, tf.zeros_like(losses)))
            total = self.optimizer.scale_loss(total)
        grads = tape.gradient(total, trainable)
        ok = _finite_members(losses, grads, self.size)
        newly_failed = alive & ~ok
        self.failed_step.assign(tf.where(newly_failed, code, self.failed_step))
        self.failed_value.assign(tf.where(newly_failed, losses, self.failed_value))
        keep = alive & ok
        self.alive.assign(keep)
        self.optimizer.apply(grads, self.trainable)
        # Mask the update itself: Adam moves a weight even when its gradient is zero.
        for v, old in zip(self.trainable, trainable):
            v.assign(tf.where(_expand(keep, old), _read(v), old))
        for i, (v, new) in enumerate(zip(self.non_trainable, new_nt)):
            new = tf.cast(new, v.dtype)
            v.assign(new if i in self.shared else tf.where(_expand(keep, new), new, _read(v)))
        self._assign_metrics(new_state)
        return keep

    def _test_step(self, x, y):
        state = [[_read(v) for v in variables] for variables in self.metric_state]
        _, _, new_state = self.member_losses([_read(v) for v in self.trainable],
                                             [_read(v) for v in self.non_trainable], state, x, y, training=False)
        self._assign_metrics(new_state)
        return self.tf.constant(0)

    # -- driver ---------------------------------------------------------------------------------------
    def reset_metrics(self):
        for g, variables in zip(self.groups, self.metric_state):
            for v, value in zip(variables, self._initial_metric_state(g)):
                v.assign(value)

    def train_epoch(self, batches, epoch):
        tf = self.tf
        self.steps_per_epoch = len(batches)
        for b, idx in enumerate(batches):
            self._train(self.x_tensor, self.y_tensor, tf.constant(idx), tf.constant(epoch * len(batches) + b, tf.int64))

    def evaluate(self, x, y, batch_size):
        tf = self.tf
        for start in range(0, len(y), batch_size):
            xb = keras.tree.map_structure(lambda a, t: tf.convert_to_tensor(a[start:start + batch_size], t.dtype),
                                          x, self.x_tensor)
            self._test(xb, tf.convert_to_tensor(y[start:start + batch_size], self.y_tensor.dtype))

    def _failed_at(self):
        return self.failed_step.numpy(), self.failed_value.numpy()

    def freeze(self, indices):
        if indices:
            alive = self.alive.numpy()
            alive[list(indices)] = False
            self.alive.assign(alive)

    def _optimizer_value(self, i):
        return self.optimizer.variables[i].numpy()

    def _group_results(self, gi):
        if self._results[gi] is None:
            self._results[gi] = self.tf.function(self._results_fn(self.groups[gi]), autograph=False)
        return self._results[gi](*[_read(v) for v in self.metric_state[gi]])


class _JaxPopulation(_Population):
    """JAX: pure functions of the stacked state under `jax.jit`, with `jax.vmap` over members."""

    def __init__(self, members, x, y):
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp
        super().__init__(members, x, y)
        t = self.template
        K = self.size
        self.trainable = [jnp.asarray(v) for v in _stack_variables(self.models, lambda m: m.trainable_variables)]
        self.non_trainable = [jnp.asarray(v) for v in
                              _stack_variables(self.models, lambda m: m.non_trainable_variables, self.shared)]
        self.metric_state = [[jnp.asarray(v) for v in self._initial_metric_state(g)] for g in self.groups]
        # The optimizer is built on stand-in variables of the stacked shapes; its state then lives here.
        self._stand_ins = [keras.Variable(np.asarray(v), dtype=tv.dtype, name=tv.name, constraint=tv.constraint)
                           for v, tv in zip(self.trainable, t.trainable_variables)]
        self.optimizer = _fresh_optimizer(t)
        self.optimizer.build(self._stand_ins)
        self.opt_state = [jnp.asarray(v.value) for v in self.optimizer.variables]
        self.alive = jnp.ones((K,), bool)
        self.failed_step = jnp.full((K,), -1, jnp.int32)
        self.failed_value = jnp.zeros((K,), jnp.float32)
        self.x_device = keras.tree.map_structure(jnp.asarray, self.x)
        self.y_device = jnp.asarray(self.y)
        self._probe_groups()
        self._train = jax.jit(self._train_step, donate_argnums=(0,))
        self._test = jax.jit(self._test_step)

    def _trace_probe(self, fn, preds):
        self.jax.eval_shape(fn, preds)

    def _metric_values(self, g):
        return [np.asarray(v) for v in self.metric_state[self.groups.index(g)]]

    def _state(self):
        return (self.trainable, self.non_trainable, self.opt_state, self.metric_state, self.alive,
                self.failed_step, self.failed_value)

    def _train_step(self, state, x_all, y_all, idx, code):
        jax, jnp = self.jax, self.jnp
        trainable, non_trainable, opt_state, metric_state, alive, failed_step, failed_value = state
        x = keras.tree.map_structure(lambda a: jnp.take(a, idx, axis=0), x_all)
        y = jnp.take(y_all, idx, axis=0)

        def total_loss(tr):
            losses, new_nt, new_state = self.member_losses(tr, non_trainable, metric_state, x, y, training=True)
            total = jnp.sum(jnp.where(alive, losses, 0.0))
            mapping = list(zip(self.optimizer.variables, opt_state))
            with keras.StatelessScope(state_mapping=mapping):
                total = self.optimizer.scale_loss(total)
            return total, (losses, new_nt, new_state)

        (_, (losses, new_nt, new_state)), grads = jax.value_and_grad(total_loss, has_aux=True)(trainable)
        ok = _finite_members(losses, grads, self.size)
        newly_failed = alive & ~ok
        failed_step = jnp.where(newly_failed, code, failed_step)
        failed_value = jnp.where(newly_failed, losses, failed_value)
        keep = alive & ok
        new_tr, new_opt = self.optimizer.stateless_apply(opt_state, grads, trainable)
        # Mask the update itself: Adam moves a weight even when its gradient is zero.
        new_tr = [jnp.where(_expand(keep, old), new, old) for new, old in zip(new_tr, trainable)]
        new_nt = [new.astype(old.dtype) if i in self.shared else
                  jnp.where(_expand(keep, old), new.astype(old.dtype), old)
                  for i, (new, old) in enumerate(zip(new_nt, non_trainable))]
        return new_tr, new_nt, new_opt, new_state, keep, failed_step, failed_value

    def _test_step(self, trainable, non_trainable, metric_state, x, y):
        _, _, new_state = self.member_losses(trainable, non_trainable, metric_state, x, y, training=False)
        return new_state

    def reset_metrics(self):
        self.metric_state = [[self.jnp.asarray(v) for v in self._initial_metric_state(g)] for g in self.groups]

    def train_epoch(self, batches, epoch):
        jnp = self.jnp
        self.steps_per_epoch = len(batches)
        for b, idx in enumerate(batches):
            state = self._train(self._state(), self.x_device, self.y_device, jnp.asarray(idx),
                                jnp.asarray(epoch * len(batches) + b, self.failed_step.dtype))
            (self.trainable, self.non_trainable, self.opt_state, self.metric_state, self.alive,
             self.failed_step, self.failed_value) = state

    def evaluate(self, x, y, batch_size):
        jnp = self.jnp
        for start in range(0, len(y), batch_size):
            xb = keras.tree.map_structure(lambda a, t: jnp.asarray(a[start:start + batch_size], t.dtype),
                                          x, self.x_device)
            yb = jnp.asarray(y[start:start + batch_size], self.y_device.dtype)
            self.metric_state = self._test(self.trainable, self.non_trainable, self.metric_state, xb, yb)

    def _failed_at(self):
        return np.asarray(self.failed_step), np.asarray(self.failed_value)

    def freeze(self, indices):
        if indices:
            self.alive = self.alive.at[np.asarray(indices)].set(False)

    def _optimizer_value(self, i):
        return self.opt_state[i]

    def _group_results(self, gi):
        if self._results[gi] is None:
            self._results[gi] = self.jax.jit(self._results_fn(self.groups[gi]))
        return self._results[gi](*self.metric_state[gi])
