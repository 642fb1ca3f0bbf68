"""The members' forward pass: the user's model mapped over the leading (member) axis of stacked weights."""

from __future__ import annotations

import keras
from keras import ops

from losstune.population.grouped_conv import install_grouped_conv2d


class Forward:
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
        # Keras private (3.x): `Layer._call_has_training_arg` says whether `call` takes `training=`; Keras's
        # own trainers read it to decide whether to pass it.
        self.training_arg = model._call_has_training_arg

    def __call__(self, trainable, non_trainable, x, *, training):
        model, shared = self.model, self.shared
        shared_values = {i: non_trainable[i] for i in shared}
        kwargs = {"training": training} if self.training_arg else {}

        def one(args):
            tr, nt_mapped = args
            nt = [None] * len(model.non_trainable_variables)
            for i, value in zip(self.mapped_nt, nt_mapped):
                nt[i] = value
            for i, value in shared_values.items():
                nt[i] = value
            out, new_nt, losses = model.stateless_call(tr, nt, x, return_losses=True, **kwargs)
            losses = [ops.sum(ops.cast(l, keras.config.floatx())) for l in losses]
            return out, [new_nt[i] for i in self.mapped_nt], [new_nt[i] for i in shared], losses

        mapped = [non_trainable[i] for i in self.mapped_nt]
        out, new_mapped, new_shared, losses = vmap(one, (list(trainable), mapped))
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

    install_grouped_conv2d()
    return tf.vectorized_map(fn, elements, fallback_to_while_loop=True)
