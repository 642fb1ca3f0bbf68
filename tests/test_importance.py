"""What mattered: importance recovers planted effects and says "not enough trials" where that is the truth;
the per-family summary against numpy; the pictures as PNG files (`show --plots`) and in TensorBoard."""

import io
import os

import matplotlib.image
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_multiplexer
from tensorboard.util import tensor_util

import losstune
from losstune import cli, importance, stats
from losstune.lossspace import TrialLoss
from losstune.result import SearchContext, SearchResult, TrialRecord
from tests.helpers import mlp, tiny_multiclass

SPACE = {
    "task": "multiclass", "baseline": "crossentropy",
    "families": {"crossentropy": {"label_smoothing": {"min": 0.0, "max": 0.2}},
                 "focal": {"gamma": {"min": 0.0, "max": 5.0}, "alpha": {"values": [0.25, 0.5]}},
                 "logit_adjusted": {"tau": {"min": 0.0, "max": 2.0}}},
    "class_weights": {"power": {"min": 0.0, "max": 1.0}, "families": ["crossentropy", "focal"]},
}
PNG = b"\x89PNG\r\n\x1a\n"


def _result(records, direction="max"):
    context = SearchContext(space=SPACE, task="multiclass", objective={"name": "val_macro_f1", "direction": direction},
                            class_counts=[50, 10, 2], from_logits=False, max_trials=len(records), epochs=4, seed=0)
    return SearchResult("<memory>", context, records)


def _record(tid, family, params, power, scores, status="COMPLETED", **kw):
    mean, se = stats.mean_se(scores) if scores else (None, None)
    return TrialRecord(str(tid), TrialLoss(family, params, power), mean, status, scores=list(scores), se=se, **kw)


def _planted(n=36, seed=0, effect="gamma"):
    """Trials over three families where only `effect` moves the score (plus noise far smaller than it):
    "gamma" (focal's gamma, within focal), "family" (focal scores 0.2 above the others), or "power"."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        family = ("crossentropy", "focal", "logit_adjusted")[i % 3]
        params = {"crossentropy": lambda: {"label_smoothing": float(rng.uniform(0, 0.2))},
                  "focal": lambda: {"gamma": float(rng.uniform(0, 5)), "alpha": float(rng.choice([0.25, 0.5]))},
                  "logit_adjusted": lambda: {"tau": float(rng.uniform(0, 2))}}[family]()
        power = None if family == "logit_adjusted" else float(rng.uniform(0, 1))
        score = 0.6 + rng.normal(0, 0.003)
        if effect == "gamma" and family == "focal":
            score += 0.05 * params["gamma"]
        elif effect == "family" and family == "focal":
            score += 0.2
        elif effect == "power":
            score += 0.2 * (power or 0.0)
        records.append(_record(i, family, params, power, [score], is_baseline=i == 0))
    return _result(records)


@pytest.fixture(scope="module")
def planted():
    return _planted(effect="gamma")


# --- importance ------------------------------------------------------------------------------------------------
def test_importance_recovers_a_planted_parameter_within_its_family(planted):
    report = planted.importance()
    focal = report["focal"]
    assert focal.trials == 12 and all(p.trials == 12 for p in focal.params)
    assert [p.name for p in focal.params] == ["gamma", "alpha", "class_weights/power"]
    assert focal["gamma"].share > 0.85, report.text()
    assert focal["alpha"].share < 0.1 and focal["class-weight power"].share < 0.1, report.text()
    assert focal.explained > 0.8  # gamma explains the focal scores on held-out trials
    # in the other families nothing matters: the held-out R^2 says the scores look like noise
    for family in ("crossentropy", "logit_adjusted"):
        assert report[family].explained < importance.NOISE_R2, report.text()
        assert "look like noise" in report[family].headline()


@pytest.mark.parametrize("effect, strong, weak", [("family", "family", "class_weights/power"),
                                                   ("power", "class_weights/power", "family")])
def test_importance_recovers_a_planted_top_level_effect(effect, strong, weak):
    report = _planted(effect=effect).importance()
    overall = report["all"]
    assert overall.trials == 36
    assert overall[strong].share > 0.8 and overall[weak].share < 0.2, report.text()
    assert overall.explained > 0.7


@pytest.mark.parametrize("categorical", [(), (0,)])
def test_held_out_drops_equal_scikit_learns_permutation_importance(categorical):
    # losstune makes the shuffled copies itself to predict them in one call per tree; the numbers must be
    # scikit-learn's own permutation importance on the out-of-bag model.
    from sklearn.inspection import permutation_importance

    rng = np.random.default_rng(3)
    x = np.column_stack([rng.integers(0, 3, 23), rng.uniform(0, 1, 23), rng.uniform(0, 1, 23)]).astype(float)
    y = 0.3 * x[:, 0] + x[:, 1] + rng.normal(0, 0.05, 23)
    drops, explained = importance._held_out_drops(x, y, categorical)
    model = importance._out_of_bag(categorical).fit(x, y)
    reference = permutation_importance(model, x, y, scoring="r2", n_repeats=importance.N_SHUFFLES,
                                       random_state=importance.SEED, n_jobs=1)
    np.testing.assert_allclose(drops, reference.importances, rtol=1e-12, atol=1e-12)
    assert explained == pytest.approx(model.score(x, y), abs=1e-12)
    assert drops.shape == (3, importance.N_SHUFFLES) and drops[1].mean() > drops[2].mean()


def test_importance_is_deterministic_and_plain_data(planted):
    first, again = planted.importance().to_dict(), _planted().importance().to_dict()
    assert first == again
    assert first["scopes"]["focal"]["params"]["gamma"]["trials"] == 12
    assert set(first["scopes"]) == {"all", "crossentropy", "focal", "logit_adjusted"}


def test_not_enough_trials_below_five_and_parameters_that_did_not_vary():
    records = [_record(0, "crossentropy", {"label_smoothing": 0.0}, 0.0, [0.6], is_baseline=True),
               _record(1, "focal", {"gamma": 1.0, "alpha": 0.25}, 0.5, [0.7]),
               _record(2, "focal", {"gamma": 3.0, "alpha": 0.25}, 0.5, [0.8])]
    report = _result(records).importance()
    for group in report.groups:
        assert group.trials == {"all": 3, "crossentropy": 1, "focal": 2, "logit_adjusted": 0}[group.scope]
        assert group.explained is None and all(p.share is None for p in group.params)
    assert report["all"]["family"].note == "not enough trials (3 < 5)"
    assert "not enough trials (3 < 5)" in report.text() and "not enough trials (2 < 5)" in report.to_markdown()
    # five focal trials, alpha and the power never moved: no number for them, gamma takes the whole share
    focal = [_record(i, "focal", {"gamma": float(i), "alpha": 0.25}, 0.5, [0.5 + 0.05 * i]) for i in range(5)]
    group = _result(focal).importance()["focal"]
    assert group["gamma"].share == pytest.approx(1.0)
    assert group["alpha"].share is None and group["alpha"].note == "did not vary (every trial at 0.25)"
    assert group["class_weights/power"].note.startswith("did not vary")


def test_failed_and_stopped_trials_do_not_count():
    result = _planted()
    result.trials.append(_record(90, "focal", {"gamma": 5.0, "alpha": 0.25}, 0.5, [], status="FAILED"))
    result.trials.append(_record(91, "focal", {"gamma": 5.0, "alpha": 0.25}, 0.5, [0.1],
                                 stopped={"epoch": 1, "value": 0.1, "median": 0.5}))
    assert result.importance()["focal"].trials == 12
    focal = next(s for s in result.family_summary() if s.family == "focal")
    assert focal.trials == 12 and focal.not_completed == 2


# --- the per-family summary ------------------------------------------------------------------------------------
@pytest.mark.parametrize("direction", ["max", "min"])
def test_family_summary_against_numpy(direction):
    result = _planted(n=30, seed=3)
    result.objective["direction"] = direction
    summaries = {s.family: s for s in result.family_summary()}
    assert list(summaries) == ["crossentropy", "focal", "logit_adjusted"]
    for family, s in summaries.items():
        trials = [t for t in result.trials if t.family == family]
        scores = np.array([t.score for t in trials])
        pick = np.argmax if direction == "max" else np.argmin
        assert s.trials == len(trials) == 10
        assert s.best == pytest.approx((scores.max() if direction == "max" else scores.min()))
        assert s.worst == pytest.approx((scores.min() if direction == "max" else scores.max()))
        assert s.median == pytest.approx(np.median(scores))
        assert s.std == pytest.approx(np.std(scores, ddof=1))
        best = trials[int(pick(scores))]
        assert s.best_trial == best.trial_id and s.best_params == best.params and s.best_power == best.power
        assert s.best_loss == best.describe_loss()
    text = result.table()
    assert "per family (val_macro_f1: trial means)" in text
    assert text.index("per family") > text.index(result.trials[-1].describe_loss())  # after the trials table
    assert f"{summaries['focal'].median:.4f}" in text
    markdown = importance.summary_markdown(result.family_summary(), "val_macro_f1")
    assert f"| focal | 10 | {summaries['focal'].best:.4f} |" in markdown


def test_a_family_without_completed_trials_is_listed_with_dashes():
    result = _result([_record(0, "crossentropy", {"label_smoothing": 0.0}, 0.0, [0.6], is_baseline=True),
                      _record(1, "focal", {"gamma": 2.0, "alpha": 0.25}, 0.5, [], status="FAILED")])
    focal, absent = result.family_summary()[1:]
    assert (focal.trials, focal.not_completed, focal.best, focal.std) == (0, 1, None, None)
    assert absent.family == "logit_adjusted" and absent.trials == 0
    assert "logit_adjusted" in importance.summary_text(result.family_summary())


# --- pictures --------------------------------------------------------------------------------------------------
def _assert_png(path):
    with open(path, "rb") as fh:
        data = fh.read()
    assert len(data) > 1000 and data.startswith(PNG), path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_save_plots_writes_readable_pngs(planted, tmp_path):
    paths = planted.save_plots(str(tmp_path))
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["plot_importance.png", "plot_scores_all.png", "plot_scores_crossentropy.png",
                     "plot_scores_focal.png", "plot_scores_logit_adjusted.png"]
    for path in paths:
        _assert_png(path)


@pytest.fixture(scope="module")
def three_trials(tmp_path_factory):
    x, y = tiny_multiclass(n=60)
    space = {"task": "multiclass", "baseline": "crossentropy",
             "families": {"crossentropy": {}, "focal": {"gamma": {"min": 0.5, "max": 4.0}}},
             "class_weights": {"power": {"min": 0.0, "max": 1.0}}}
    directory = tmp_path_factory.mktemp("importance")
    return losstune.search(mlp(3, inputs=8, hidden=8), x, y, validation_data=(x, y), space=space, tuner="random",
                           max_trials=3, epochs=1, race=0, directory=str(directory), seed=1, stream=io.StringIO())


def test_a_three_trial_search_says_not_enough_trials(three_trials):
    report = three_trials.importance()
    assert report["all"].trials == 3
    assert all(p.share is None and p.note.startswith("not enough trials") for g in report.groups for p in g.params)
    assert "not enough trials (3 < 5)" in report.text()


def test_show_plots_writes_pngs_beside_the_exported_config(three_trials, capsys):
    assert cli.main(["show", os.path.dirname(three_trials.directory), "--plots"]) == 0
    out = capsys.readouterr().out
    assert "per family" in out and "What mattered for val_macro_f1" in out and "not enough trials" in out
    written = [line[len("wrote "):] for line in out.splitlines() if line.startswith("wrote ")]
    assert written and all(os.path.dirname(p) == three_trials.directory for p in written)
    assert os.path.isfile(os.path.join(three_trials.directory, "best_loss.json"))
    assert {os.path.basename(p) for p in written} >= {"plot_importance.png", "plot_scores_all.png"}
    for path in written:
        _assert_png(path)


def test_tensorboard_summary_run_holds_the_tables_and_pictures(three_trials):
    mux = event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(os.path.join(three_trials.directory, "logs"))
    mux.Reload()
    tags = mux.GetAccumulator("summary").Tags()["tensors"]
    assert {"plots/importance", "plots/scores_all", "per_family", "importance_table"} <= set(tags)
    for tag in ("plots/importance", "plots/scores_all"):
        width, height, png = tensor_util.make_ndarray(mux.Tensors("summary", tag)[0].tensor_proto)[:3]
        assert png.startswith(PNG) and int(width) > 100 and int(height) > 100
    def text(tag):
        return tensor_util.make_ndarray(mux.Tensors("summary", tag)[0].tensor_proto).item().decode()

    assert "| family | trials |" in text("per_family") and "| focal |" in text("per_family")
    assert "not enough trials (3 < 5)" in text("importance_table")


def test_importance_recovers_a_planted_deferral_start():
    # The class-weight modifier's `start` (deferred re-weighting) is a top-level parameter like the power.
    space = dict(SPACE, class_weights=dict(SPACE["class_weights"], start={"min": 0.0, "max": 0.9}))
    rng = np.random.default_rng(4)
    records = []
    for i in range(36):
        family = ("crossentropy", "focal")[i % 2]
        params = ({"label_smoothing": float(rng.uniform(0, 0.2))} if family == "crossentropy"
                  else {"gamma": float(rng.uniform(0, 5)), "alpha": 0.25})
        power, start = float(rng.uniform(0, 1)), float(rng.uniform(0, 0.9))
        score = 0.6 + 0.2 * start + rng.normal(0, 0.003)
        mean, se = stats.mean_se([score])
        records.append(TrialRecord(str(i), TrialLoss(family, params, power, start), mean, "COMPLETED",
                                   scores=[score], se=se, is_baseline=i == 0))
    context = SearchContext(space=space, task="multiclass", objective={"name": "val_macro_f1", "direction": "max"},
                            class_counts=[50, 10, 2], from_logits=False, max_trials=36, epochs=4, seed=0)
    report = SearchResult("<memory>", context, records).importance()
    overall = report["all"]
    assert overall["class_weights/start"].share > 0.8 and overall["class-weight power"].share < 0.2, report.text()
    assert "class-weight start" in report.text()
