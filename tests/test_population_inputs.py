"""Population inputs: whatever `model.fit` takes (arrays, a tf.data pipeline with augmentation, a
keras.utils.PyDataset, a generator; sample weights; a dataset as validation data) is streamed once, each batch
fed to every member, and each member ends as the same trial trained alone by `model.fit` on that input with
that seed (weights to 1e-5, logs to a relative 1e-5, as tests/test_population.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from losstune import objectives
from losstune.population import Member, Stream, train_population
try:
    from tests.test_population import (MLP_MEMBERS, SEED, XT, XV, YT, YV, assert_same_trial, compiled, conv,
                                       make_loss, mlp)
except ImportError:  # the JAX subprocess imports this file by name, with tests/ on its path
    from test_population import MLP_MEMBERS, SEED, XT, XV, YT, YV, assert_same_trial, compiled, conv, make_loss, mlp

BATCH = 32
WEIGHTS = np.linspace(0.5, 1.5, len(YT)).astype("float32")


class Batches(keras.utils.PyDataset):
    """A PyDataset over the digits arrays: batch i, and the order `fit(shuffle=True)` gives it."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return -(-len(self.y) // BATCH)

    def __getitem__(self, i):
        return self.x[i * BATCH:(i + 1) * BATCH], self.y[i * BATCH:(i + 1) * BATCH]


def augmented():
    """A tf.data pipeline as users write one: shuffled (seeded, reshuffled every epoch), batched, and
    augmented in `map` by a Keras random layer (noise drawn per batch)."""
    noise = keras.layers.GaussianNoise(0.05, seed=11)
    ds = tf.data.Dataset.from_tensor_slices((XT, YT)).shuffle(len(YT), seed=1).batch(BATCH)
    return ds.map(lambda x, y: (noise(x, training=True), y))


def generator():
    for i in range(0, len(YT), BATCH):
        yield XT[i:i + BATCH], YT[i:i + BATCH]


# name -> (fit's keyword arguments, built fresh for each side); epochs: a generator runs out after one epoch
INPUTS = {
    "arrays": lambda: dict(x=XT, y=YT, batch_size=BATCH),
    "tf.data with augmentation": lambda: dict(x=augmented()),
    "PyDataset": lambda: dict(x=Batches(XT, YT)),
    "generator": lambda: dict(x=generator()),
    "dataset with sample weights": lambda: dict(x=tf.data.Dataset.from_tensor_slices((XT, YT, WEIGHTS)).batch(BATCH)),
}
EPOCHS = {"generator": 1}


def seen_by_fit(kwargs, epochs):
    """The batches `model.fit` draws from an input with this seed: (x[:, 0], y) of each step."""
    seen = []

    class Recorder(keras.Model):
        def train_step(self, *args):  # (data) on TensorFlow, (state, data) on JAX
            data = args[-1]
            seen.append((np.asarray(data[0])[:, 0], np.asarray(data[1])))
            return {"n": 0.0} if len(args) == 1 else ({"n": 0.0}, args[0])

    inputs = keras.Input((64,))
    model = Recorder(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    keras.utils.set_random_seed(SEED)
    model.fit(**kwargs, epochs=epochs, shuffle=True, verbose=0)
    return seen


@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_stream_draws_the_batches_fit_draws(kind):
    epochs = EPOCHS.get(kind, 2)
    expected = seen_by_fit(INPUTS[kind](), epochs)
    keras.utils.set_random_seed(SEED)
    kwargs = INPUTS[kind]()
    stream = Stream(kwargs.pop("x"), kwargs.pop("y", None), shuffle=True, **kwargs)
    got = [(np.asarray(x)[:, 0], np.asarray(y)) for _ in range(epochs) for x, y, _ in stream.epoch()]
    assert len(got) == len(expected) > 0
    for (gx, gy), (ex, ey) in zip(got, expected):
        np.testing.assert_array_equal(gx, ex)
        np.testing.assert_array_equal(gy, ey)


@pytest.mark.parametrize("kind", ["tf.data with augmentation", "PyDataset", "generator",
                                  "dataset with sample weights"])
def test_members_fed_from_an_input_equal_solo_fits_on_it(kind):
    epochs = EPOCHS.get(kind, 2)
    specs = [MLP_MEMBERS[0], MLP_MEMBERS[1], MLP_MEMBERS[2]]  # a mapped focal pair and a weighted CE
    members = [Member(compiled(mlp, make_loss(spec))) for spec in specs]
    validation = tf.data.Dataset.from_tensor_slices((XV, YV)).batch(BATCH)
    train_population(members, **INPUTS[kind](), validation_data=validation, epochs=epochs, seed=SEED)
    # The member compared is the focal one whose gamma is not its group model's own (the mapped path); the
    # input path is the same for every member (tests/test_population.py compares every kind of member).
    for spec, member in [(specs[1], members[1])]:
        model = compiled(mlp, make_loss(spec))
        keras.utils.set_random_seed(SEED)
        history = model.fit(**INPUTS[kind](), validation_data=(XV, YV), batch_size=None if kind != "arrays"
                            else BATCH, epochs=epochs, shuffle=True, verbose=0).history
        assert_same_trial(member, model, history)


def seeded(builder, spec, seed):
    """A member's model as the solo trial of execution `seed` builds it (its seed, then build and compile)."""
    keras.utils.set_random_seed(seed)
    model = builder()
    model.compile(optimizer="adam", loss=make_loss(spec), metrics=[objectives.MacroF1()])
    return model


class StopAfterFirst(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


@pytest.mark.parametrize("kind", ["arrays", "dataset with sample weights"])
def test_members_of_different_seeds_equal_solo_fits_with_their_seeds(kind, monkeypatch, capsys):
    # Repeats as members: each seed's members see the batches (order, Dropout's draws, BatchNormalization's
    # statistics) of a solo fit with that seed, though members of all seeds share every step. From arrays, a
    # third member of the first seed stops after its first epoch and the others go on restacked.
    from losstune.population import driver

    monkeypatch.setattr(driver, "RESTACK_COST", 0.0)  # restack although masking is cheaper for this tiny model
    builder = conv if kind == "arrays" else mlp  # a dataset's tensors are stacked the same way for any model
    seeds, specs = [SEED, SEED + 1], [MLP_MEMBERS[1], MLP_MEMBERS[2]]
    plan = [(seed, spec) for seed in seeds for spec in specs]
    members = [Member(seeded(builder, spec, seed)) for seed, spec in plan]
    seeds = [seed for seed, _ in plan]
    if kind == "arrays":
        members.append(Member(seeded(builder, specs[0], SEED), callbacks=[StopAfterFirst()]))
        seeds.append(SEED)
    train_population(members, **INPUTS[kind](), validation_data=(XV, YV), epochs=2, seed=seeds, verbose=1)
    if kind == "arrays":
        assert members[-1].stopped_epoch == 0 and "4 members go on as a population of 4" in capsys.readouterr().out
    for (seed, spec), member in zip(plan, members):
        model = seeded(builder, spec, seed)
        keras.utils.set_random_seed(seed)
        history = model.fit(**INPUTS[kind](), validation_data=(XV, YV), epochs=2, shuffle=True, verbose=0).history
        assert_same_trial(member, model, history)
    assert not np.allclose(members[0].model.get_weights()[0], members[2].model.get_weights()[0], atol=1e-3)


def test_one_seed_per_member_is_checked_before_training():
    members = [Member(compiled(mlp, make_loss(spec))) for spec in MLP_MEMBERS[:2]]
    with pytest.raises(ValueError, match=r"`seed` must be an integer or a sequence of one integer per member \(2\)"):
        train_population(members, XT, YT, epochs=1, seed=[1, 2, 3])
    with pytest.raises(ValueError, match="one `seed` per member needs arrays or a tf.data.Dataset as `x`, got a "
                                         "Batches"):
        train_population(members, Batches(XT, YT), epochs=1, seed=[1, 2])
    holdout = np.zeros((2, len(YT)), dtype=bool)
    holdout[0, :10] = holdout[1, 10:20] = True
    with pytest.raises(ValueError, match="`holdout` takes one `seed`"):
        train_population(members, XT, YT, epochs=1, seed=[1, 2], holdout=holdout)
    assert all(m.history == {} for m in members)


def test_seeded_streams_stack_one_batch_per_seed_and_refuse_unequal_ones():
    from losstune.population.stream import SeededStreams

    made = []

    class Fake:  # a stream that records the seed set before it was made; with `grow`, each one's batches larger
        steps = 2

        def __init__(self, grow=False):
            self.rows = 3 + (len(made) if grow else 0)
            self.value = float(np.random.uniform())  # drawn from the seed set right before
            made.append(self)

        def epoch(self):
            for _ in range(self.steps):
                yield np.full((self.rows, 2), self.value, "float32"), np.zeros(self.rows), None

    batches = list(SeededStreams(Fake, [1, 2, 1]).epoch())
    assert len(batches) == 2 and batches[0][0].shape == (3, 3, 2) and batches[0][2] is None
    values = [float(batches[0][0][r, 0, 0]) for r in range(3)]
    assert values[0] == values[2] != values[1]  # each stream made right after its own seed
    made.clear()
    with pytest.raises(ValueError, match="batches of different shapes or numbers"):
        list(SeededStreams(lambda: Fake(grow=True), [1, 2]).epoch())


def test_an_input_without_batches_is_refused_before_training():
    members = [Member(compiled(mlp, make_loss(spec))) for spec in MLP_MEMBERS[:2]]
    empty = tf.data.Dataset.from_tensor_slices((XT[:0], YT[:0])).batch(BATCH)
    with pytest.raises(ValueError, match="`x` yields no batches"):
        train_population(members, empty, epochs=1, seed=SEED)
    with pytest.raises(ValueError, match="`validation_data` must be \\(x_val, y_val\\)"):
        train_population(members, XT, YT, validation_data=(XV, YV, None, None), epochs=1, seed=SEED)


JAX_SCRIPT = r"""
import json, sys
import numpy as np, keras
sys.path.insert(0, sys.argv[1])
import test_population_inputs as t
from losstune.population import Member, Stream, train_population
assert keras.backend.backend() == "jax"
out = {}
# The batches: JAX's `fit` draws one batch before epoch 0 and reshuffles from NumPy's generator each epoch.
for kind in ("arrays", "PyDataset"):
    expected = t.seen_by_fit(t.INPUTS[kind](), 2)
    keras.utils.set_random_seed(t.SEED)
    kwargs = t.INPUTS[kind]()
    stream = Stream(kwargs.pop("x"), kwargs.pop("y", None), shuffle=True, **kwargs)
    got = [np.asarray(x)[:, 0] for _ in range(2) for x, _, _ in stream.epoch()]
    out[kind] = len(got) == len(expected) and all(np.array_equal(a, b) for a, (b, _) in zip(got, expected))
# Members fed from a PyDataset (whole batches: JAX compiles a step per batch shape on both sides); a third
# stops after its first epoch, so the other two go on restacked (the optimizer's state carried over).
t.XT, t.YT = t.XT[:192], t.YT[:192]

class StopAfterFirst(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True

members = [Member(t.compiled(t.mlp, t.make_loss(s))) for s in t.MLP_MEMBERS[:2]]
members.append(Member(t.compiled(t.mlp, t.make_loss(t.MLP_MEMBERS[0])), callbacks=[StopAfterFirst()]))
import contextlib, io
from losstune.population import driver
driver.RESTACK_COST = 0.0  # restack even where masking would be cheaper (this model is tiny)
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    train_population(members, t.Batches(t.XT, t.YT), validation_data=(t.XV, t.YV), epochs=2, seed=t.SEED,
                     verbose=1)
model = t.compiled(t.mlp, t.make_loss(t.MLP_MEMBERS[1]))
keras.utils.set_random_seed(t.SEED)
history = model.fit(t.Batches(t.XT, t.YT), validation_data=(t.XV, t.YV), epochs=2, shuffle=True, verbose=0).history
out["dw"] = max(float(np.max(np.abs(np.asarray(v) - np.asarray(w))))
                for v, w in zip(model.variables, members[1].model.variables))
out["dh"] = max(abs(a - b) / max(abs(a), 1e-6) for k in history for a, b in zip(history[k], members[1].history[k]))
out["restacked"] = members[2].stopped_epoch == 0 and "2 members go on as a population of 2" in printed.getvalue()
# Repeats as members: one stream per seed, each drawing JAX's per-epoch shuffle from its own NumPy state.
plan = [(seed, t.MLP_MEMBERS[1]) for seed in (t.SEED, t.SEED + 1)]
members = [Member(t.seeded(t.mlp, spec, seed)) for seed, spec in plan]
train_population(members, t.XT, t.YT, validation_data=(t.XV, t.YV), epochs=2, batch_size=32,
                 seed=[seed for seed, _ in plan])
out["seeds_dw"] = 0.0
for (seed, spec), member in zip(plan, members):
    model = t.seeded(t.mlp, spec, seed)
    keras.utils.set_random_seed(seed)
    model.fit(t.XT, t.YT, batch_size=32, validation_data=(t.XV, t.YV), epochs=2, shuffle=True, verbose=0)
    out["seeds_dw"] = max([out["seeds_dw"]] + [float(np.max(np.abs(np.asarray(v) - np.asarray(w))))
                                               for v, w in zip(model.variables, member.model.variables)])
print("RESULT" + json.dumps(out))
"""
