"""losstune.search(population=K): K trials trained at once are the same trials as when trained one by one."""

import io
import os
import warnings

import keras
import numpy as np
import pytest

import losstune
from losstune import population
from tests.helpers import mlp, tiny_multiclass

X, Y = tiny_multiclass(n=220, classes=3)
X = X + np.random.default_rng(5).normal(scale=1.5, size=X.shape).astype("float32")  # classes overlap
X, XV, Y, YV = X[:160], X[160:], Y[:160], Y[160:]  # one draw: the trials' validation scores differ


def _search(tmp_path, name, **kw):
    out = io.StringIO()
    kw.setdefault("space", "imbalanced_multiclass")
    kw.setdefault("tuner", "random")
    kw = {"max_trials": 6, "epochs": 3, "race": 0, **kw}
    result = losstune.search(kw.pop("build", mlp(3, inputs=8)), X, Y, validation_data=(XV, YV), seed=2,
                             directory=str(tmp_path / name), stream=out, **kw)
    return result, out.getvalue()


@pytest.fixture(scope="module")
def serial_and_population(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pop")
    return _search(tmp, "serial"), _search(tmp, "population", population=4)


def test_members_are_the_same_trials_with_the_same_scores(serial_and_population):
    (serial, _), (together, log) = serial_and_population
    assert [t.loss for t in together.trials] == [t.loss for t in serial.trials]
    assert [t.status for t in together.trials] == ["COMPLETED"] * 6
    np.testing.assert_allclose([t.score for t in together.trials], [t.score for t in serial.trials], atol=1e-5)
    assert np.ptp([t.score for t in serial.trials]) > 0.02  # scores that differ, so equal ones say something
    assert together.best_trial.trial_id == serial.best_trial.trial_id
    assert log.count("] trial ") == 6 and "population: training" not in log


def test_members_have_their_own_runs_checkpoints_and_repeats(serial_and_population):
    _, (together, _) = serial_and_population
    for t in together.trials:
        trial_dir = os.path.join(together.directory, f"trial_{t.trial_id}")
        assert os.path.isfile(os.path.join(trial_dir, "checkpoint.weights.h5"))
        assert os.path.isfile(os.path.join(trial_dir, "repeats.json"))
        runs = os.listdir(os.path.join(together.directory, "logs", t.trial_id, "execution0"))
        assert {"train", "validation"} <= set(runs)
    assert isinstance(together.best_loss, keras.losses.Loss)


def test_a_members_checkpoint_restores_as_the_serial_trials(serial_and_population):
    # What KerasTuner's `load_model` does: a fresh build, compiled, then `load_weights`.
    # A serial checkpoint also holds optimizer moments, which that fresh model skips with a warning; a member's
    # holds its weights and a zero step count, and loads without one.
    (serial, _), (together, _) = serial_and_population
    loaded = {}
    for name, result in (("serial", serial), ("population", together)):
        model = mlp(3, inputs=8)()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        path = os.path.join(result.directory, f"trial_{result.best_trial.trial_id}", "checkpoint.weights.h5")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_weights(path)
        loaded[name] = (model.get_weights(), [str(w.message) for w in caught])
        assert int(model.optimizer.iterations.numpy()) == 0  # a fresh optimizer either way
    assert any("Skipping variable loading for optimizer" in m for m in loaded["serial"][1])
    assert loaded["population"][1] == []
    for a, b in zip(loaded["serial"][0], loaded["population"][0]):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


class CustomStep(keras.Model):
    def train_step(self, data):
        return super().train_step(data)


def custom_step_model(hp):
    inputs = keras.Input((8,))
    return CustomStep(inputs, keras.layers.Dense(3, activation="softmax")(inputs))


def test_a_model_that_cannot_be_vectorized_trains_serially_with_one_line(tmp_path):
    result, log = _search(tmp_path, "custom", build=custom_step_model, population=3)
    assert "population: training trials one by one: the model overrides `train_step`" in log
    assert [t.status for t in result.trials] == ["COMPLETED"] * 6


def test_members_with_different_architectures_train_in_separate_populations(tmp_path):
    def build(hp):
        units = hp.Choice("units", [4, 8])
        return keras.Sequential([keras.Input((8,)), keras.layers.Dense(units, activation="relu"),
                                 keras.layers.Dense(3, activation="softmax")])

    result, log = _search(tmp_path, "archs", build=build, population=6)
    assert [t.status for t in result.trials] == ["COMPLETED"] * 6
    assert "population: training" not in log


def test_population_is_refused_where_it_cannot_apply(tmp_path):
    import tensorflow as tf

    with pytest.raises(ValueError, match="`population`: Hyperband gives its trials different epoch budgets"):
        losstune.search(mlp(3, inputs=8), X, Y, tuner="hyperband", population=4, directory=str(tmp_path))
    batches = (b for b in [(X, Y)])
    with pytest.raises(ValueError, match="`x` is a generator .* can be read only once"):
        losstune.search(mlp(3, inputs=8), batches, validation_data=(XV, YV), population=4, directory=str(tmp_path))
    with pytest.raises(ValueError, match="`population` must be an integer >= 1, got 0"):
        losstune.search(mlp(3, inputs=8), X, Y, population=0, directory=str(tmp_path))
    with pytest.raises(ValueError, match="`population` must be an integer >= 1 or \"auto\", got 'fast'"):
        losstune.search(mlp(3, inputs=8), X, Y, population="fast", directory=str(tmp_path))


# ------------------------------------------------------------------------------------------------------
# population="auto"
# ------------------------------------------------------------------------------------------------------
def test_a_members_memory_is_estimated_from_its_parameters_and_activations():
    model = mlp(10, inputs=64, hidden=32)()
    params = (64 * 32 + 32) + (32 * 10 + 10)
    assert model.count_params() == params
    # 64 bytes per parameter (measured), plus a batch of each layer's outputs and their gradients in float32
    assert population.member_bytes(model, 32) == 64 * params + 2 * 4 * 32 * (32 + 10)


def test_auto_size_takes_what_fits_within_its_limits(monkeypatch):
    model = mlp(10, inputs=64, hidden=32)()
    per = population.member_bytes(model, 32)
    assert population.auto_size(model, 32, limit=100, free_bytes=10**12)[0] == population.AUTO_MAX == 32
    assert population.auto_size(model, 32, limit=5, free_bytes=10**12)[0] == 5
    size, why = population.auto_size(model, 32, limit=100, free_bytes=2 * 3 * per + 1)
    assert size == 3 and "3 fit in half the free memory" in why
    assert population.auto_size(model, 32, limit=100, free_bytes=per)[0] == 1
    # trials of 3 repeats (or folds) as members: a third as many trials fit
    size, why = population.auto_size(model, 32, limit=100, free_bytes=2 * 3 * per + 1, members_per_trial=3)
    assert size == 1 and "per trial of 3 members" in why
    assert population.auto_size(model, 32, limit=100, free_bytes=2 * 9 * per + 1, members_per_trial=3)[0] == 3
    monkeypatch.setattr(population.sizing, "free_memory_bytes", lambda: None)
    size, why = population.auto_size(model, 32, limit=100)
    assert size == 32 and "free memory unknown" in why


def test_free_memory_is_read_from_the_host_on_cpu():
    free = population.free_memory_bytes()
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < free <= total


def _size(size, tuner_cls, max_trials=12, random_first=0):
    import keras_tuner

    from losstune.hypermodel import LossHyperModel
    from losstune.search import Settings, _population_size

    hypermodel = LossHyperModel(mlp(3, inputs=8), losstune.LossSpace.coerce("imbalanced_multiclass"),
                                class_counts=[50, 30, 20], from_logits=False, optimizer="adam", metrics=None,
                                seed=0, folds=None)
    out = io.StringIO()
    tuner_cls = getattr(keras_tuner, tuner_cls)
    settings = Settings(tuner_cls=tuner_cls, max_trials=max_trials, epochs=1, executions_per_trial=1, batch_size=32,
                        seed=0, race=0, folds=None, population=size, prune=None, score="last", confirm_seeds=0,
                        verbose=0, stream=out)
    return _population_size(settings, hypermodel, random_first), out.getvalue()


def test_auto_keeps_bayesian_rounds_and_falls_back_where_a_population_cannot_run():
    size, line = _size("auto", "RandomSearch")
    assert size == 12 and "population: auto: 12 trials at once (at most 12; about" in line
    assert _size("auto", "BayesianOptimization")[0] == 3  # at least 4 rounds of 12 trials
    assert _size("auto", "BayesianOptimization", max_trials=4)[0] == 2
    assert _size("auto", "BayesianOptimization", max_trials=1)[0] == 1
    # rounds as large as the oracle's random phase cost nothing: an 8-trial search with 24 random draws first
    assert _size("auto", "BayesianOptimization", max_trials=8, random_first=24)[0] == 8
    assert _size("auto", "BayesianOptimization", max_trials=40, random_first=6)[0] == 10
    size, line = _size("auto", "Hyperband")
    assert size == 1 and "one by one: Hyperband" in line
    assert _size(5, "RandomSearch") == (5, "")


def test_an_auto_population_search_trains_its_trials_together(tmp_path):
    from tests.test_population_tuners import _populations

    with _populations() as sizes:
        result, log = _search(tmp_path, "auto", population="auto")
    assert sizes == [6] and "population: auto: 6 trials at once" in log
    assert [t.status for t in result.trials] == ["COMPLETED"] * 6


def test_an_auto_bayesian_search_trains_its_random_phase_in_one_round(tmp_path):
    # The space's hyperparameters make the oracle's random phase longer than 6 trials: one round of 6, not 2.
    from tests.test_population_tuners import _populations

    with _populations() as sizes:
        result, log = _search(tmp_path, "auto", population="auto", tuner="bayesian")
    assert sizes == [6] and "population: auto: 6 trials at once" in log


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, size=16):
        super().__init__()
        self.x, self.y, self.size = x, y, size

    def __len__(self):
        return -(-len(self.y) // self.size)

    def __getitem__(self, i):
        return self.x[i * self.size:(i + 1) * self.size], self.y[i * self.size:(i + 1) * self.size]


@pytest.mark.parametrize("kind", ["tf.data with augmentation", "PyDataset"])
def test_a_dataset_search_trains_its_trials_together_from_one_stream(tmp_path, kind):
    import tensorflow as tf

    from tests.test_population_tuners import _populations

    if kind == "PyDataset":
        train, validation = Batches(X, Y), Batches(XV, YV)
    else:
        noise = keras.layers.GaussianNoise(0.1, seed=3)
        train = tf.data.Dataset.from_tensor_slices((X, Y)).shuffle(len(Y), seed=1).batch(16)
        train = train.map(lambda x, y: (noise(x, training=True), y))
        validation = tf.data.Dataset.from_tensor_slices((XV, YV)).batch(16)
    out = io.StringIO()
    with _populations() as sizes:
        result = losstune.search(mlp(3, inputs=8), train, validation_data=validation, tuner="random", max_trials=4,
                                 epochs=2, race=0, seed=2, population=4, directory=str(tmp_path), stream=out)
    assert sizes == [4] and "population: training" not in out.getvalue()
    assert [t.status for t in result.trials] == ["COMPLETED"] * 4
    assert all(np.isfinite(t.score) for t in result.trials)


def test_repeats_train_as_members_with_the_serial_scores(tmp_path, monkeypatch):
    # 3 trials x 2 repeats: one population of 6, each member with its own execution's seed (initial weights,
    # data order, Dropout's draws); the race's 2 pending repeats of its candidates (a race to 4 repeats): one
    # population. Every repeat scores as the serial search's.
    from losstune import racing
    from tests.test_population_tuners import _populations

    monkeypatch.setattr(racing, "RACE_REPEATS", 4)
    kw = dict(build=mlp(3, inputs=8, dropout=0.2), max_trials=3, epochs=2, executions_per_trial=2, race=2)
    serial, _ = _search(tmp_path, "serial", **kw)
    with _populations() as sizes:
        together, log = _search(tmp_path, "together", population=3, **kw)
    raced = [t for t in together.trials if len(t.scores) == 4]
    assert len(raced) >= 2 and sizes == [6, 2 * len(raced)] and "population: training" not in log
    assert [t.loss for t in together.trials] == [t.loss for t in serial.trials]
    for a, b in zip(together.trials, serial.trials):
        assert len(a.scores) == len(b.scores) >= 2
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    assert len({round(s, 6) for t in serial.trials for s in t.scores}) > 3  # repeats that differ


def test_the_best_epoch_checkpoint_is_written_once_when_training_ends(tmp_path):
    import keras_tuner

    from losstune.tuner import SaveBestAtTrainEnd

    model = mlp(3, inputs=8)(None)
    path = str(tmp_path / "checkpoint.weights.h5")
    cb = SaveBestAtTrainEnd(keras_tuner.Objective("val_score", "max"), path)
    cb.set_model(model)
    cb.on_train_begin()
    weights = [model.get_weights()]
    for epoch, value in enumerate([0.5, 0.8, 0.6]):  # the best epoch is the second
        model.set_weights([w + 1.0 for w in model.get_weights()])
        weights.append(model.get_weights())
        cb.on_epoch_end(epoch, {"val_score": value})
    assert not os.path.exists(path)
    cb.on_train_end()
    for now, last in zip(model.get_weights(), weights[-1]):  # the model keeps its final weights
        np.testing.assert_array_equal(now, last)
    model.load_weights(path)
    for saved, best in zip(model.get_weights(), weights[2]):
        np.testing.assert_array_equal(saved, best)
