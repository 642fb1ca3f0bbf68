"""The search journey end to end: tuners, the long-tailed digits search, export, resume, pairs."""

import gc
import io
import json
import os

import keras
import keras_tuner
import numpy as np
import pytest

import losstune
from losstune import datasets
from losstune.tuner import _frozen_heap
from tests.helpers import mlp, siamese, tiny_multiclass


@pytest.fixture(scope="module")
def long_tailed_search(tmp_path_factory):
    """One real 12-trial search over imbalanced_multiclass on long-tailed digits (imbalance 50:1), 6 trials at a
    time as a population (as `losstune demo` runs it; tests/test_population_search.py checks that a population
    gives the serial search's trials and scores)."""
    split = datasets.long_tailed_digits(imbalance=50, seed=0)
    directory = tmp_path_factory.mktemp("lt")
    out = io.StringIO()
    # Adam at 1e-2 for 8 epochs of batch 16 trains this MLP as far as 30 epochs at Keras's default rate do,
    # in half the time (a trial's cost is mostly per-epoch work, not steps).
    result = losstune.search(
        mlp(10), split.x_train, split.y_train, validation_data=(split.x_val, split.y_val),
        space="imbalanced_multiclass", tuner="bayesian", max_trials=12, epochs=8, batch_size=16, seed=0,
        optimizer=keras.optimizers.Adam(1e-2), directory=str(directory), stream=out, population=6,
    )
    return result, out.getvalue(), split


def test_long_tailed_search_beats_crossentropy(long_tailed_search):
    result, log, _ = long_tailed_search
    assert len(result.trials) == 12
    assert result.trials[0].is_baseline and result.trials[0].family == "crossentropy"
    assert result.trials[0].params == {"label_smoothing": 0.0} and not result.trials[0].power
    assert result.objective == {"name": "val_macro_f1", "direction": "max"}
    assert result.best_score > result.baseline_score
    assert len({t.family for t in result.trials}) >= 3  # the search explored the families
    # one status line per finished trial, then the race's lines
    assert sum(line.startswith("[") and not line.startswith("[race]") for line in log.splitlines()) == 12
    assert "[12/12] trial 11 " in log and "best so far" in log


def test_recipes_come_right_after_the_baseline_and_no_trial_repeats_another(long_tailed_search):
    result, _, _ = long_tailed_search
    space = losstune.spaces.load("imbalanced_multiclass")
    assert [t.recipe for t in result.trials[1:3]] == [name for name, _ in space.recipes]
    assert [t.loss for t in result.trials[1:3]] == space.recipe_losses()
    assert sum(t.recipe is not None for t in result.trials) == 2
    losses = [t.loss.describe() for t in result.trials]
    assert len(set(losses)) == len(losses)  # no budget spent twice


def test_the_race_gives_the_top_candidates_three_paired_repeats(long_tailed_search):
    result, log, _ = long_tailed_search
    raced = [t for t in result.trials if len(t.scores) == 3]
    assert 3 <= len(raced) <= 4 and result.best_trial in raced
    assert any(t.is_baseline or t.recipe for t in raced)  # the best simple candidate races too
    for t in raced:
        assert t.score == pytest.approx(np.mean(t.scores))
        assert t.se_seed == pytest.approx(np.std(t.scores, ddof=1) / 3 ** 0.5)
        assert t.se_sample is not None and t.se == pytest.approx(np.hypot(t.se_seed, t.se_sample))  # both sources
        assert log.count(f"[race] trial {t.trial_id} ") == 2
    # the pick is the best mean among the raced, unless it cannot be told from the best simple candidate or
    # an earlier recipe cannot be told from it
    best_mean = max(raced, key=lambda t: t.score)
    assert result.best_mean_trial is best_mean
    if result.best_trial is not best_mean:
        assert result.best_trial.is_simple and result.pick_note.startswith("picked ")
        assert ("cannot be told apart from the simpler loss" in result.pick_note
                or "the space's order is its preference" in result.pick_note)
    assert "±" in result.table() and "(3)" in result.table()


def test_exported_config_rebuilds_the_same_loss(long_tailed_search, tmp_path):
    result, _, split = long_tailed_search
    path = result.export(tmp_path / "best.json")
    data = json.loads(open(path).read())
    assert data["schema_version"] == 1
    assert data["family"] == result.best_trial.family
    assert data["score"] == pytest.approx(result.best_score)
    assert data["baseline_score"] == pytest.approx(result.baseline_score)
    assert data["objective"]["name"] == "val_macro_f1"
    assert {"keras", "keras_tuner", "losstune"} <= set(data["versions"])
    if result.best_trial.power:
        assert len(data["class_weights"]) == 10
    loaded = losstune.load_loss(path)
    assert type(loaded) is type(result.best_loss)
    rng = np.random.default_rng(1)
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(rng.normal(size=(64, 10)).astype("float32")))
    labels = rng.integers(0, 10, size=64)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(labels, probs)),
        keras.ops.convert_to_numpy(result.best_loss(labels, probs)), rtol=1e-6)
    # the search itself wrote the same file into its directory
    assert os.path.isfile(os.path.join(result.directory, "best_loss.json"))


def test_result_reads_back_from_directory(long_tailed_search):
    result, _, _ = long_tailed_search
    again = losstune.SearchResult.from_directory(result.directory)
    assert [t.trial_id for t in again.trials] == [t.trial_id for t in result.trials]
    assert again.best_score == result.best_score
    table = again.table()
    assert "[baseline]" in table and "[best]" in table and "val_macro_f1" in table


@pytest.mark.parametrize("tuner_cls", [keras_tuner.RandomSearch, keras_tuner.BayesianOptimization,
                                       keras_tuner.GridSearch, keras_tuner.Hyperband])
def test_hypermodel_runs_inside_plain_kerastuner_tuners(tuner_cls, tmp_path):
    x, y = tiny_multiclass()
    space = losstune.LossSpace({"crossentropy": {"label_smoothing": {"values": [0.0, 0.1]}},
                                "focal": {"gamma": {"values": [1.0, 2.0]}}}, task="multiclass")
    hm = losstune.LossHyperModel(mlp(3, inputs=8), space, class_counts=np.bincount(y))
    kwargs = {"max_epochs": 2, "factor": 2} if tuner_cls is keras_tuner.Hyperband else {"max_trials": 3}
    tuner = tuner_cls(hm, objective=keras_tuner.Objective("val_macro_f1", "max"), directory=str(tmp_path),
                      project_name="p", seed=1, **kwargs)
    with _frozen_heap():  # KerasTuner's full garbage collection before each build: 2 s each, not under test
        tuner.search(x, y, validation_data=(x, y), epochs=2, verbose=0)
    trials = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    assert len(trials) >= 2
    families = {t.hyperparameters.values["loss"] for t in trials}
    assert families <= {"crossentropy", "focal"}
    model = tuner.get_best_models(1)[0]
    assert model.loss.__class__.__module__.startswith("losstune")


def test_hypermodel_compiles_the_trial_loss():
    x, y = tiny_multiclass()
    hm = losstune.LossHyperModel(mlp(3, inputs=8), "imbalanced_multiclass", class_counts=np.bincount(y))
    hp = keras_tuner.HyperParameters()
    hp.values["loss"] = "focal"
    hp.values["focal/gamma"] = 3.5
    model = hm.build(hp)
    assert model.loss.get_config()["gamma"] == 3.5
    assert "focal/gamma" in hp.values and "ldam/max_margin" not in hp.active_scopes


def test_same_seed_same_initial_weights():
    hm = losstune.LossHyperModel(mlp(3, inputs=8), "imbalanced_multiclass", class_counts=[5, 5, 5], seed=7)
    hp1, hp2 = keras_tuner.HyperParameters(), keras_tuner.HyperParameters()
    hp2.values["loss"] = "poly1"
    w1, w2 = hm.build(hp1).get_weights(), hm.build(hp2).get_weights()
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)


def test_resume_runs_only_the_remaining_trials(tmp_path):
    x, y = tiny_multiclass()
    common = dict(validation_data=(x, y), space="imbalanced_multiclass", tuner="random", epochs=1,
                  directory=str(tmp_path), seed=3, race=0)
    first = io.StringIO()
    losstune.search(mlp(3, inputs=8), x, y, max_trials=2, stream=first, **common)
    stamps = {p: os.path.getmtime(p) for p in _trial_files(tmp_path)}
    assert len(stamps) == 2
    second = io.StringIO()
    result = losstune.search(mlp(3, inputs=8), x, y, max_trials=4, stream=second, **common)
    assert len(result.trials) == 4
    lines = second.getvalue().splitlines()
    assert [line.split()[:3] for line in lines] == [["[3/4]", "trial", "2"], ["[4/4]", "trial", "3"]]  # only 2 ran
    for path, stamp in stamps.items():
        assert os.path.getmtime(path) == stamp
    assert result.trials[0].is_baseline and sum(t.is_baseline for t in result.trials) == 1


def _trial_files(directory):
    root = os.path.join(directory, "search")
    return sorted(os.path.join(root, d, "trial.json") for d in os.listdir(root) if d.startswith("trial_"))


def test_metric_learning_search_tunes_the_contrastive_margin(tmp_path):
    split = datasets.digit_pairs(n_train=600, n_val=300, n_test=10, seed=0)
    result = losstune.search(
        siamese, split.x_train, split.y_train, validation_data=(split.x_val, split.y_val),
        space="metric_learning", tuner="random", max_trials=4, epochs=3, race=0, directory=str(tmp_path),
        stream=io.StringIO(),
    )
    assert result.objective["name"] == "val_pair_auc"
    margins = {t.params["margin"] for t in result.trials}
    assert len(margins) == 4  # the baseline's default margin and three sampled ones
    assert all(0.1 <= m <= 2.0 for m in margins)
    assert result.best_score > 0.6  # a verification ROC-AUC well above chance
    assert result.best_loss.get_config()["margin"] == result.best_trial.params["margin"]


def test_confirm_seeds_reports_a_confidence_interval(tmp_path):
    x, y = tiny_multiclass()
    result = losstune.search(mlp(3, inputs=8), x, y, validation_data=(x, y), space="imbalanced_multiclass",
                             tuner="random", max_trials=2, epochs=1, directory=str(tmp_path), race=0,
                             confirm_seeds=2, stream=io.StringIO())
    c = result.confirmation
    assert c["seeds"] == 2 and len(c["best_scores"]) == 2 and len(c["baseline_scores"]) == 2
    low, high = c["diff_ci"]
    assert low <= c["diff_mean"] <= high
    assert "95% CI" in result.summary()


def _diverging_mlp(diverging_seeds):
    """An MLP whose output turns NaN when built under one of `diverging_seeds` (its training then diverges).

    The builder cannot see the seed; it sees NumPy's global generator, which `keras.utils.set_random_seed`
    resets: the first draw after each of those seeds marks them."""
    marks = []
    for s in diverging_seeds:
        keras.utils.set_random_seed(s)
        marks.append(np.random.random())
    base = mlp(3, inputs=8)

    def build(hp=None):
        model = base(hp)
        if np.random.random() in marks:
            return keras.Sequential([model, keras.layers.Lambda(lambda t: t * float("nan"))])
        return model

    return build


@pytest.mark.parametrize("population", [2])
def test_confirm_seeds_scores_by_the_search_rule_and_survives_a_diverging_seed(tmp_path, monkeypatch, population):
    from losstune import population as population_package
    from losstune.racing import CONFIRM_EXECUTION

    trained = []  # (execution, candidate name, History dict) of every retraining

    def recorded_alone(hypermodel, member, fit, execution, *args, **kwargs):
        out = original_alone(hypermodel, member, fit, execution, *args, **kwargs)
        trained.append((execution, member.name, dict(member.history)))
        return out

    def recorded_together(hypermodel, by_execution, *args, **kwargs):
        out = original_together(hypermodel, by_execution, *args, **kwargs)
        trained.extend((e, m.name, dict(m.history)) for e, members in by_execution.items() for m in members)
        return out

    original_alone, original_together = population_package.fit_alone, population_package.train_members
    monkeypatch.setattr(population_package, "fit_alone", recorded_alone)
    monkeypatch.setattr(population_package, "train_members", recorded_together)
    x, y = tiny_multiclass()
    result = losstune.search(_diverging_mlp([CONFIRM_EXECUTION + 1]), x, y, validation_data=(x, y),
                             space="imbalanced_multiclass", tuner="random", max_trials=2, epochs=4,
                             directory=str(tmp_path), race=0, confirm_seeds=3, score="mean_last_3",
                             population=population, stream=io.StringIO())
    c = result.confirmation
    assert c["score_rule"] == "mean_last_3" and c["diverged"] == {"best": [1], "baseline": [1]}
    assert c["best_scores"][1] is None and c["baseline_scores"][1] is None and c["paired"] == 2
    confirmations = {(e - CONFIRM_EXECUTION, name): h for e, name, h in trained if e >= CONFIRM_EXECUTION}
    assert sorted(confirmations) == [(k, label) for k in range(3) for label in ("baseline", "best")]
    flat = True
    for k in (0, 2):
        for label in ("best", "baseline"):
            curve = confirmations[(k, label)]["val_macro_f1"]
            assert c[f"{label}_scores"][k] == pytest.approx(np.mean(curve[-3:]))  # the search's rule
            flat = flat and np.mean(curve[-3:]) == max(curve)
    assert not flat, "every curve was flat: the test cannot tell the score rule from the best epoch"
    assert "diverged on 1 of 3 confirmation seeds" in result.summary() and "95% CI" in result.summary()


def test_val_loss_objective_is_refused_before_training(tmp_path):
    x, y = tiny_multiclass()
    with pytest.raises(ValueError, match="depends on the loss"):
        losstune.search(mlp(3, inputs=8), x, y, validation_data=(x, y), objective="val_loss",
                        directory=str(tmp_path))
    assert not os.path.exists(os.path.join(tmp_path, "search"))


def test_tf_data_dataset_input(tmp_path):
    import tensorflow as tf

    x, y = tiny_multiclass()
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    result = losstune.search(mlp(3, inputs=8), train, validation_data=train, space="imbalanced_multiclass",
                             tuner="random", max_trials=2, epochs=1, race=0, directory=str(tmp_path),
                             stream=io.StringIO())
    assert len(result.completed) == 2
    assert result.context.class_counts == np.bincount(y, minlength=3).tolist()


def test_executions_use_different_seeds_and_average(tmp_path):
    x, y = tiny_multiclass()
    result = losstune.search(mlp(3, inputs=8), x, y, validation_data=(x, y), space="imbalanced_multiclass",
                             tuner="random", max_trials=1, epochs=1, executions_per_trial=2, race=0,
                             directory=str(tmp_path), stream=io.StringIO())
    logs = os.path.join(result.directory, "logs", result.trials[0].trial_id)
    assert sorted(d for d in os.listdir(logs) if d.startswith("execution")) == ["execution0", "execution1"]
    hm = losstune.LossHyperModel(mlp(3, inputs=8), "imbalanced_multiclass", class_counts=[5, 5, 5], seed=0)
    first = hm.build(keras_tuner.HyperParameters()).get_weights()[0]
    hm.execution = 1
    second = hm.build(keras_tuner.HyperParameters()).get_weights()[0]
    assert not np.array_equal(first, second)


def test_paired_difference_confidence_interval():
    from losstune.stats import paired_difference

    best, base = [0.80, 0.82, 0.85, 0.81, 0.84], [0.70, 0.75, 0.74, 0.72, 0.73]
    stats = paired_difference(best, base)
    diff = np.subtract(best, base)
    half = 2.776 * diff.std(ddof=1) / np.sqrt(5)  # Student t(0.975, 4 df)
    assert stats["diff_mean"] == pytest.approx(diff.mean())
    assert stats["diff_ci"] == pytest.approx([diff.mean() - half, diff.mean() + half])
    assert stats["best_std"] == pytest.approx(np.std(best, ddof=1))


def test_search_freezes_the_heap_only_while_it_runs():
    assert gc.get_freeze_count() == 0
    with _frozen_heap():
        assert gc.get_freeze_count() > 0  # KerasTuner's per-trial collections skip the pre-search heap
    assert gc.get_freeze_count() == 0
    gc.freeze()  # a caller that manages freezing itself keeps its frozen set
    try:
        count = gc.get_freeze_count()
        with _frozen_heap():
            pass
        assert gc.get_freeze_count() == count
    finally:
        gc.unfreeze()
