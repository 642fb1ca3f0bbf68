"""Can members share one computation? The checks that decide it, and the architecture key that says which
trials may be members of one population."""

from __future__ import annotations

import json

import keras

# first_line is the engine's too, imported from here
from losstune.population.forward import failing_layer, first_line, layer_label, trace_error  # noqa: F401

# Optimizers whose update of one weight depends only on that weight's gradient and slots and on the shared
# step count: on stacked variables they act exactly as K separate optimizers. Others (LAMB's trust ratio,
# Adafactor's factored moments, Muon's orthogonalisation) look at whole variables and would couple members.
ELEMENTWISE_OPTIMIZERS = (
    "SGD", "Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Adagrad", "Adadelta", "Lion", "Ftrl",
)
# Optimizers whose update is linear in the gradient: Keras's TensorFlow optimizers apply a sparse gradient slice
# by slice, which for these alone equals applying its dense sum (see `sparse_gradient_reason`).
LINEAR_OPTIMIZERS = ("SGD", "Lion")
# Trainer methods a model may not override: the population runs its own step in their place.
STEP_METHODS = ("train_step", "test_step", "compute_loss", "compute_metrics")


class NotVectorizable(ValueError):
    """The members cannot be trained as one population; `reason` is one line saying why (train them one by
    one instead). Raised before any member's weights are touched."""

    def __init__(self, reason):
        self.reason = reason
        super().__init__(f"`members` cannot be trained as one population: {reason.rstrip('.')}.")


def architecture_key(model):
    """What models must share to be members of one population: the model class, each layer's class and
    configuration (names left out: two builds of one builder number their layers apart), and the variables'
    shapes and dtypes (seed-generator states and moving statistics included). A population runs its first
    member's forward pass for all: a different layer class, or the same layer with another activation or
    dropout rate (a `build_model` with its own hyperparameters), must train apart."""
    return (
        type(model),
        tuple(_layer_keys(model)),
        tuple((tuple(v.shape), str(v.dtype)) for v in model.variables),
    )


def _layer_keys(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):  # a nested model: its own layers (its config names them)
            yield type(layer), tuple(_layer_keys(layer))
            continue
        try:
            config = json.dumps(_without_names(layer.get_config()), sort_keys=True, default=repr)
        except Exception:  # noqa: BLE001  (a layer Keras cannot describe: this model is its own key)
            config = f"layer {id(layer)}"
        yield type(layer), config


def _without_names(config):
    if isinstance(config, dict):
        return {k: _without_names(v) for k, v in config.items() if k != "name"}
    if isinstance(config, (list, tuple)):
        return [_without_names(v) for v in config]
    return config


def vectorizable(model, optimizer=None, *, trace=True):
    """None when members of `model` trained with `optimizer` can share one vectorized computation, else one
    line saying why not (the caller then trains them one by one).

    `optimizer` defaults to `model.optimizer`. Refused: a backend other than TensorFlow and JAX; a model
    that overrides `train_step`, `test_step`, `compute_loss` or `compute_metrics`; a model with several
    outputs; a weight constraint other than `NonNeg` (a norm constraint would see all members at once); an
    optimizer other than the elementwise ones, or with an option that couples members (`clipnorm`,
    `global_clipnorm`: norms over the stacked variable) or that populations do not handle (EMA, gradient
    accumulation, loss scaling); on TensorFlow, a trainable Embedding with an optimizer whose update is not
    linear in the gradient (`sparse_gradient_reason`); and, with `trace` on TensorFlow, a layer that
    `tf.vectorized_map` cannot map even op by op (checked by tracing a training step of two members on the
    model's symbolic inputs, and named by `forward.failing_layer`; a model without them is checked when its
    population is traced). An op without a vectorized form runs as a loop over members inside the step:
    correct, and slower (Conv2D and Conv3D with per-member filters are mapped as grouped convolutions, and
    Dropout draws one mask for all members: see `forward.Forward`).
    """
    if keras.backend.backend() not in ("tensorflow", "jax"):
        return f"backend {keras.backend.backend()!r}: populations run on TensorFlow and JAX"
    if not isinstance(model, keras.Model):
        return f"not a keras.Model: {type(model).__name__}"
    base = backend_trainer_class()
    for method in STEP_METHODS:
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
    optimizer = model.optimizer if optimizer is None else optimizer
    reason = optimizer_reason(optimizer) or sparse_gradient_reason(model, optimizer)
    if reason:
        return reason
    if trace and keras.backend.backend() == "tensorflow" and getattr(model, "inputs", None):
        return trace_reason(model)
    return None


def backend_trainer_class():
    """The backend's Keras trainer class: the step methods a model inherits when it overrides none."""
    # Keras private (3.x): `JAXTrainer` and `TensorFlowTrainer` are the classes `keras.Model` inherits its
    # `train_step`, `test_step`, `compute_loss` and `compute_metrics` from on each backend; a model whose
    # methods are not theirs has a step of its own.
    if keras.backend.backend() == "jax":
        from keras.src.backend.jax.trainer import JAXTrainer as trainer
    else:
        from keras.src.backend.tensorflow.trainer import TensorFlowTrainer as trainer
    return trainer


def optimizer_reason(optimizer):
    """None when `optimizer` acts on stacked variables as K separate optimizers would, else why not."""
    if optimizer is None:
        return "no optimizer: compile the model first"
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        return f"optimizer {optimizer!r} is not a keras.optimizers.Optimizer instance"
    name = type(optimizer).__name__
    if type(optimizer) is not getattr(keras.optimizers, name, None) or name not in ELEMENTWISE_OPTIMIZERS:
        return (f"optimizer {name} is not known to update each weight on its own; populations take "
                f"{', '.join(ELEMENTWISE_OPTIMIZERS)}")
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
    # Keras private (3.x): `Optimizer._exclude_from_weight_decay` holds the variables given to
    # `exclude_from_weight_decay(var_list=...)`: those of one model, not of the population's stacked ones.
    if getattr(optimizer, "_exclude_from_weight_decay", None):
        return "exclude_from_weight_decay(var_list=...) names variables of one model; use var_names="
    return None


def sparse_gradient_reason(model, optimizer):
    """Why an Embedding would train differently in a population than alone, or None.

    On TensorFlow an Embedding's gradient is sparse (`tf.IndexedSlices`, a slice per occurrence of a token in
    the batch) and Keras's optimizers apply it slice by slice: Adam adds the square of each slice to its
    second moment, not the square of their sum; `clipvalue` clips each slice apart. A population's stacked
    gradient is dense (the slices summed), so only optimizers linear in the gradient (SGD, Lion) without
    `clipvalue` train its members as alone (measured: 3e-8 apart after 2 epochs, against 6e-4 to 7e-2 for
    Adam, AdamW, Adagrad, Adamax, RMSprop, Ftrl and SGD with clipvalue; JAX's gradients are dense on both
    sides)."""
    if keras.backend.backend() != "tensorflow":
        return None
    name, clip = type(optimizer).__name__, getattr(optimizer, "clipvalue", None)
    if name in LINEAR_OPTIMIZERS and not clip:
        return None
    # Keras private (3.x): `Layer._flatten_layers()` yields a layer and every layer it tracks, at any depth
    # (an Embedding inside a custom layer too); Keras's own summary and weight loading walk layers with it.
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Embedding) and layer.trainable_weights:
            how = f"{name} with clipvalue" if clip else name
            return (f"{layer_label(layer)} gets sparse gradients on TensorFlow, which {how} applies slice by "
                    f"slice and a population as one dense sum: its members would not train as alone (SGD or "
                    f"Lion without clipvalue would, as would the JAX backend)")
    return None


def trace_reason(model):
    """Trace a training step (forward and gradient) of two stacked members; why it fails, naming the first
    layer whose mapped call (or its gradient) fails, or None."""
    error = trace_error(model)
    if error is None:
        return None
    layer = failing_layer(model, gradient=True)
    where = f"{layer_label(layer)}: " if layer is not None else ""
    return f"a layer does not vectorize: {where}{first_line(error)}"
