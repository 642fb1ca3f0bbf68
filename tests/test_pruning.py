"""prune="median" and prune="halving": hopeless trials stop early; the baseline and the best never do."""

import io
import json
import os

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
    with pytest.raises(ValueError, match="`prune` must be None or one of \\['median', 'halving'\\], got 'mean'"):
        losstune.search(planted, x, y, prune="mean", directory=str(tmp_path))
    with pytest.raises(ValueError, match="Hyperband already stops trials early"):
        losstune.search(planted, x, y, prune="median", tuner="hyperband", directory=str(tmp_path))


# ------------------------------------------------------------------------------------------------------
# prune="halving": successive halving (ASHA's rungs)
# ------------------------------------------------------------------------------------------------------
def test_rungs_are_the_budget_divided_by_powers_of_three():
    # epochs // 3**k, none before a quarter of the epochs
    assert pruning.rungs(20) == [6] and pruning.rungs(9) == [3] and pruning.rungs(27) == [9]
    assert pruning.rungs(90) == [30] and pruning.rungs(3) == [1] and pruning.rungs(2) == []


def _halving_at_rung(tmp_path, others, own, direction="max"):
    """A HalvingPruner of trial "me" at the rung after 1 epoch (epochs=3), other executions' curves given."""
    for i, curve in enumerate(others):
        path = layout.curve_file(layout.trial_dir(str(tmp_path), f"t{i}"), 0)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            json.dump(curve, fh)
    os.makedirs(layout.trial_dir(str(tmp_path), "me"), exist_ok=True)
    pruner = pruning.HalvingPruner(str(tmp_path), "me", 0, keras_tuner.Objective("val_score", direction), epochs=3)
    pruner.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    pruner.model.stop_training = False
    pruner.on_test_end({"score": own})
    pruner.on_epoch_end(0, {"val_score": own})
    return pruner


def test_halving_keeps_the_best_third_of_those_at_the_rung(tmp_path):
    # 6 executions reached the rung (5 others + this one): the best 6 // 3 = 2 go on. 0.7 ranks 3rd: stopped.
    others = [[0.9], [0.8], [0.5], [0.4], [0.3, 0.1]]
    stopped = _halving_at_rung(tmp_path / "a", others, 0.7)
    assert stopped.model.stop_training and stopped.stopped["rank"] == 3 and stopped.stopped["rung"] == "best 2 of 6"
    assert not _halving_at_rung(tmp_path / "b", others, 0.85).model.stop_training  # 2nd: goes on
    # fewer than 3 at the rung: nobody can be ranked out; a curve that has not reached the rung does not count
    assert not _halving_at_rung(tmp_path / "c", [[0.9], []], 0.1).model.stop_training
    # "min" objectives: smaller is better
    assert not _halving_at_rung(tmp_path / "d", [[0.5], [0.6]], 0.1, direction="min").model.stop_training
    assert _halving_at_rung(tmp_path / "e", [[0.5], [0.6]], 0.9, direction="min").model.stop_training


def test_halving_in_populations_ranks_members_against_each_other(tmp_path):
    # Population rounds of 4: every member records its rung value when validation ends, before any member's
    # epoch ends, so each is ranked against its whole round. The hopeless variants (5-7) stop at the first rung.
    x, y = tiny_multiclass(n=150)
    out = io.StringIO()
    result = losstune.search(planted, x, y, validation_data=(x, y), space=PLAIN, tuner="grid", max_trials=8,
                             epochs=3, race=0, prune="halving", population=4, directory=str(tmp_path), stream=out)
    assert [t.status for t in result.trials] == ["COMPLETED"] * 8
    assert {t.trial_id for t in result.trials[5:]} <= {t.trial_id for t in result.trials if t.stopped}
    for t in result.trials:
        if t.stopped:
            assert t.stopped["epoch"] == 0 and t.stopped["rank"] > int(t.stopped["rung"].split()[1])
    assert not result.trials[0].stopped and not result.best_trial.stopped
    # the first round's members saw each other: 4 values at the rung, so the best one (or the exempt baseline)
    first_round = [t for t in result.trials[:4] if t.stopped]
    assert all(t.stopped["rung"] == "best 1 of 4" for t in first_round)
