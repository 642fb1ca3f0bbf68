"""The JAX engine: pure functions of the stacked state under `jax.jit`, with `jax.vmap` over members."""

from __future__ import annotations

import keras
import numpy as np

from losstune.optimizers import fresh_optimizer
from losstune.population.engine import Engine, expand, finite_members, stack_variables


class JaxEngine(Engine):
    """JAX: the stacked state is a tuple of arrays that each jitted step takes and returns."""

    def __init__(self, members, first_batch, **layout):
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp
        super().__init__(members, first_batch, **layout)

    def _init_state(self):
        jnp, t, K = self.jnp, self.template, self.size
        self.trainable = [jnp.asarray(v) for v in stack_variables(self.models, lambda m: m.trainable_variables)]
        self.non_trainable = [jnp.asarray(v) for v in
                              stack_variables(self.models, lambda m: m.non_trainable_variables, self.shared)]
        self.metric_state = [[jnp.asarray(v) for v in self.initial_metric_state(g)] for g in self.groups]
        # The optimizer is built on stand-in variables of the stacked shapes; its state then lives here.
        self._stand_ins = [keras.Variable(np.asarray(v), dtype=tv.dtype, name=tv.name, constraint=tv.constraint)
                           for v, tv in zip(self.trainable, t.trainable_variables)]
        self.optimizer = fresh_optimizer(t.optimizer)
        self.optimizer.build(self._stand_ins)
        self.opt_state = [jnp.asarray(v.value) for v in self.optimizer.variables]
        self.alive = jnp.ones((K,), bool)
        self.failed_step = jnp.full((K,), -1, jnp.int32)
        self.failed_value = jnp.zeros((K,), jnp.float32)

    def _trace_steps(self):
        """Jit the training and test steps and trace both now (`jax.eval_shape`: no compilation, no state
        touched) on the first batch's shapes; the first real call reuses that trace (a batch of another
        shape, the last partial one, is traced again, as in Keras's JAX trainer)."""
        jax = self.jax
        self._train = jax.jit(self._train_step, donate_argnums=(0,))
        self._test = jax.jit(self._test_step)
        batch = self._device(*self.first_batch)
        jax.eval_shape(self._train, self._state(), *batch, self._code(0))
        jax.eval_shape(self._test, self.trainable, self.non_trainable, self.metric_state, *batch)

    def _device(self, *parts):
        return [None if p is None else keras.tree.map_structure(self.jnp.asarray, p) for p in parts]

    def _trace_probe(self, fn, preds):
        self.jax.eval_shape(fn, preds)

    def _state(self):
        return (self.trainable, self.non_trainable, self.opt_state, self.metric_state, self.alive,
                self.failed_step, self.failed_value)

    def _code(self, code):
        return self.jnp.asarray(code, self.failed_step.dtype)

    # -- traced steps -----------------------------------------------------------------------------------
    def _train_step(self, state, x, y, sample_weight, code):
        jax, jnp = self.jax, self.jnp
        trainable, non_trainable, opt_state, metric_state, alive, failed_step, failed_value = state

        def total_loss(tr):
            losses, new_nt, new_state = self.member_losses(tr, non_trainable, metric_state, x, y, sample_weight,
                                                           training=True)
            total = jnp.sum(jnp.where(alive, losses, 0.0))
            mapping = list(zip(self.optimizer.variables, opt_state))
            with keras.StatelessScope(state_mapping=mapping):
                total = self.optimizer.scale_loss(total)
            return total, (losses, new_nt, new_state)

        (_, (losses, new_nt, new_state)), grads = jax.value_and_grad(total_loss, has_aux=True)(trainable)
        ok = finite_members(losses, grads, self.size)
        newly_failed = alive & ~ok
        failed_step = jnp.where(newly_failed, code, failed_step)
        failed_value = jnp.where(newly_failed, losses, failed_value)
        keep = alive & ok
        new_tr, new_opt = self.optimizer.stateless_apply(opt_state, grads, trainable)
        # Mask the update itself: Adam moves a weight even when its gradient is zero.
        new_tr = [jnp.where(expand(keep, old), new, old) for new, old in zip(new_tr, trainable)]
        new_nt = [new.astype(old.dtype) if i in self.shared else
                  jnp.where(expand(keep, old), new.astype(old.dtype), old)
                  for i, (new, old) in enumerate(zip(new_nt, non_trainable))]
        return new_tr, new_nt, new_opt, new_state, keep, failed_step, failed_value

    def _test_step(self, trainable, non_trainable, metric_state, x, y, sample_weight):
        _, _, new_state = self.member_losses(trainable, non_trainable, metric_state, x, y, sample_weight,
                                             training=False)
        return new_state

    # -- what the engine calls --------------------------------------------------------------------------
    def _train_batch(self, x, y, sample_weight, code):
        state = self._train(self._state(), *self._device(x, y, sample_weight), self._code(code))
        (self.trainable, self.non_trainable, self.opt_state, self.metric_state, self.alive,
         self.failed_step, self.failed_value) = state

    def _test_batch(self, x, y, sample_weight):
        self.metric_state = self._test(self.trainable, self.non_trainable, self.metric_state,
                                       *self._device(x, y, sample_weight))

    def reset_metrics(self):
        self.metric_state = [[self.jnp.asarray(v) for v in self.initial_metric_state(g)] for g in self.groups]

    def freeze(self, indices):
        if indices:
            self.alive = self.alive.at[np.asarray(indices)].set(False)

    def _failed_at(self):
        return np.asarray(self.failed_step), np.asarray(self.failed_value)

    def _optimizer_value(self, i):
        return self.opt_state[i]

    def _load_optimizer(self, values):
        if len(values) != len(self.opt_state):
            raise ValueError(f"{len(values)} optimizer values for {len(self.opt_state)} variables")
        self.opt_state = [self.jnp.asarray(v, dtype=old.dtype) for v, old in zip(values, self.opt_state)]

    def _metric_values(self, g):
        return [np.asarray(v) for v in self.metric_state[self.groups.index(g)]]

    def _group_results(self, gi):
        if self._results[gi] is None:
            self._results[gi] = self.jax.jit(self._results_fn(self.groups[gi]))
        return self._results[gi](*self.metric_state[gi])
