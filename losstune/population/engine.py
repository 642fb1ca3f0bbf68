"""The backend-free population engine: the members' stacked state, their losses group by group, the retry
when a step cannot be traced, and the bookkeeping the epoch loop reads. One subclass per backend
(`engine_tf.TFEngine`, `engine_jax.JaxEngine`) keeps the state and traces the steps; what it must provide is
declared here as abstract methods.
"""

from __future__ import annotations

import abc
import bisect
import math

import keras
import numpy as np
from keras import ops

from losstune.population.eligibility import NotVectorizable, first_line
from losstune.population.forward import Forward, seed_states, vmap
from losstune.population.groups import loss_kwargs, make_groups, member_loss, numeric, patched


class Engine(abc.ABC):
    """The stacked state of a population and the pure computation of its members' losses.

    The constructor probes the members on a tiny batch, groups them by loss, asks the backend for its state
    (`_init_state`), decides which groups' losses map over members, and traces the training and test steps
    (`_trace_steps`) with one retry: when tracing fails while some group is mapped, every group is computed
    member by member and the steps are traced again; when that fails too, `NotVectorizable` is raised (no
    member's weights have been touched).

    Attributes a backend fills in `_init_state`: `trainable` and `non_trainable` (the stacked variables, in
    the template model's order; seed-generator states listed in `shared` unstacked), `metric_state` (one
    list of stacked metric variables per group) and `optimizer` (one optimizer over the stacked variables).
    """

    def __init__(self, members, first_batch, masked=False, streams=None):
        self.members = members
        # masked: a batch's sample weights are one row of 0/1 per member (K, B), the examples each member
        # trains or validates on (folds as members: population.driver); else one (B,) weight for all.
        self.masked = masked
        # streams: repeats as members. Every part of a batch (x, y, sample_weight) is stacked over R streams
        # (R, B, ...), one per seed, and member k trains on stream `streams[k]` (a (K,) int array); else None.
        self.streams = None if streams is None else np.asarray(streams, dtype="int32")
        self.models = [m.model for m in members]
        self.template = self.models[0]
        self.size = len(members)
        self.first_batch = first_batch  # (x, y, sample_weight): the steps are traced on its shapes
        self.epoch_starts = []  # the step code of each epoch's first batch: `failures` turns a code into (epoch, batch)
        self.steps_done = 0
        self.trainable, self.non_trainable, self.metric_state, self.optimizer = [], [], [], None
        self._built = set()
        self._reported = set()
        x, y = first_batch[:2]
        if self.streams is not None:  # the first stream's batch
            x, y = keras.tree.map_structure(lambda a: a[0], x), y[0]
        self._probe(x, y)
        self.groups = make_groups(self.models)
        self._group_of = {k: gi for gi, g in enumerate(self.groups) for k in g.indices}
        order = [k for g in self.groups for k in g.indices]
        # Losses come out group by group; this puts them back in member order.
        self.inverse = None if order == list(range(self.size)) else np.argsort(order).astype("int32")
        for g in self.groups:
            g.take = None if g.indices == list(range(self.size)) else np.asarray(g.indices, "int32")
        self._results = [None] * len(self.groups)
        self._build([g.model for g in self.groups])
        self.shared = self._shared_seed_states()
        self.forward = Forward(self.template, self.shared, own_inputs=self.streams is not None)
        self._init_state()
        self._probe_groups()
        self._trace_with_retry()

    # -- what a backend provides ------------------------------------------------------------------------
    @abc.abstractmethod
    def _init_state(self):
        """Create the stacked state (`trainable`, `non_trainable`, `metric_state`, `optimizer`, the members'
        alive and failure records)."""

    @abc.abstractmethod
    def _trace_probe(self, fn, preds):
        """Trace `fn(preds)` (a group's loss mapped over its members) without running it; raise if it cannot
        be traced."""

    @abc.abstractmethod
    def _trace_steps(self):
        """Trace the training and test steps now, on the shapes of `first_batch` (any batch size), without
        running them or touching any state; raise if either cannot be traced. Called again after the groups
        changed."""

    @abc.abstractmethod
    def _train_batch(self, x, y, sample_weight, code):
        """One training step on a batch; `code` (int) is the step's number in the whole run, recorded for a
        member that fails at it."""

    @abc.abstractmethod
    def _test_batch(self, x, y, sample_weight):
        """Update every member's metric state on one validation batch."""

    @abc.abstractmethod
    def reset_metrics(self):
        """Set every group's metric state to its initial values."""

    @abc.abstractmethod
    def freeze(self, indices):
        """Stop updating the members `indices` (they stopped or failed)."""

    @abc.abstractmethod
    def _failed_at(self):
        """(steps, values): NumPy arrays (K,), the step code at which each member failed (-1: not failed)
        and its loss at that step."""

    @abc.abstractmethod
    def _optimizer_value(self, i):
        """The current value of the population optimizer's i-th variable."""

    @abc.abstractmethod
    def _load_optimizer(self, values):
        """Set the population optimizer's variables to `values` (NumPy arrays, in `optimizer.variables` order)."""

    @abc.abstractmethod
    def _metric_values(self, g):
        """The current stacked metric values of group `g` as NumPy arrays, in `g.model.metrics_variables`
        order."""

    @abc.abstractmethod
    def _group_results(self, gi):
        """{metric name: stacked result} of group `gi` from its current metric state (a compiled function of
        `_results_fn`)."""

    # -- construction -----------------------------------------------------------------------------------
    def _probe(self, x, y):
        """A tiny batch, the initial predictions on it (members start from the same weights, so one member's
        serve all) and each member's compiled loss built on it (grouping reads the built loss)."""
        self._probe_x = keras.tree.map_structure(lambda a: a[:2], x)
        self._probe_y = y[:2]
        # Keras private (3.x): `_call_has_training_arg`, as in `forward.Forward`.
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
        """Indices of the non-trainable variables that are seed-generator states passed once to all members
        (`forward.Forward`, with the first member's value): those equal in all members, and with `masked`
        (folds as members) every one. Members of different folds are built from different seeds (their own
        initial weights), so their states differ; mapped per member, such a state makes TensorFlow draw each
        random op (Dropout's mask: StatelessRandomGetKeyCounter, StatelessRandomUniformV2) in a loop over
        members, having no vectorized form for a per-member seed. Folds as members draw one mask for all
        members, from the first member's state, as they follow one order of batches (`train_population`)."""
        if self.masked:
            return seed_states(self.template)
        out = []
        for i in seed_states(self.template):
            value = np.asarray(self.template.non_trainable_variables[i].numpy())
            if all(np.array_equal(np.asarray(m.non_trainable_variables[i].numpy()), value) for m in self.models):
                out.append(i)
        return out

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
                    with patched(g.loss, member_params):
                        return g.loss(y, pred)

                return vmap(one, (p, params))

            try:
                self._trace_probe(mapped, preds)
            except Exception:  # Python branching on a hyperparameter, or an op that takes no tensor there
                g.mapped = False
        self._build_unmapped()

    def _trace_with_retry(self):
        """Trace the steps; when that fails while some group is mapped (a loss or metric that does not map),
        compute every group member by member and trace again; when that fails too (a layer that cannot be
        mapped, even in a loop), raise `NotVectorizable` with the error's first line."""
        try:
            self._trace_steps()
            return
        except Exception as first:  # noqa: BLE001  (any failure to trace)
            error = first
        if any(g.mapped for g in self.groups):
            for g in self.groups:
                g.mapped = False
            self._build_unmapped()
            try:
                self._trace_steps()
                return
            except Exception as second:  # noqa: BLE001
                error = second
        raise NotVectorizable(f"a layer does not vectorize: {first_line(error)}") from error

    def describe(self):
        return "; ".join(g.describe() for g in self.groups)

    def initial_metric_state(self, g):
        """Group `g`'s initial metric values, stacked (one row per member), as NumPy arrays."""
        g.model.reset_metrics()
        return [np.stack([np.asarray(v.numpy())] * len(g.indices)) for v in g.model.metrics_variables]

    # -- the members' losses ----------------------------------------------------------------------------
    def member_losses(self, trainable, non_trainable, metric_state, x, y, sample_weight, *, training):
        """Forward pass of all members, then each group's losses and metric updates.

        Returns the (K,) vector of member losses in member order, the new non-trainable values and the
        new metric states (one list per group).
        """
        if self.streams is not None:  # each member's own batch, from its stream
            x, y, sample_weight = [None if part is None else keras.tree.map_structure(
                lambda a: take(a, self.streams), part) for part in (x, y, sample_weight)]
        y_pred, new_nt, extra = self.forward(trainable, non_trainable, x, training=training)
        parts, new_state = [], []
        own = self._own_parts(sample_weight)
        for g, state in zip(self.groups, metric_state):
            preds = take(y_pred, g.take)
            g_extra = [take(e, g.take) for e in extra]
            batch = [keras.tree.map_structure(lambda a: take(a, g.take), part) if mine else part
                     for part, mine in zip((x, y, sample_weight), own)]
            value, state = self._group_losses(g, batch, own, preds, g_extra, state, training=training)
            parts.append(ops.cast(value, "float32"))
            new_state.append(state)
        losses = parts[0] if len(parts) == 1 else ops.concatenate(parts)
        return take(losses, self.inverse), new_nt, new_state

    def _own_parts(self, sample_weight):
        """Which parts of a batch (x, y, sample_weight) hold one row per member: with `streams` all of them
        (the weight where there is one), with `masked` the weights."""
        if self.streams is not None:
            return (True, True, sample_weight is not None)
        return (False, False, self.masked)

    def _group_losses(self, g, batch, own, preds, extra, state, *, training):
        """Losses (one per member of `g`) and updated metric states of the group's members on `batch`
        (x, y, sample_weight), whose parts flagged in `own` hold one row per member of `g`."""
        masked = self.masked
        mine = [i for i, flag in enumerate(own) if flag]

        def member_batch(rows):  # the member's batch, given its rows of the parts that are its own
            parts = list(batch)
            for i, row in zip(mine, rows):
                parts[i] = row
            return tuple(parts)

        if g.mapped:
            params = {name: ops.convert_to_tensor(value) for name, value in g.params.items()}

            def one(args):
                pred, member_params, member_extra, member_state = args[:4]
                return member_loss(g.model, g.loss, member_params, member_batch(args[4:]), pred,
                                   member_extra, member_state, training=training, masked=masked)

            return vmap(one, (preds, params, list(extra), list(state)) + tuple(batch[i] for i in mine))
        losses, states = [], []
        for j, model in enumerate(g.models):
            rows = [keras.tree.map_structure(lambda a: a[j], batch[i]) for i in mine]
            value, new = member_loss(model, None, None, member_batch(rows), preds[j],
                                     [e[j] for e in extra], [s[j] for s in state], training=training,
                                     masked=masked)
            losses.append(value)
            states.append(new)
        return ops.stack(losses), [ops.stack(list(s)) for s in zip(*states)]

    def _results_fn(self, g):
        """A function of a group's stacked metric state -> {name: stacked result}."""

        def results(*state):
            def one(values):
                with keras.StatelessScope(state_mapping=list(zip(g.model.metrics_variables, values))):
                    return g.model.get_metrics_result()

            return vmap(one, list(state))

        return results

    # -- what the epoch loop calls ----------------------------------------------------------------------
    def set_loss_arguments(self, changes):
        """Members' loss arguments from now on ({member index: {argument: value}}: a schedule's values for
        this epoch, e.g. class weights switching on). Each member's own loss takes its values; a mapped group
        maps over every argument that changed (stacked from its members' values); when any value changed,
        the steps are traced again (the state is kept). Returns whether anything changed."""
        changed = set()
        for k, arguments in changes.items():
            own = loss_kwargs(self.models[k])
            for name, value in arguments.items():
                if own is None or name not in own:
                    raise ValueError(f"member {k}: its loss takes no argument {name!r} to schedule.")
                if not np.array_equal(np.asarray(own[name]), np.asarray(value)):
                    own[name] = value
                    changed.add((self._group_of[k], name))
        for gi, name in changed:
            g = self.groups[gi]
            values = [loss_kwargs(m)[name] for m in g.models]
            if g.mapped and numeric(values[0]):
                g.params[name] = np.stack([np.asarray(v, dtype=keras.config.floatx()) for v in values])
            elif g.mapped:  # a non-numeric argument cannot be mapped: its members compute one by one
                g.mapped = False
                self._build_unmapped()
        if changed:
            self._trace_with_retry()
        return bool(changed)

    def train_epoch(self, batches):
        """Train every active member on the next epoch's `batches` ((x, y, sample_weight) each)."""
        self.epoch_starts.append(self.steps_done)
        for x, y, sample_weight in batches:
            self._train_batch(x, y, sample_weight, self.steps_done)
            self.steps_done += 1

    def evaluate(self, batches):
        """Update every member's metric state on the validation `batches` ((x, y, sample_weight) each)."""
        for x, y, sample_weight in batches:
            self._test_batch(x, y, sample_weight)

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

    def failures(self):
        """{member index: message} for the members that failed since the last call."""
        out = {}
        if not self.epoch_starts:  # no epoch trained yet
            return out
        step, value = self._failed_at()
        for k in range(self.size):
            if step[k] >= 0 and k not in self._reported:
                self._reported.add(k)
                epoch = bisect.bisect_right(self.epoch_starts, int(step[k])) - 1
                batch = int(step[k]) - self.epoch_starts[epoch]
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
                    out[k] = {name: to_python(value[j]) for name, value in results.items()}
                else:
                    out[k] = self._member_results(g, j, self.models[k])
        return out

    def _member_results(self, g, j, model):
        """Member `j` of group `g`'s logs from its own model's metrics, given its slice of the state."""
        self._build([model])
        for v, value in zip(model.metrics_variables, self._metric_values(g)):
            v.assign(value[j])
        return {name: to_python(value) for name, value in model.get_metrics_result().items()}

    def survivors(self, rows):
        """A new engine of the members at `rows` only, to go on training them: the population's optimizer
        state (each member's slots, the shared step count) is carried over; weights and non-trainable state
        come from the members' models, so `write_back(rows)` first. The smaller stack is traced again, and
        the members that stopped cost nothing from then on."""
        values = [np.asarray(self._optimizer_value(i)) for i in range(len(self.optimizer.variables))]
        first = self.first_batch
        if self.masked:  # the survivors' rows of the first batch's weights
            first = (first[0], first[1], np.asarray(first[2])[np.asarray(rows)])
        streams = None if self.streams is None else self.streams[np.asarray(rows)]
        engine = type(self)([self.members[r] for r in rows], first, masked=self.masked, streams=streams)
        index = np.asarray(rows, dtype="int64")
        # A member's slots are the rows of the stacked slot variables; the step count (and a learning-rate
        # variable) are scalars, shared.
        engine._load_optimizer([v[index] if v.ndim else v for v in values])
        engine.epoch_starts, engine.steps_done = list(self.epoch_starts), self.steps_done
        return engine

    def sync_iterations(self, indices):
        """Set the step count of members' own optimizers to the population's (as `fit` would have)."""
        position = next(i for i, v in enumerate(self.optimizer.variables) if v is self.optimizer.iterations)
        count = int(np.asarray(self._optimizer_value(position)))
        for k in indices:
            self.models[k].optimizer.iterations.assign(count)


# -- helpers shared by the backends ------------------------------------------------------------------------
def take(value, indices):
    """`value`'s rows `indices` (all of them when None)."""
    return value if indices is None else ops.take(value, indices, axis=0)


def to_python(value):
    """A logged value as a Python float (or list of floats), as Keras's History keeps it."""
    value = np.asarray(value)
    return float(value) if value.ndim == 0 else value.tolist()


def expand(mask, like):
    """A (K,) mask reshaped to broadcast against a stacked (K, ...) value."""
    return ops.reshape(mask, (-1,) + (1,) * (len(like.shape) - 1))


def finite_members(losses, grads, size):
    """(K,) booleans: the member's loss and all its gradients are finite."""
    ok = ops.isfinite(losses)
    for g in grads:
        ok = ops.logical_and(ok, ops.all(ops.isfinite(ops.reshape(g, (size, -1))), axis=1))
    return ok


def stack_variables(models, variables_of, shared=()):
    """NumPy stacks (K, ...) of the members' variables; the `shared` ones once, unstacked."""
    out = []
    for i, v in enumerate(variables_of(models[0])):
        if i in shared:
            out.append(np.asarray(v.numpy()))
        else:
            out.append(np.stack([np.asarray(variables_of(m)[i].numpy()) for m in models]))
    return out
