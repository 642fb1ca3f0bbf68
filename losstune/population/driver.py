"""`train_population`: the argument checks and the epoch loop of `fit`, for every member at once."""

from __future__ import annotations

import itertools
import time

import keras
import numpy as np

from losstune import inputs
from losstune.checks import positive_int
from losstune.population.eligibility import NotVectorizable, architecture_key, vectorizable
from losstune.population.member import Member
from losstune.population.stream import Repeated, SeededStreams, Stream, unpack


def train_population(members, x, y=None, *, validation_data=None, epochs, batch_size=None, shuffle=True, seed,
                     holdout=None, verbose=0):
    """Train `members` together; each ends as if `model.fit` had trained it alone with this seed.

    Args:
        members: `Member`s whose models come from the same builder and seed (identical architecture and
            initial weights), each compiled with its own loss and metrics and an optimizer of one common
            configuration. `vectorizable(members[0].model)` must be None.
        x, y: the training input, as `model.fit` takes it: arrays (x may be a list/tuple/dict of arrays for a
            multi-input model) with y, or a `tf.data.Dataset`, a `keras.utils.PyDataset` or a generator
            yielding (x, y) or (x, y, sample_weight) batches, with y None. Each batch is drawn once and fed to
            every member (see `stream.Stream`).
        validation_data: as in `model.fit`: `(x_val, y_val)`, `(x_val, y_val, sample_weight)`, a dataset,
            a PyDataset, or None; validated each epoch with each member's own compiled loss and metrics
            (arrays batched by `batch_size`).
        epochs, batch_size, shuffle: as in `model.fit`.
        seed: the seed a solo trial passes to `keras.utils.set_random_seed` right before `fit`; it fixes the
            data order (the input's shuffling is drawn as `fit` draws it). Or one seed per member (repeats as
            members): members of different seeds each see the batches a solo `fit` with their own seed sees,
            drawn from one stream of the input per seed (`stream.SeededStreams`; arrays or a tf.data.Dataset),
            and the validation batches are shared. Each member's random layers draw from its own model's
            seed state, as when it trains alone.
        holdout: None, or folds as members: a (K, n) boolean array over the n examples of the arrays (x, y),
            True where example i is held out of member k. Each member then trains on the batches of the whole
            (x, y) with its held-out examples weighted 0 (its loss is the mean over the examples it keeps:
            `groups.member_loss`), and validates on its held-out examples (`validation_data` must be None).
            A held-out example's label never reaches the member's gradient; its features do pass through the
            model in the batch, so BatchNormalization's batch statistics (and moving averages) include them.
            Random layers (Dropout, noise, augmentation) draw once for all members, from the first member's
            seed state (members of different folds may come from different seeds: their own initial weights).
        verbose: 0 silent, 1 a line for the plan and one per epoch.

    Returns:
        `members`, with `history`, `failure` and `stopped_epoch` filled and each model holding its final
        weights (see `Member`).

    Raises:
        NotVectorizable: the members cannot share one computation (`vectorizable` refuses them, or their
            step cannot be traced); no member's weights were touched. Train them one by one.
        ValueError: an argument is not as described.
    """
    members = list(members) if isinstance(members, (list, tuple)) else members
    if not isinstance(members, list) or not members or not all(isinstance(m, Member) for m in members):
        raise ValueError(f"`members` must be a non-empty list of Member, got {members!r}.")
    epochs = positive_int("epochs", epochs, 0)
    if batch_size is not None:
        batch_size = positive_int("batch_size", batch_size, 1)
    if shuffle not in (True, False, "batch"):
        raise ValueError(f"`shuffle` must be True, False or \"batch\", got {shuffle!r}.")
    if verbose not in (0, 1, 2):
        raise ValueError(f"`verbose` must be 0, 1 or 2, got {verbose!r}.")
    seeds = _seeds(seed, len(members))
    check_members(members)
    masks = None if holdout is None else Holdout(holdout, len(members), x, y, validation_data)
    distinct = list(dict.fromkeys(seeds))
    if masks is not None and len(distinct) > 1:
        raise ValueError("`holdout` takes one `seed`: folds as members follow one order of batches.")
    streams = None
    if len(distinct) > 1:
        if inputs.is_generator(x) or isinstance(x, keras.utils.PyDataset):
            raise ValueError(f"one `seed` per member needs arrays or a tf.data.Dataset as `x`, got a "
                             f"{type(x).__name__}: each seed iterates the input on its own (a generator yields its "
                             f"batches once; a PyDataset's epoch hooks would run once per seed).")
        streams = np.asarray([distinct.index(s) for s in seeds])
    keras.utils.set_random_seed(distinct[0])  # as the solo trial, right before `fit` creates its iterator
    train, validation = _streams(x, y, validation_data, batch_size, shuffle, masks, distinct)
    first_epoch = train.epoch() if masks is None else masks.weigh(train.epoch(), "train", range(len(members)))
    first = next(first_epoch, None)
    if first is None:
        raise ValueError("`x` yields no batches: a population needs at least one training batch.")
    for m in members:  # the losses of epoch 0 decide the loss groups
        if m.schedule is not None:
            m.model.loss._fn_kwargs.update(m.schedule.arguments_at(0))
    started = time.perf_counter()
    engine = _engine_class()(members, first, masked=masks is not None, streams=streams)
    if verbose:
        print(f"population of {len(members)}: {engine.describe()}", flush=True)
    loop = _Loop(engine, members, train, epochs, verbose, masks, restack_seconds=time.perf_counter() - started)
    return loop.run(itertools.chain([first], first_epoch), validation)


def _seeds(seed, size):
    """One seed per member, from `seed`: an integer, or a sequence of `size` integers."""
    def integer(value):
        return not isinstance(value, bool) and isinstance(value, (int, np.integer))

    if integer(seed):
        return [int(seed)] * size
    if isinstance(seed, (list, tuple, np.ndarray)) and len(seed) == size and all(integer(s) for s in seed):
        return [int(s) for s in seed]
    raise ValueError(f"`seed` must be an integer or a sequence of one integer per member ({size}), got {seed!r}.")


def _streams(x, y, validation_data, batch_size, shuffle, masks, seeds):
    """The training stream and the validation stream (or None). With folds as members (`masks`), both run over
    the arrays (x, y) with each example's index as its sample weight, which `Holdout.weigh` turns into the
    members' rows of weights. With several `seeds`, the training stream is one stream per seed, stacked
    (`SeededStreams`), and the validation batches are repeated once per seed."""
    if masks is not None:
        index = np.arange(masks.size, dtype="float32")
        return (Stream(x, y, index, batch_size=batch_size, shuffle=shuffle, training=True),
                Stream(x, y, index, batch_size=batch_size, training=False))
    if len(seeds) > 1:
        train = SeededStreams(lambda: Stream(x, y, batch_size=batch_size, shuffle=shuffle, training=True), seeds)
    else:
        train = Stream(x, y, batch_size=batch_size, shuffle=shuffle, training=True)
    if isinstance(validation_data, (tuple, list)) and len(validation_data) not in (2, 3):
        raise ValueError(f"`validation_data` must be (x_val, y_val), (x_val, y_val, sample_weight), a dataset, a "
                         f"PyDataset or None, got a {type(validation_data).__name__} of length "
                         f"{len(validation_data)}.")
    if validation_data is None:
        return train, None
    val_x, val_y, val_weight = unpack(validation_data)
    validation = Stream(val_x, val_y, val_weight, batch_size=batch_size, training=False)
    return train, (validation if len(seeds) == 1 else Repeated(validation, len(seeds)))


class Holdout:
    """Folds as members: which examples each member trains on and which it validates on, as 0/1 weights."""

    def __init__(self, holdout, size, x, y, validation_data):
        holdout = np.asarray(holdout)
        if not isinstance(y, np.ndarray) or not all(isinstance(a, np.ndarray) for a in keras.tree.flatten(x)):
            raise ValueError("`holdout` needs x and y as NumPy arrays: folds are cut by example index.")
        n = len(y)
        if holdout.dtype != bool or holdout.shape != (size, n):
            raise ValueError(f"`holdout` must be a boolean array of shape (members, examples) = ({size}, {n}), got "
                             f"{holdout.dtype} {holdout.shape}.")
        if validation_data is not None:
            raise ValueError("`holdout` and `validation_data` exclude each other: each member validates on the "
                             "examples held out of its training.")
        if (~holdout).sum(axis=1).min() == 0 or holdout.sum(axis=1).min() == 0:
            raise ValueError("`holdout`: every member needs examples to train on and examples held out.")
        self.size = n
        self.weights = {"train": (~holdout).astype("float32"), "validation": holdout.astype("float32")}

    def weigh(self, batches, which, rows):
        """`batches` of (x, y, example index) as (x, y, weights): the rows `rows` of the members' weights."""
        table = self.weights[which][np.asarray(list(rows))]
        for x, y, index in batches:
            yield x, y, table[:, np.asarray(index).astype("int64")]


# Restack only when the time the stopped members would still cost exceeds this many times a new engine's build.
RESTACK_COST = 1.0


def _engine_class():
    if keras.backend.backend() == "jax":
        from losstune.population.engine_jax import JaxEngine

        return JaxEngine
    from losstune.population.engine_tf import TFEngine

    return TFEngine


def check_members(members):
    """Refuse members that cannot be one population: `NotVectorizable` when the model cannot be vectorized,
    ValueError when the members differ where they must not (architecture, optimizer) or are not fresh."""
    template = members[0].model
    reason = vectorizable(template, trace=False)  # the population's own trace checks the layers
    if reason:
        raise NotVectorizable(reason)
    key = architecture_key(template)
    config = optimizer_config(template.optimizer)
    for m in members:
        if not m.model.compiled or m.model.loss is None:
            raise ValueError(f"`members`: the model of {m.name!r} is not compiled with a loss.")
        if architecture_key(m.model) != key:
            raise ValueError(
                f"`members`: {m.name!r} has a different architecture from {members[0].name!r}; a population "
                f"holds models of one builder (group members by architecture)."
            )
        if optimizer_config(m.model.optimizer) != config:
            raise ValueError(
                f"`members`: {m.name!r} has optimizer {optimizer_config(m.model.optimizer)}, "
                f"{members[0].name!r} has {config}; members share one optimizer configuration."
            )
        if m.model.optimizer.built and int(m.model.optimizer.iterations.numpy()) != 0:
            raise ValueError(f"`members`: the optimizer of {m.name!r} has already trained; give each member a "
                             f"fresh optimizer.")
    if len({id(m.model) for m in members}) != len(members):
        raise ValueError("`members`: the same model object appears twice; give each member its own model.")


def optimizer_config(optimizer):
    """An optimizer's configuration apart from its name."""
    config = dict(optimizer.get_config())
    config.pop("name", None)
    return config


class _Loop:
    """The epoch loop of `fit`, for every member at once: callbacks, training, validation, logs. A member
    that stops (its failure or its callbacks' `stop_training`) leaves the loop after that epoch; when it pays,
    the others are restacked without the stopped ones (`compact`).

    Members are numbered k in `members`; the engine numbers its stacked rows, `rows[r]` being the member of
    row r (all members at first, the survivors after a compaction)."""

    def __init__(self, engine, members, stream, epochs, verbose, masks=None, restack_seconds=0.0):
        self.engine, self.members, self.stream, self.epochs, self.verbose = engine, members, stream, epochs, verbose
        self.masks = masks  # a Holdout (folds as members), or None
        self.callbacks = [keras.callbacks.CallbackList(m.callbacks, add_history=False, add_progbar=False,
                                                       model=m.model, epochs=epochs, steps=stream.steps, verbose=0)
                          for m in members]
        self.active = list(range(len(members)))
        self.rows = list(range(len(members)))
        self.restack_seconds = restack_seconds  # what building the engine cost
        self.logs = [None] * len(members)

    def run(self, first_epoch, validation):
        """Every epoch: `first_epoch` (epoch 0's batches, already started), then the stream's next ones."""
        for k, m in enumerate(self.members):
            m.history, m.failure, m.stopped_epoch = {}, None, None
            m.model.stop_training = False
            self.callbacks[k].on_train_begin()
        for epoch in range(self.epochs):
            if not self.active:
                break
            start = time.perf_counter()
            self._epoch(epoch, first_epoch if epoch == 0 else self._batches(self.stream, "train"), validation)
            if self.verbose:
                print(f"population epoch {epoch + 1}/{self.epochs}: {len(self.active)} of {len(self.members)} "
                      f"members training, {time.perf_counter() - start:.2f}s", flush=True)
            if epoch + 1 < self.epochs:
                self.compact(time.perf_counter() - start, self.epochs - epoch - 1)
        for k in self.active:
            self.callbacks[k].on_train_end(self.logs[k])
        return self.members

    def _batches(self, stream, which):
        """The stream's next epoch; with folds as members, each batch weighted per member row."""
        return stream.epoch() if self.masks is None else self.masks.weigh(stream.epoch(), which, self.rows)

    def row_of(self, members):
        where = {k: r for r, k in enumerate(self.rows)}
        return [where[k] for k in members]

    def by_member(self, by_row):
        return {self.rows[r]: value for r, value in by_row.items()}

    def _epoch(self, epoch, batches, validation):
        engine = self.engine
        scheduled = {r: self.members[k].schedule.arguments_at(epoch)
                     for r, k in zip(self.row_of(self.active), self.active) if self.members[k].schedule is not None}
        if scheduled:
            engine.set_loss_arguments(scheduled)
        for k in self.active:
            self.callbacks[k].on_epoch_begin(epoch)
        engine.reset_metrics()
        engine.train_epoch(batches)
        # callbacks such as TensorBoard log against optimizer.iterations
        engine.sync_iterations(self.row_of(self.active))
        failed = self.by_member(engine.failures())
        train_logs = self.by_member(engine.collect_logs())
        epoch_logs = {k: train_logs[k] for k in self.active}
        if validation is not None:
            self._validate(validation, epoch_logs)
        # A member that failed keeps the weights it had before its first non-finite step.
        engine.write_back(self.row_of(self.active))
        self._end_epoch(epoch, failed, epoch_logs)

    def _validate(self, validation, epoch_logs):
        for k in self.active:
            self.callbacks[k].on_test_begin()
        self.engine.reset_metrics()
        self.engine.evaluate(self._batches(validation, "validation"))
        test_logs = self.by_member(self.engine.collect_logs())
        for k in self.active:
            val = test_logs[k]
            self.callbacks[k].on_test_end(val)
            epoch_logs[k].update({f"val_{name}": value for name, value in val.items()})

    def _end_epoch(self, epoch, failed, epoch_logs):
        members = self.members
        for k in self.active:
            m = members[k]
            if k in failed:
                m.failure = failed[k]
            for name, value in epoch_logs[k].items():
                m.history.setdefault(name, []).append(value)
            self.callbacks[k].on_epoch_end(epoch, epoch_logs[k])
            self.logs[k] = epoch_logs[k]
        stopped = [k for k in self.active if members[k].failure or members[k].model.stop_training]
        for k in stopped:
            members[k].stopped_epoch = epoch
            self.callbacks[k].on_train_end(self.logs[k])
        self.engine.freeze(self.row_of(stopped))
        self.active = [k for k in self.active if k not in stopped]

    def compact(self, epoch_seconds, remaining):
        """Restack the members still training without the stopped ones when that pays: the stopped rows' share
        of an epoch's time over the remaining epochs must exceed RESTACK_COST times what building the engine
        (its trace) cost. Pruning and halving then save the stopped members' compute; for a model whose epoch
        takes less than its trace (a small MLP), masking them is cheaper."""
        idle = len(self.rows) - len(self.active)
        if not self.active or idle == 0:
            return
        if idle / len(self.rows) * epoch_seconds * remaining <= RESTACK_COST * self.restack_seconds:
            return
        started = time.perf_counter()
        self.engine = self.engine.survivors(self.row_of(self.active))
        self.restack_seconds = time.perf_counter() - started
        self.rows = list(self.active)
        if self.verbose:
            print(f"population: {len(self.active)} members go on as a population of {len(self.active)} "
                  f"({idle} stopped)", flush=True)
