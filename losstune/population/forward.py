"""The members' forward pass: the user's model mapped over the leading (member) axis of stacked weights, and
when it cannot be mapped, which layer is to blame."""

from __future__ import annotations

import re

import keras
from keras import ops

from losstune.population.converters import install_converters


class Forward:
    """`model.stateless_call` mapped over the leading (member) axis of the stacked variables.

    Returns the stacked outputs, the stacked updated non-trainable values and the members' additional
    losses (regularizers, `add_loss`), each summed to one scalar per member. Non-trainable variables listed
    in `shared` (seed-generator states equal in every member; with folds as members, every one, the first
    member's) are passed once, not mapped: Dropout then draws one mask for all members, the mask each solo
    trial draws, and TensorFlow needs no per-member loop for the random op (it has no vectorized form of
    StatelessRandomGetKeyCounter / StatelessRandomUniformV2 for a per-member seed, and loops).

    With `own_inputs` (repeats as members), x holds one batch per member, stacked (K, B, ...), and is mapped
    with the weights; else one batch feeds every member.

    When the mapped call fails and `diagnose` is on, the error raised is a `LayerNotMapped` naming the first
    layer whose mapped call fails (see `failing_layer`): a population refused says which layer to change.
    """

    def __init__(self, model, shared, *, own_inputs=False, diagnose=True):
        self.model = model
        self.shared = tuple(shared)
        self.own_inputs = own_inputs
        self.diagnose = diagnose
        self.mapped_nt = [i for i in range(len(model.non_trainable_variables)) if i not in self.shared]
        # Keras private (3.x): `Layer._call_has_training_arg` says whether `call` takes `training=`; Keras's
        # own trainers read it to decide whether to pass it.
        self.training_arg = model._call_has_training_arg

    def __call__(self, trainable, non_trainable, x, *, training):
        model, shared = self.model, self.shared
        shared_values = {i: non_trainable[i] for i in shared}
        kwargs = {"training": training} if self.training_arg else {}

        def one(args):
            tr, nt_mapped = args[:2]
            inputs = args[2] if self.own_inputs else x
            nt = [None] * len(model.non_trainable_variables)
            for i, value in zip(self.mapped_nt, nt_mapped):
                nt[i] = value
            for i, value in shared_values.items():
                nt[i] = value
            out, new_nt, losses = model.stateless_call(tr, nt, inputs, return_losses=True, **kwargs)
            losses = [ops.sum(ops.cast(l, keras.config.floatx())) for l in losses]
            return out, [new_nt[i] for i in self.mapped_nt], [new_nt[i] for i in shared], losses

        mapped = [non_trainable[i] for i in self.mapped_nt]
        try:
            elements = (list(trainable), mapped) + ((x,) if self.own_inputs else ())
            out, new_mapped, new_shared, losses = vmap(one, elements)
        except Exception as error:  # noqa: BLE001  (any failure to map: name the layer, then re-raise)
            layer = failing_layer(self.model) if self.diagnose else None
            if layer is None:
                raise
            raise LayerNotMapped(layer, error) from error
        new_nt = [None] * len(non_trainable)
        for i, value in zip(self.mapped_nt, new_mapped):
            new_nt[i] = value
        for i, value in zip(shared, new_shared):
            new_nt[i] = value[0]  # the same in every member
        return out, new_nt, losses


def seed_states(model):
    """Indices of the model's non-trainable variables that are states of `keras.random.SeedGenerator`s."""
    # Keras internal naming (3.x): a `SeedGenerator` names its state variable "seed_generator_state"; it is
    # how a seed state is told from other non-trainable variables (moving statistics).
    return [i for i, v in enumerate(model.non_trainable_variables) if v.name == "seed_generator_state"]


def vmap(fn, elements):
    """`fn` mapped over the leading axis of `elements`: `jax.vmap` on JAX, `tf.vectorized_map` (with a loop
    for ops without a vectorized form) on TensorFlow."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.vmap(fn)(elements)
    import tensorflow as tf

    install_converters()
    return tf.vectorized_map(fn, elements, fallback_to_while_loop=True)


class LayerNotMapped(ValueError):
    """The model's mapped call failed at `layer`: the message is the layer's class and name, then the error's
    first line."""

    def __init__(self, layer, error):
        self.layer = layer
        super().__init__(f"{layer_label(layer)}: {first_line(error)}")


def layer_label(layer):
    """How a refusal names a layer: its class and name, e.g. `Embedding 'embedding_2'`."""
    return f"{type(layer).__name__} {layer.name!r}"


def failing_layer(model, *, gradient=False):
    """The first layer of `model` whose mapped call fails (with `gradient`, whose mapped call or its gradient
    fails), found by tracing, never running, the model cut after each layer (bisection over the layers in
    the model's order; a cut keeps every earlier layer's output, so that a cut fails once it holds the bad
    layer). Inside a nested model, the layer inside it. None when the model has no graph to cut (a
    subclassed model) or no cut fails."""
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return None
    layers, outputs = [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            outputs.append(keras.tree.flatten(layer.output))  # its first call's output
        except (AttributeError, ValueError):  # a layer never called in the graph: not a cut point
            continue
        layers.append(layer)

    def fails(i):
        try:
            cut = keras.Model(inputs, [t for out in outputs[:i + 1] for t in out], name=f"{model.name}_cut")
        except Exception:  # noqa: BLE001  (a graph Keras cannot cut here: not this layer's fault)
            return False
        return trace_error(cut, gradient=gradient) is not None

    if not layers or not fails(len(layers) - 1):
        return None
    low, high = 0, len(layers) - 1
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if fails(middle) else (middle + 1, high)
    found = layers[low]
    return (failing_layer(found, gradient=gradient) or found) if isinstance(found, keras.Model) else found


def trace_error(model, *, gradient=True):
    """Trace, without running it, a training step (the mapped forward pass and, with `gradient`, the
    gradient of its outputs and added losses) of two stacked members of `model` on its symbolic inputs; the
    exception raised, or None. Seed-generator states are passed once, unstacked, as in a population; a model
    without other variables (a cut before the first weight layer) runs once for all members: nothing maps."""
    shared = seed_states(model)
    if not model.trainable_variables and len(shared) == len(model.non_trainable_variables):
        return None
    forward = Forward(model, shared, diagnose=False)
    x_shapes = [((2,) + tuple(t.shape[1:]), t.dtype) for t in model.inputs]
    w_shapes = [((2,) + tuple(v.shape), v.dtype) for v in model.trainable_variables]
    nt_shapes = [(tuple(v.shape) if i in shared else (2,) + tuple(v.shape), v.dtype)
                 for i, v in enumerate(model.non_trainable_variables)]

    def total(stacked, non_trainable, x):
        out, _, losses = forward(stacked, non_trainable, x[0] if len(x) == 1 else x, training=True)
        parts = [ops.sum(ops.cast(o, "float32")) for o in keras.tree.flatten(out) + list(losses)]
        return ops.sum(ops.stack(parts))

    try:
        if keras.backend.backend() == "jax":
            import jax

            specs = [[jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in group]
                     for group in (w_shapes, nt_shapes, x_shapes)]
            jax.eval_shape(jax.grad(total) if gradient else total, *specs)
        else:
            _trace_tf(total, w_shapes, nt_shapes, x_shapes, gradient)
    except Exception as error:  # noqa: BLE001  (any failure to trace is the answer)
        return error
    return None


def _trace_tf(total, w_shapes, nt_shapes, x_shapes, gradient):
    import tensorflow as tf

    def step(*x):
        # Made inside the trace: eager constants captured by it break the mapping of a recurrent layer's
        # while loop ("Tensor.op is undefined when eager execution is enabled").
        stacked = [tf.zeros(shape, dtype) for shape, dtype in w_shapes]
        non_trainable = [tf.zeros(shape, dtype) for shape, dtype in nt_shapes]
        with tf.GradientTape() as tape:
            tape.watch(stacked)
            value = total(stacked, non_trainable, list(x))
        if gradient:
            tape.gradient(value, stacked)
        return value

    check_runnable(tf.function(step, autograph=False).get_concrete_function(
        *[tf.TensorSpec(s, d) for s, d in x_shapes]))


_PYTHON_OPS = ("EagerPyFunc", "PyFunc", "PyFuncStateless")


def check_runnable(concrete):
    """Raise TypeError when a traced TensorFlow step (`concrete`, a ConcreteFunction) would fail when run
    although it traced: the gradient of a Python op (tf.py_function, tf.numpy_function) inside a loop.
    `tf.vectorized_map` has no converter for Python ops and loops over members, which runs forward, but the
    gradient of a Python op inside that loop fails at run time ("Graph execution error"). A Python op on the
    shared input (no gradient needed) runs."""
    # TensorFlow (2.x): the gradient of a while loop is a library function named "<body>_grad_<n>"; a change
    # is caught by tests/test_population_layers.py (a py_function after a Dense is refused by name).
    for function in concrete.graph.as_graph_def().library.function:
        if "_grad" in function.signature.name:
            for node in function.node_def:
                if node.op in _PYTHON_OPS:
                    raise TypeError(f"the gradient of a Python op ({node.op}: tf.py_function or "
                                    f"tf.numpy_function) would run inside tf.vectorized_map's loop over members, "
                                    f"where TensorFlow cannot run it")


def first_line(error):
    """The message of a (traced) error without TensorFlow's node dump and traceback lines, Keras's "Exception
    encountered when calling ..." wrapper line and terminal colour codes."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", l).strip() for l in str(error).splitlines()]
    lines = [l for l in lines if l and l != "in user code:" and not l.startswith(("File ", "Exception encountered"))]
    line = lines[0] if lines else type(error).__name__
    return line.split(" for '{{node")[0].strip()[:300]
