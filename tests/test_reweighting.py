"""Deferred re-weighting: the schedule's weights by epoch, in `fit` and in a population (members equal to solo
training), in the space and its recipes, and the exported schedule reloading into a user's training."""

import io
import json

import keras
import numpy as np
import pytest

import losstune
from losstune import families
from losstune.lossspace import LossSpace, TrialLoss
from losstune.population import Member, train_population
from losstune.reweighting import DeferredReweighting, Schedule, start_epoch
from tests.helpers import mlp, tiny_multiclass

EPOCHS = 4
WEIGHTS = [0.5, 1.0, 3.0]


def _loss(gamma=None, weights=WEIGHTS):
    if gamma is None:
        return families.get("crossentropy").build({}, task="multiclass", class_weights=weights)
    return families.get("focal").build({"gamma": gamma}, task="multiclass", class_weights=weights)


def _model(loss, seed=0):
    keras.utils.set_random_seed(seed)
    model = mlp(3, inputs=8)()
    model.compile(optimizer="adam", loss=loss)
    return model


class _Seen(keras.callbacks.Callback):
    """The class weights the compiled loss computes with at each epoch, and the validation loss."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_begin(self, epoch, logs=None):
        self.weights.append(list(np.asarray(self.model.loss._fn_kwargs["class_weights"], float)))


def test_start_epoch_and_the_schedule_by_epoch():
    assert [start_epoch(s, 8) for s in (0.0, 0.5, 0.75, 0.9)] == [0, 4, 6, 7]
    with pytest.raises(ValueError, match="`start` must be a fraction in \\[0, 1\\), got 1.0"):
        start_epoch(1.0, 8)
    schedule = Schedule(_loss(), start_epoch=2)
    assert [list(schedule.arguments_at(e)["class_weights"]) for e in range(4)] == [[1.0] * 3] * 2 + [WEIGHTS] * 2
    off, on = schedule.off.get_config(), schedule.on.get_config()
    assert list(off.pop("class_weights")) == [1.0] * 3 and list(on.pop("class_weights")) == WEIGHTS and off == on
    with pytest.raises(ValueError, match="needs a loss with `class_weights` or a re-weighting of its own"):
        Schedule(_loss(weights=None), 1)


COUNTS = [60.0, 25.0, 5.0]


def _class_balanced(beta=0.999):
    return families.get("class_balanced").build({"beta": beta}, task="multiclass", class_counts=COUNTS)


def test_a_familys_own_reweighting_defers_too():
    # class-balanced declares beta = 0 as its re-weighting off: before the start epoch it is plain
    # cross-entropy (Keras's own, as the reference), from it the effective-number weights (NumPy formula).
    schedule = Schedule(_class_balanced(), start_epoch=1)
    assert schedule.off.get_config()["beta"] == 0.0 and schedule.on.get_config()["beta"] == 0.999
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]], "float32")
    reference = keras.losses.SparseCategoricalCrossentropy()(y, p)
    assert float(schedule.loss_at(0)(y, p)) == pytest.approx(float(reference), rel=1e-5)
    w = (1 - 0.999) / (1 - 0.999 ** np.asarray(COUNTS))
    w = w / w.sum() * 3
    assert float(schedule.loss_at(1)(y, p)) == pytest.approx(float(np.mean(w[y] * -np.log(p[np.arange(4), y]))),
                                                         rel=1e-5)
    # In a space: a class-balanced trial with a start defers its beta even without class weights (power 0).
    assert TrialLoss("class_balanced", {"beta": 0.999}, power=0.0, start=0.75).deferred
    assert not TrialLoss("crossentropy", {}, power=0.0, start=0.75).deferred
    assert "re-weighted from 75% of the epochs" in TrialLoss("class_balanced", {"beta": 0.999}, 0.0, 0.75).describe()


def _fit(loss, callbacks, x, y):
    model = _model(loss)
    keras.utils.set_random_seed(0)
    history = model.fit(x, y, validation_data=(x[:40], y[:40]), epochs=EPOCHS, batch_size=16, verbose=0,
                        callbacks=callbacks)
    return model, history.history


def test_in_fit_the_traced_functions_switch_to_the_class_weights_at_the_start_epoch():
    x, y = tiny_multiclass(n=90)
    loss = _loss()  # the schedule is made from the very loss the model compiles, as users do
    seen = _Seen()
    model, history = _fit(loss, [DeferredReweighting(Schedule(loss, start_epoch=2)), seen], x, y)
    assert seen.weights == [[1.0] * 3] * 2 + [WEIGHTS] * 2
    _, unweighted = _fit(_loss(weights=[1.0] * 3), [], x, y)
    _, weighted = _fit(_loss(), [], x, y)
    np.testing.assert_allclose(history["loss"][:2], unweighted["loss"][:2], rtol=1e-6)  # weights off
    assert abs(history["loss"][3] - unweighted["loss"][3]) > 1e-3  # ... and on: training changed
    assert abs(history["loss"][3] - weighted["loss"][3]) > 1e-3  # (not weighted from the start either)
    # The validation loss after each epoch is the loss of that epoch's weighting, recomputed independently
    # (NumPy cross-entropy, per-class weights) on the final model for the last epoch.
    p = np.clip(keras.ops.convert_to_numpy(model(x[:40], training=False)), 1e-7, 1 - 1e-7)
    ce = -np.log(p[np.arange(40), y[:40]])
    assert history["val_loss"][-1] == pytest.approx(np.mean(ce * np.asarray(WEIGHTS)[y[:40]]), rel=1e-4)


def test_a_population_member_with_a_schedule_equals_its_solo_training():
    x, y = tiny_multiclass(n=96)
    xv, yv = x[:40], y[:40]
    # (focal gamma, CE (None) or class-balanced ("cb"), start epoch or not deferred)
    specs = [(None, 1), (2.0, 2), (2.0, None), (1.0, 3), ("cb", 2)]

    def loss_of(gamma):
        return _class_balanced() if gamma == "cb" else _loss(gamma)

    solo = []
    for gamma, start in specs:
        model = _model(loss_of(gamma))
        callbacks = [DeferredReweighting(Schedule(loss_of(gamma), start))] if start is not None else []
        keras.utils.set_random_seed(0)
        model.fit(x, y, validation_data=(xv, yv), epochs=EPOCHS, batch_size=16, verbose=0, callbacks=callbacks)
        solo.append(model.get_weights())
    members = [Member(_model(loss_of(gamma)), schedule=Schedule(loss_of(gamma), start) if start is not None
                      else None) for gamma, start in specs]
    train_population(members, x, y, validation_data=(xv, yv), epochs=EPOCHS, batch_size=16, seed=0)
    for member, expected in zip(members, solo):
        assert member.failure is None
        for got, want in zip(member.model.get_weights(), expected):
            np.testing.assert_allclose(got, want, atol=1e-5)
    assert list(members[1].model.loss._fn_kwargs["class_weights"]) == WEIGHTS  # switched on by the end


def test_the_space_declares_the_start_and_recipes_name_it():
    space = LossSpace.from_dict({
        "task": "multiclass", "baseline": "crossentropy", "families": {"crossentropy": {}},
        "class_weights": {"power": {"min": 0.0, "max": 1.0}, "start": {"values": [0.0, 0.5, 0.75]}},
        "recipes": [{"name": "CE-DRW", "family": "crossentropy", "class_weights": {"power": 1.0, "start": 0.75}}],
    })
    name, loss = space.recipes[0]
    assert name == "CE-DRW" and loss == TrialLoss("crossentropy", {}, 1.0, 0.75) and loss.deferred
    assert "from 75% of the epochs" in loss.describe()
    assert space.trial_loss(space.trial_values(loss)) == loss
    assert LossSpace.from_dict(space.to_dict()).recipes == space.recipes
    with pytest.raises(ValueError, match="class_weights.start = 0.6 lies outside"):
        LossSpace.from_dict(dict(space.to_dict(), recipes=[
            {"family": "crossentropy", "class_weights": {"power": 1.0, "start": 0.6}}]))
    with pytest.raises(ValueError, match="give a power"):
        LossSpace.from_dict({"task": "multiclass", "families": {"crossentropy": {}},
                             "class_weights": {"start": 0.5}})


def test_a_search_trains_the_deferred_recipe_and_its_export_reloads_the_schedule(tmp_path):
    space = {
        "task": "multiclass", "baseline": "crossentropy", "families": {"crossentropy": {}},
        "class_weights": {"power": {"min": 0.0, "max": 1.0}, "start": {"values": [0.0, 0.5]}},
        "recipes": [{"name": "CE-DRW", "family": "crossentropy", "class_weights": {"power": 1.0, "start": 0.5}}],
    }
    x, y = tiny_multiclass(n=120)
    out = io.StringIO()
    result = losstune.search(mlp(3, inputs=8), x[:80], y[:80], validation_data=(x[80:], y[80:]),
                             space=LossSpace.from_dict(space), tuner="random", max_trials=2, epochs=EPOCHS,
                             race=0, directory=str(tmp_path), population=2, stream=out)
    drw = next(t for t in result.trials if t.recipe == "CE-DRW")
    assert drw.status == "COMPLETED" and "from 50% of the epochs" in out.getvalue()
    path = tmp_path / "drw.json"
    config = dict(result.best_config, loss=losstune.lossfile.loss_to_dict(
        drw.loss.build("multiclass", class_counts=result.context.class_counts)), class_weights_start=0.5)
    losstune.export_loss(config, path)
    assert json.loads(path.read_text())["class_weights_start"] == 0.5
    callback = losstune.deferred_reweighting(path, epochs=10)
    assert isinstance(callback, DeferredReweighting) and callback.schedule.start_epoch == 5
    loss = losstune.load_loss(path)
    assert callback.schedule.on.get_config() == loss.get_config()
    model = _model(loss)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])  # the user's training runs with it
    assert losstune.deferred_reweighting(result.export(tmp_path / "best.json"), epochs=10) is None or \
        result.best_trial.loss.deferred
