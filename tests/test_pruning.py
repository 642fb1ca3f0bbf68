"""prune="median": hopeless trials stop early; the baseline and the best never do."""

import io
import json

import keras
import keras_tuner
import pytest

import losstune
from losstune import layout, pruning
from tests.helpers import tiny_multiclass

PLAIN = losstune.LossSpace({"crossentropy": {}}, task="multiclass")


def planted(hp):
    """Variants 0-4 are the same good model; 5-7 see zeros instead of their features: hopeless."""
    variant = hp.Int("variant", 0, 7)
    inputs = keras.Input((8,))
    h = keras.layers.Lambda(lambda t: t * 0.0)(inputs) if variant >= 5 else inputs
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(16, activation="relu")(h))
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def pruned_search(tmp_path_factory):
    x, y = tiny_multiclass(n=150)
    out = io.StringIO()
    result = losstune.search(planted, x, y, validation_data=(x, y), space=PLAIN, tuner="grid", max_trials=8,
                             epochs=8, race=0, prune="median", directory=str(tmp_path_factory.mktemp("prune")),
                             stream=out)
    return result, out.getvalue()


def test_hopeless_trials_stop_after_the_warm_up(pruned_search):
    result, log = pruned_search
    assert [t.status for t in result.trials] == ["COMPLETED"] * 8
    stopped = [t.trial_id for t in result.trials if t.stopped]
    assert stopped == [t.trial_id for t in result.trials[5:]]
    for t in result.trials[5:]:
        assert t.stopped["epoch"] == pruning.warmup_epochs(8) - 1 and t.stopped["value"] < t.stopped["median"]
        with open(layout.curve_file(layout.trial_dir(result.directory, t.trial_id), 0)) as fh:
            curve = json.load(fh)
        assert len(curve) == pruning.warmup_epochs(8)  # 2 of 8 epochs trained
    assert log.count("STOPPED EARLY at epoch 2") == 3
    assert "STOPPED" in result.table() and "stopped early at epoch 2" in result.table()


def test_the_baseline_and_the_best_are_never_stopped(pruned_search):
    result, _ = pruned_search
    assert result.trials[0].is_baseline and not result.trials[0].stopped
    assert not result.best_trial.stopped and result.best_trial.trial_id in {t.trial_id for t in result.trials[:5]}


def test_the_baseline_is_exempt_even_when_it_is_the_worst(tmp_path):
    objective = keras_tuner.Objective("val_score", "max")
    pruner = pruning.MedianPruner(str(tmp_path), "0", 0, objective, epochs=4, warmup_trials=0, exempt=True)
    pruner.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    pruner.model.stop_training = False
    (tmp_path / "trial_0").mkdir()
    pruner.on_epoch_end(0, {"val_score": 0.0})
    assert pruner.stopped is None and not pruner.model.stop_training


def test_prune_is_checked_before_training(tmp_path):
    x, y = tiny_multiclass(n=60)
    with pytest.raises(ValueError, match="`prune` must be None or one of \\['median'\\], got 'mean'"):
        losstune.search(planted, x, y, prune="mean", directory=str(tmp_path))
    with pytest.raises(ValueError, match="Hyperband already stops trials early"):
        losstune.search(planted, x, y, prune="median", tuner="hyperband", directory=str(tmp_path))
