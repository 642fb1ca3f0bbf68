"""Groups: members whose loss and metrics differ only in numbers share one mapped computation."""

from __future__ import annotations

import json

import keras
import numpy as np
from keras import ops


class Group:
    """Members computed together: same loss function up to the numbers in `params`, same metrics.

    `model` is the first member's model: its compiled loss and metrics compute the whole group, with the
    loss object's numeric arguments replaced by the member's values (`params`: name -> stacked array).
    When `mapped` is False, the members are computed one after the other, each with its own model.
    `take` (set by the engine) selects the group's members from the population's stacked outputs.
    """

    def __init__(self, indices, models):
        self.indices = list(indices)
        self.models = models
        self.model = models[0]
        self.loss = self.model.loss if isinstance(self.model.loss, keras.losses.Loss) else None
        self.params = {}
        kwargs = [loss_kwargs(m) for m in models]
        if kwargs[0]:
            for name, value in kwargs[0].items():
                values = [kw[name] for kw in kwargs]
                if numeric(value) and any(not np.array_equal(np.asarray(v), np.asarray(value)) for v in values):
                    self.params[name] = np.stack([np.asarray(v, dtype=keras.config.floatx()) for v in values])
        # A member alone is computed as it is: mapping it would only add a vectorized copy to the trace.
        self.mapped = len(self.indices) > 1
        self.results_mapped = True
        self.take = None

    def describe(self):
        name = getattr(self.loss, "name", None) or str(self.model.loss)
        varied = f" ({', '.join(self.params)} per member)" if self.params else ""
        how = "mapped" if self.mapped else "one by one"
        return f"{name} x{len(self.indices)}{varied}, {how}"


def loss_kwargs(model):
    """The keyword arguments a compiled loss passes to its function (`LossFunctionWrapper` and losstune's
    losses keep them in `_fn_kwargs`), or None for a loss without them."""
    loss = model.loss
    # Keras private (3.x): `LossFunctionWrapper._fn_kwargs` is the dict of keyword arguments the wrapper
    # passes to its function (losstune's losses keep theirs there too); a group maps over its numbers.
    kwargs = getattr(loss, "_fn_kwargs", None) if isinstance(loss, keras.losses.Loss) else None
    if not isinstance(kwargs, dict) or not any(loss is entry[1] for entry in compiled_losses(model)):
        return None
    return kwargs


def compiled_losses(model):
    """The `(path, loss object, weight, name)` entries of the model's compiled loss ([] where unknown)."""
    # Keras private (3.x): `Model._compile_loss` is the `CompileLoss` built by `compile`, and its
    # `_flat_losses` the loss objects it calls; checked so a group patches the object that computes.
    compile_loss = getattr(model, "_compile_loss", None)
    return getattr(compile_loss, "_flat_losses", None) or []


def numeric(value):
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


def signature(model):
    """What members must share to be computed together: the loss apart from its numbers, the metrics."""
    loss = model.loss
    kwargs = loss_kwargs(model)
    if kwargs is not None:
        fixed = tuple(sorted((k, repr(v)) for k, v in kwargs.items() if not numeric(v)))
        # Zero often switches a term off in a loss's Python code: members at zero form their own group,
        # where the zero stays a Python constant.
        shapes = tuple(sorted((k, np.shape(v), bool(np.ndim(v) == 0 and v == 0))
                              for k, v in kwargs.items() if numeric(v)))
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


def make_groups(models):
    """The groups of `models` (members in order of first appearance of their signature)."""
    by_key = {}
    for k, model in enumerate(models):
        by_key.setdefault(signature(model), []).append(k)
    return [Group(indices, [models[k] for k in indices]) for indices in by_key.values()]


def member_loss(model, loss, params, batch, y_pred, extra, metric_values, *, training, masked=False):
    """One member's loss on `batch` (x, y, sample_weight), as Keras's `train_step`/`test_step` compute it, and
    its updated metric state.

    `masked`: the sample weight is the member's 0/1 mask over the batch (its fold's examples). The loss is
    then the mean over the examples it keeps (weights scaled by B / kept, so a batch of which it keeps 26 of 32
    weighs as a batch of 26 in fold-by-fold training), the logged loss averages over kept examples, and the
    metrics count kept examples only.

    `params` replace numeric arguments of `loss` (the loss object inside `model`'s compiled loss) for this
    call; `extra` are the member's additional losses (regularizers, `add_loss`), each one scalar.
    """
    # Keras private (3.x): `Layer._losses_override`, when non-empty, replaces `model.losses` (the
    # regularizer and `add_loss` terms `compute_loss` adds); Keras's JAX trainer sets it the same way for
    # its stateless step. Here it holds the member's own terms, from the mapped forward pass.
    x, y, sample_weight = batch
    count = ops.shape(keras.tree.flatten(x)[0])[0]
    loss_weight = sample_weight
    if masked:
        kept = ops.sum(sample_weight)
        loss_weight = sample_weight * (ops.cast(count, sample_weight.dtype) / ops.maximum(kept, 1.0))
        count = kept
    model._losses_override = list(extra)
    try:
        mapping = list(zip(model.metrics_variables, metric_values))
        with patched(loss, params), keras.StatelessScope(state_mapping=mapping) as scope:
            value = model.compute_loss(x, y, y_pred, loss_weight, training=training)
            # Keras private (3.x): `Model._loss_tracker` is the Mean metric behind the logged "loss"; Keras's
            # `train_step` updates it after `compute_loss`, weighted by the batch size, as here.
            model._loss_tracker.update_state(value, sample_weight=count)
            if masked:
                masked_metrics(model, y, y_pred, sample_weight)
            else:
                model.compute_metrics(x, y, y_pred, sample_weight)
        new_values = [scope.get_current_value(v) for v in model.metrics_variables]
    finally:
        model._losses_override = []
    return value, new_values


def masked_metrics(model, y, y_pred, mask):
    """Update every compiled metric of `model` with `mask` as its sample weight. Keras's `metrics=` take no
    sample weights (only `weighted_metrics=` do), but a member of folds as members must count its own fold's
    examples only."""
    # Keras private (3.x): `Model._compile_metrics` (a `CompileMetrics`) holds the `metrics=` in
    # `_flat_metrics`, updated without sample weights, and the `weighted_metrics=` in `_flat_weighted_metrics`.
    container = model._compile_metrics
    if container is None:
        return
    if not container.built:
        container.build(y, y_pred)
    for metric in list(container._flat_metrics) + list(container._flat_weighted_metrics):
        if metric is not None:
            metric.update_state(y, y_pred, sample_weight=mask)


class patched:
    """Context: `loss` computes with `params` (tensors) in place of its numeric arguments."""

    def __init__(self, loss, params):
        self.loss, self.params = loss, params

    def __enter__(self):
        if self.params:
            # Keras private (3.x): `_fn_kwargs` (see `loss_kwargs`), updated in place for this call.
            self.saved = dict(self.loss._fn_kwargs)
            self.loss._fn_kwargs.update(self.params)
        return self

    def __exit__(self, *exc):
        if self.params:
            self.loss._fn_kwargs.clear()
            self.loss._fn_kwargs.update(self.saved)
