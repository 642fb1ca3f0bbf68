"""Search quality: trial scores that resist noise, repeats, recipes, the honest pick and its warnings."""

import io

import keras_tuner
import numpy as np
import pytest

import losstune
from losstune import inputs, stats
from losstune.lossspace import LossSpace, TrialLoss
from losstune.result import SearchContext, SearchResult, TrialRecord
from losstune.tuner import _known_first, active_values
from tests.helpers import mlp, tiny_multiclass

SPACE = {
    "task": "multiclass", "baseline": "crossentropy",
    "families": {"crossentropy": {"label_smoothing": {"min": 0.0, "max": 0.2}}, "focal": {"gamma": {"min": 0.0, "max": 5.0}},
                 "logit_adjusted": {"tau": {"min": 0.0, "max": 2.0}}},
    "class_weights": {"power": {"min": 0.0, "max": 1.0}, "families": ["crossentropy", "focal"]},
    "recipes": [{"name": "inverse-frequency", "family": "crossentropy", "class_weights": {"power": 1.0}},
                {"family": "logit_adjusted", "params": {"tau": 1.0}}],
}


# --- score rules and statistics ------------------------------------------------------------------------------
@pytest.mark.parametrize("rule, expected", [
    ("best", 0.9), ("last", 0.5), ("mean_last_3", np.mean([0.9, 0.4, 0.5])), ("last_quarter", np.mean([0.4, 0.5])),
])
def test_curve_score_rules(rule, expected):
    curve = [0.1, 0.3, 0.2, 0.6, 0.1, 0.9, 0.4, 0.5]  # 8 epochs: the last quarter is the last 2
    assert stats.curve_score(curve, rule, "max") == pytest.approx(expected)


def test_curve_score_min_direction_and_short_curves():
    assert stats.curve_score([0.5, 0.2, 0.4], "best", "min") == 0.2
    assert stats.curve_score([0.5], "mean_last_10", "max") == 0.5
    assert stats.curve_score([0.5, 0.7, 0.3], "last_quarter", "max") == 0.3  # ceil(3 / 4) = 1 epoch
    assert np.isnan(stats.curve_score([0.5, float("nan")], "last", "max"))
    with pytest.raises(ValueError, match="`score` must be one of"):
        stats.curve_score([0.5], "median", "max")


def test_mean_se_against_numpy():
    values = [0.71, 0.74, 0.69, 0.8]
    mean, se = stats.mean_se(values)
    assert mean == pytest.approx(np.mean(values)) and se == pytest.approx(np.std(values, ddof=1) / 2)
    assert stats.mean_se([0.5]) == (0.5, None)


def test_search_refuses_unknown_score_rules_and_folds_with_validation_data(tmp_path):
    x, y = tiny_multiclass(n=60)
    with pytest.raises(ValueError, match="`score` must be one of"):
        losstune.search(mlp(3, inputs=8), x, y, score="median", directory=str(tmp_path))
    both = r"`validation_data` and `folds` exclude each other: .* concatenate them: x=np.concatenate\(\[x, x_val\]\)"
    with pytest.raises(ValueError, match=both):
        losstune.search(mlp(3, inputs=8), x, y, validation_data=(x, y), folds=3, directory=str(tmp_path))
    with pytest.raises(ValueError, match="`folds` must be an integer >= 2, got 1"):
        losstune.search(mlp(3, inputs=8), x, y, folds=1, directory=str(tmp_path))


def test_stratified_folds_keep_every_class_in_every_fold():
    y = np.array([0] * 30 + [1] * 6 + [2] * 3)
    folds = inputs.fold_indices(len(y), 3, seed=0, strata=y)
    assert len(folds) == 3
    seen = np.concatenate([val for _, val in folds])
    assert sorted(seen.tolist()) == list(range(len(y)))  # each example validates exactly once
    for train, val in folds:
        assert set(np.bincount(y[val], minlength=3)) <= {10, 2, 1} and not set(train) & set(val)


# --- recipes ---------------------------------------------------------------------------------------------------
def test_recipes_are_parsed_completed_and_round_trip():
    space = LossSpace.from_dict(SPACE)
    assert [name for name, _ in space.recipes] == ["inverse-frequency", "logit_adjusted(tau=1)"]
    assert space.recipe_losses() == [TrialLoss("crossentropy", {"label_smoothing": 0.0}, 1.0),
                                     TrialLoss("logit_adjusted", {"tau": 1.0}, None)]
    assert space.trial_values(space.recipe_losses()[1]) == {"loss": "logit_adjusted", "logit_adjusted/tau": 1.0}
    assert LossSpace.from_dict(space.to_dict()).recipes == space.recipes


def test_class_weights_apply_only_to_the_families_named():
    space = LossSpace.from_dict(SPACE)
    assert space.weightable() == ["crossentropy", "focal"]
    assert space.trial_loss({"loss": "logit_adjusted", "logit_adjusted/tau": 1.0, "class_weights/power": 0.5}).power is None


@pytest.mark.parametrize("recipe, message", [
    ({"family": "ldam"}, "`family` must be one of the space's families"),
    ({"family": "focal", "params": {"gamma": 7.0}}, "focal.gamma = 7.0 lies outside the space's range"),
    ({"family": "focal", "params": {"alpha": 0.25}}, "focal parameter 'alpha' is not in this space's \\[families.focal\\]"),
    ({"family": "logit_adjusted", "class_weights": {"power": 1.0}}, "class weights do not apply here"),
    ({"family": "crossentropy", "class_weights": {"power": 1.5}}, "class_weights.power = 1.5 lies outside"),
    ({"family": "crossentropy", "weights": 1}, "unknown keys \\['weights'\\]"),
])
def test_bad_recipes_name_the_recipe_and_what_is_allowed(recipe, message):
    with pytest.raises(ValueError, match="recipes\\[0\\]: " + message):
        LossSpace.from_dict(dict(SPACE, recipes=[recipe]), source="my.toml")


def test_the_oracle_tries_baseline_and_recipes_first_and_replaces_repeated_proposals(tmp_path):
    space = LossSpace.from_dict(SPACE)
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    oracle = keras_tuner.oracles.RandomSearchOracle(objective=keras_tuner.Objective("score", "max"),
                                                     max_trials=8, hyperparameters=hp, seed=1)
    oracle._set_project_dir(str(tmp_path), "oracle")
    stuck = {"loss": "focal", "focal/gamma": 5.0, "class_weights/power": 1.0}  # a proposal at the range's edge
    oracle.populate_space = lambda trial_id: {"status": "RUNNING", "values": dict(stuck)}
    first = [space.trial_values(loss) for loss in [space.baseline_loss()] + space.recipe_losses()]
    _known_first(oracle, first)
    seen = []
    for k in range(6):
        trial = oracle.create_trial(f"t{k}")
        seen.append(active_values(trial.hyperparameters))
        oracle.update_trial(trial.trial_id, {"score": float(k)})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    assert seen[:3] == first and seen[3] == stuck
    assert all(values != stuck for values in seen[4:])  # the same proposal again: replaced by untried values
    assert len({str(sorted(v.items())) for v in seen}) == 6


# --- the honest pick and its warnings -----------------------------------------------------------------------
def _result(records, validation_counts=None, direction="max", space=SPACE):
    context = SearchContext(space=space, task="multiclass", objective={"name": "val_macro_f1", "direction": direction},
                            class_counts=[50, 10, 2], from_logits=False, max_trials=len(records), epochs=4, seed=0,
                            score_rule="last_quarter", validation_counts=validation_counts)
    return SearchResult("<memory>", context, records)


def _record(tid, scores, loss=None, **kw):
    mean, se = stats.mean_se(scores)
    return TrialRecord(str(tid), loss or TrialLoss("focal", {"gamma": 2.0}, 0.5), mean, "COMPLETED",
                       scores=list(scores), se=se, **kw)


def test_the_pick_is_the_best_mean_among_the_raced_not_a_lucky_single_run():
    lucky = _record(5, [0.95])
    a = _record(3, [0.80, 0.84, 0.82])
    b = _record(4, [0.70, 0.72, 0.71])
    result = _result([_record(0, [0.5], TrialLoss("crossentropy", {"label_smoothing": 0.0}, 0.0), is_baseline=True),
                      a, b, lucky])
    assert result.best_trial is a and result.pick_note == ""


def test_one_standard_error_rule_prefers_the_recipe_it_cannot_tell_apart():
    recipe = _record(1, [0.80, 0.83, 0.80], TrialLoss("crossentropy", {"label_smoothing": 0.0}, 1.0),
                     recipe="inverse-frequency", recipe_index=0)
    searched = _record(7, [0.81, 0.82, 0.82])  # +0.0067 on average, paired SE 0.0088
    result = _result([recipe, searched])
    assert result.best_mean_trial is searched and result.best_trial is recipe
    assert "picked the recipe 'inverse-frequency' (trial 1)" in result.pick_note
    assert "within one standard error" in result.pick_note
    clear = _record(8, [0.86, 0.89, 0.87])  # better on every paired repeat
    result = _result([recipe, clear])
    assert result.best_trial is clear and result.pick_note == ""


def test_the_pick_falls_back_to_the_best_simple_candidate_not_the_simplest():
    # The baseline, the recipe and the searched trial are all within one standard error of each other: the
    # pick is the better of the two simple candidates (the recipe), and the note says the baseline cannot be
    # told apart from it.
    baseline = _record(0, [0.80, 0.81, 0.82], TrialLoss("crossentropy", {"label_smoothing": 0.0}, 0.0),
                       is_baseline=True)
    recipe = _record(1, [0.81, 0.83, 0.81], TrialLoss("crossentropy", {"label_smoothing": 0.0}, 1.0),
                     recipe="inverse-frequency", recipe_index=0)
    searched = _record(7, [0.83, 0.82, 0.81])  # 0.38 standard errors above the recipe, 0.87 above the baseline
    result = _result([baseline, recipe, searched])
    assert result.best_mean_trial is searched and result.best_trial is recipe
    assert "picked the recipe 'inverse-frequency' (trial 1)" in result.pick_note
    assert "cannot be told apart from the baseline" in result.pick_note
    # the recipe leads the baseline on every repeat by 0.01 (SE 0): told apart, nothing said
    clear = _record(1, [0.81, 0.83, 0.81], TrialLoss("crossentropy", {"label_smoothing": 0.0}, 1.0),
                    recipe="inverse-frequency", recipe_index=0)
    low = _record(0, [0.70, 0.75, 0.72], TrialLoss("crossentropy", {"label_smoothing": 0.0}, 0.0), is_baseline=True)
    result = _result([low, clear])
    assert result.best_trial is clear and result.pick_note == ""


def test_among_recipes_it_cannot_tell_apart_the_pick_follows_the_spaces_order():
    first = _record(1, [0.80, 0.82, 0.81], TrialLoss("logit_adjusted", {"tau": 1.0}, 0.0),
                    recipe="logit adjustment", recipe_index=0)
    second = _record(2, [0.82, 0.81, 0.82], TrialLoss("crossentropy", {"label_smoothing": 0.0}, 1.0),
                     recipe="inverse-frequency", recipe_index=1)  # +0.0067, standard error 0.0088
    result = _result([first, second])
    assert result.best_mean_trial is second and result.best_trial is first
    assert result.pick_note.startswith("picked the recipe 'logit adjustment' (trial 1).")
    assert "'logit adjustment' is listed before 'inverse-frequency' (trial 2), which leads it by +0.0067" in \
        result.pick_note
    ahead = _record(2, [0.85, 0.87, 0.86], TrialLoss("crossentropy", {"label_smoothing": 0.0}, 1.0),
                    recipe="inverse-frequency", recipe_index=1)  # ahead on every repeat
    result = _result([first, ahead])
    assert result.best_trial is ahead and result.pick_note == ""
    # a searched trial that cannot be told from the leading recipe falls back to the earlier one
    searched = _record(7, [0.84, 0.80, 0.82])  # +0.0033 over the leading recipe, standard error 0.0088
    result = _result([first, second, searched])
    assert result.best_trial is first and "cannot be told apart from the simpler loss" in result.pick_note


def test_the_best_of_many_searched_trials_must_lead_by_more_than_chance():
    # The best searched trial leads the recipe by gaps 0.00, 0.02, 0.01 over three paired repeats: +0.01 with a
    # standard error of 0.0058, 1.73 standard errors. Enough when it is the only searched trial; not when it
    # is the best of 30, which lead by about 2.04 standard errors by chance alone.
    recipe = _record(1, [0.80, 0.80, 0.80], TrialLoss("crossentropy", {"label_smoothing": 0.0}, 1.0),
                     recipe="logit adjustment", recipe_index=0)
    best = _record(7, [0.80, 0.82, 0.81])
    assert _result([recipe, best]).best_trial is best
    others = [_record(100 + i, [0.70]) for i in range(29)]  # single runs: they count as searched, not in the race
    crowd = _result([recipe, best] + others)
    assert crowd.best_mean_trial is best and crowd.best_trial is recipe
    assert "within 2.04 x the standard error (0.0058: seeds 0.0058)" in crowd.pick_note
    assert "the lead the best of 30 searched trials shows by chance" in crowd.pick_note


def test_the_selection_margin_is_the_expected_maximum_of_normals():
    rng = np.random.default_rng(0)
    for m in (5, 8, 20, 30, 100):
        simulated = rng.standard_normal((20000, m)).max(axis=1).mean()  # SE of this mean ~0.004
        assert stats.selection_margin(m) == pytest.approx(simulated, abs=0.03), m
    assert [stats.selection_margin(m) for m in (1, 2, 3)] == [1.0, 1.0, 1.0]  # never below the one-SE rule
    with pytest.raises(ValueError, match="`m` must be >= 1, got 0"):
        stats.selection_margin(0)


def test_warnings_say_what_to_do():
    records = [
        _record(0, [1.0, 1.0, 1.0]), _record(1, [1.0, 1.0, 1.0], TrialLoss("focal", {"gamma": 5.0}, 0.5)),
    ]
    found = _result(records, validation_counts=[30.0, 2.0, 1.0]).warnings()
    text = "\n".join(found)
    assert "the objective saturated: 2 trials scored val_macro_f1 = 1" in text
    assert "validation classes [1, 2] have fewer than 5 examples (counts [2, 1])" in text and "folds=k" in text
    noisy = [_record(0, [0.70, 0.90, 0.80]), _record(1, [0.79, 0.80, 0.80], TrialLoss("focal", {"gamma": 5.0}, 0.5))]
    text = "\n".join(_result(noisy).warnings())
    assert "less than the spread of their repeats" in text
    edge = _result([_record(1, [0.8, 0.82, 0.81], TrialLoss("focal", {"gamma": 5.0}, 0.5))]).warnings()
    assert any("focal/gamma = 5 lies at the top of its search range [0, 5]" in w for w in edge)
    assert _result([_record(1, [0.8, 0.82, 0.81])], validation_counts=[30.0, 30.0, 30.0]).warnings() == []


# --- folds, end to end ---------------------------------------------------------------------------------------
def test_a_search_with_folds_scores_each_trial_over_every_fold(tmp_path):
    x, y = tiny_multiclass(n=90)
    out = io.StringIO()
    result = losstune.search(mlp(3, inputs=8), x, y, folds=3, space=LossSpace.from_dict(SPACE), tuner="random",
                             max_trials=3, epochs=2, race=0, directory=str(tmp_path), stream=out)
    assert [len(t.scores) for t in result.trials] == [3, 3, 3]
    assert [t.recipe for t in result.trials] == [None, "inverse-frequency", "logit_adjusted(tau=1)"]
    for t in result.trials:
        assert t.score == pytest.approx(np.mean(t.scores))
    assert "± " in out.getvalue() and "(3 repeats)" in out.getvalue()
    assert "fewer than 5 examples" not in out.getvalue()  # folds score every example: no advice to use them
    config = result.best_config
    assert config["score_repeats"] == result.best_trial.scores and config["score_rule"] == "last_quarter"
    assert losstune.load_loss(result.export(tmp_path / "best.json")) is not None


def test_a_search_says_before_training_when_validation_classes_are_too_small(tmp_path):
    x, y = tiny_multiclass(n=60)
    keep = np.concatenate([np.flatnonzero(y == c)[:n] for c, n in enumerate([6, 4, 1])])  # counts [6, 4, 1]
    out = io.StringIO()
    result = losstune.search(mlp(3, inputs=8), x, y, validation_data=(x[keep], y[keep]), tuner="random",
                             space=LossSpace.from_dict(SPACE), max_trials=1, epochs=1, race=0,
                             directory=str(tmp_path), stream=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == ("validation: classes [1, 2] have fewer than 5 examples (counts [4, 1]), so trial scores "
                        "turn on a few predictions; folds=k over the training and validation data together scores "
                        "every trial on all of them.")
    assert sum("fewer than 5 examples" in line for line in lines) == 1
    assert any("validation classes [1, 2] have fewer than 5 examples" in w for w in result.warnings())  # at the end


def test_no_edge_warning_where_the_range_cannot_be_widened_and_like_with_like_spread():
    recipe = _record(1, [0.80, 0.81, 0.82], TrialLoss("crossentropy", {"label_smoothing": 0.0}, 1.0),
                     recipe="inverse-frequency", recipe_index=0)
    single = _record(4, [0.8199])  # one run just above: no "spread" comparison against a raced mean
    text = "\n".join(_result([recipe, single]).warnings())
    assert "label_smoothing" not in text  # 0 is the smallest valid value: no range to widen
    assert "spread of their repeats" not in text


def test_the_summary_says_why_single_runs_above_the_pick_lost():
    raced = _record(3, [0.80, 0.84, 0.82])
    lucky = [_record(5, [0.95]), _record(6, [0.90])]
    summary = _result([raced] + lucky).summary()
    assert "2 trial(s) with fewer repeats scored above the pick (trial 5, 6)" in summary
