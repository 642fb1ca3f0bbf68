"""The TensorFlow engine: the stacked state lives in variables and one `tf.function` updates it in place,
as Keras's own TensorFlow trainer does."""

from __future__ import annotations

import keras

from losstune.optimizers import fresh_optimizer
from losstune.population.engine import Engine, expand, finite_members, stack_variables
from losstune.population.forward import check_runnable


def _read(variable):
    """The current value of a TensorFlow-backed keras.Variable as a tensor (a read, ordered in the trace)."""
    import tensorflow as tf

    return tf.convert_to_tensor(variable.value)


class TFEngine(Engine):
    """TensorFlow: stacked `keras.Variable`s updated in place by traced `tf.function` steps."""

    def __init__(self, members, first_batch, **layout):
        import tensorflow as tf

        self.tf = tf
        super().__init__(members, first_batch, **layout)

    def _init_state(self):
        tf, t, K = self.tf, self.template, self.size
        stacked = stack_variables(self.models, lambda m: m.trainable_variables)
        self.trainable = [keras.Variable(value, dtype=v.dtype, name=v.name, constraint=v.constraint)
                          for v, value in zip(t.trainable_variables, stacked)]
        stacked = stack_variables(self.models, lambda m: m.non_trainable_variables, self.shared)
        self.non_trainable = [keras.Variable(value, dtype=v.dtype, name=v.name, trainable=False)
                              for v, value in zip(t.non_trainable_variables, stacked)]
        self.metric_state = [[keras.Variable(value, dtype=v.dtype, trainable=False)
                              for v, value in zip(g.model.metrics_variables, self.initial_metric_state(g))]
                             for g in self.groups]
        self.optimizer = fresh_optimizer(t.optimizer)
        self.optimizer.build(self.trainable)
        self.alive = tf.Variable(tf.ones((K,), tf.bool), trainable=False)
        self.failed_step = tf.Variable(tf.fill((K,), tf.constant(-1, tf.int64)), trainable=False)
        self.failed_value = tf.Variable(tf.zeros((K,), tf.float32), trainable=False)

    def _trace_steps(self):
        """Trace the training and test steps once each, on the first batch's specs with the batch axis left
        unknown, so every full batch and the last, partial one reuse the trace (a batch of other inner shapes,
        from a pipeline that pads per batch, traces once more)."""
        tf = self.tf

        lead = 0 if self.streams is None else 1  # with streams, every part is stacked (R, B, ...)

        def spec(t):
            t = tf.convert_to_tensor(t)
            return tf.TensorSpec(tuple(t.shape[:lead]) + (None,) + tuple(t.shape[lead + 1:]), t.dtype)

        specs = [None if part is None else keras.tree.map_structure(spec, part) for part in self.first_batch]
        if self.masked:  # one row of weights per member: the batch axis is the second
            specs[2] = tf.TensorSpec((self.size, None), tf.convert_to_tensor(self.first_batch[2]).dtype)
        self._train = tf.function(self._train_step, jit_compile=False, autograph=False, reduce_retracing=True)
        self._test = tf.function(self._test_step, jit_compile=False, autograph=False, reduce_retracing=True)
        check_runnable(self._train.get_concrete_function(*specs, tf.TensorSpec((), tf.int64)))
        self._test.get_concrete_function(*specs)

    def _trace_probe(self, fn, preds):
        self.tf.function(fn, autograph=False).get_concrete_function(preds)

    # -- traced steps -----------------------------------------------------------------------------------
    def _train_step(self, x, y, sample_weight, code):
        tf = self.tf
        state = [[_read(v) for v in variables] for variables in self.metric_state]
        alive = self.alive.value()
        with tf.GradientTape() as tape:
            trainable = [_read(v) for v in self.trainable]
            tape.watch(trainable)
            losses, new_nt, new_state = self.member_losses(trainable, [_read(v) for v in self.non_trainable],
                                                           state, x, y, sample_weight, training=True)
            # A frozen member's loss is left out, so its NaN cannot reach the gradients of the sum.
            total = tf.reduce_sum(tf.where(alive, losses, tf.zeros_like(losses)))
            total = self.optimizer.scale_loss(total)
        grads = tape.gradient(total, trainable)
        ok = finite_members(losses, grads, self.size)
        newly_failed = alive & ~ok
        self.failed_step.assign(tf.where(newly_failed, code, self.failed_step))
        self.failed_value.assign(tf.where(newly_failed, losses, self.failed_value))
        keep = alive & ok
        self.alive.assign(keep)
        self.optimizer.apply(grads, self.trainable)
        # Mask the update itself: Adam moves a weight even when its gradient is zero.
        for v, old in zip(self.trainable, trainable):
            v.assign(tf.where(expand(keep, old), _read(v), old))
        for i, (v, new) in enumerate(zip(self.non_trainable, new_nt)):
            new = tf.cast(new, v.dtype)
            v.assign(new if i in self.shared else tf.where(expand(keep, new), new, _read(v)))
        self._assign_metrics(new_state)
        return keep

    def _test_step(self, x, y, sample_weight):
        state = [[_read(v) for v in variables] for variables in self.metric_state]
        _, _, new_state = self.member_losses([_read(v) for v in self.trainable],
                                             [_read(v) for v in self.non_trainable], state, x, y, sample_weight,
                                             training=False)
        self._assign_metrics(new_state)
        return self.tf.constant(0)

    def _assign_metrics(self, new_state):
        for variables, values in zip(self.metric_state, new_state):
            for v, value in zip(variables, values):
                v.assign(value)

    # -- what the engine calls --------------------------------------------------------------------------
    def _train_batch(self, x, y, sample_weight, code):
        self._train(x, y, sample_weight, self.tf.constant(code, self.tf.int64))

    def _test_batch(self, x, y, sample_weight):
        self._test(x, y, sample_weight)

    def reset_metrics(self):
        for g, variables in zip(self.groups, self.metric_state):
            for v, value in zip(variables, self.initial_metric_state(g)):
                v.assign(value)

    def freeze(self, indices):
        if indices:
            alive = self.alive.numpy()
            alive[list(indices)] = False
            self.alive.assign(alive)

    def _failed_at(self):
        return self.failed_step.numpy(), self.failed_value.numpy()

    def _optimizer_value(self, i):
        return self.optimizer.variables[i].numpy()

    def _load_optimizer(self, values):
        for v, value in zip(self.optimizer.variables, values, strict=True):
            v.assign(value)

    def _metric_values(self, g):
        return [v.numpy() for v in self.metric_state[self.groups.index(g)]]

    def _group_results(self, gi):
        if self._results[gi] is None:
            self._results[gi] = self.tf.function(self._results_fn(self.groups[gi]), autograph=False)
        return self._results[gi](*[_read(v) for v in self.metric_state[gi]])
