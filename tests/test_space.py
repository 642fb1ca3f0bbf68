"""LossSpace: TOML loading, KerasTuner hyperparameters, baseline, bundled spaces; the class-weight modifier."""

import keras_tuner
import numpy as np
import pytest

import losstune
from losstune.lossspace import LOSS_HP, POWER_HP, LossSpace

TOML = """
task = "multiclass"
baseline = "crossentropy"

[families.crossentropy]
label_smoothing = { min = 0.0, max = 0.2 }

[families.focal]
gamma = { min = 0.5, max = 5.0, sampling = "log" }

[families.poly1]
epsilon = 1.5

[class_weights]
power = { values = [0.0, 0.5, 1.0] }
"""


def test_bundled_spaces_load_and_cover_the_tasks():
    names = losstune.spaces.available()
    assert {"imbalanced_binary", "imbalanced_multiclass", "multilabel", "metric_learning",
            "robust_regression"} <= set(names)
    tasks = {losstune.LossSpace.from_toml(n).task.name for n in names}
    assert {"binary", "multiclass", "multilabel", "pairs", "regression"} <= tasks
    for name, task, families, description in losstune.spaces.describe():
        assert families and description


def test_declare_makes_one_choice_and_conditional_parameters():
    space = LossSpace.from_toml_text(TOML)
    hp = keras_tuner.HyperParameters()
    choice = space.declare(hp)
    assert choice.family == "crossentropy" and choice.params == {"label_smoothing": 0.0} and choice.power == 0.0
    names = {h.name for h in hp.space}
    assert {LOSS_HP, "crossentropy/label_smoothing", "focal/gamma", "poly1/epsilon", POWER_HP} <= names
    assert hp.get(LOSS_HP) == "crossentropy"
    assert not hp.is_active("focal/gamma")
    gamma = next(h for h in hp.space if h.name == "focal/gamma")
    assert (gamma.min_value, gamma.max_value, gamma.sampling) == (0.5, 5.0, "log")


def test_declare_returns_the_chosen_family_and_its_values():
    space = LossSpace.from_toml_text(TOML)
    hp = keras_tuner.HyperParameters()
    hp.values.update({LOSS_HP: "focal", "focal/gamma": 3.0, POWER_HP: 0.5})
    choice = space.declare(hp)
    assert choice.family == "focal" and choice.params == {"gamma": 3.0} and choice.power == 0.5
    loss = choice.build("multiclass", class_counts=[10, 1, 1])
    assert loss.get_config()["gamma"] == 3.0
    weights = loss.get_config()["class_weights"]
    np.testing.assert_allclose(weights, losstune.class_weights_from_counts([10, 1, 1], 0.5))


def test_baseline_is_the_default_of_every_hyperparameter():
    space = LossSpace.from_toml_text(TOML)
    base = space.baseline_loss()
    assert (base.family, base.params, base.power) == ("crossentropy", {"label_smoothing": 0.0}, 0.0)
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    defaults = {h.name: h.default for h in hp.space if hp.is_active(h)}
    assert space.trial_loss(defaults) == base


def test_baseline_default_is_clipped_into_the_range():
    space = LossSpace({"focal": {"gamma": {"min": 3.0, "max": 4.0}}}, task="binary")
    assert space.baseline_loss().params == {"gamma": 3.0}


def test_to_dict_round_trips():
    space = LossSpace.from_toml_text(TOML)
    again = LossSpace.from_dict(space.to_dict())
    assert again.to_dict() == space.to_dict()


def test_loss_is_tuned():
    assert LossSpace.from_toml_text(TOML).loss_is_tuned
    assert not LossSpace({"crossentropy": {}}, task="multiclass").loss_is_tuned


@pytest.mark.parametrize("text, message", [
    ('task = "multiclass"\n[families.focal]\ngamma = { min = 0.0 max = 5.0 }\n', "line 3"),
    ('task = "multiclass"\n[families.nope]\n', "unknown loss family 'nope'"),
    ('task = "multiclass"\n[families.focal]\nbeta = 1.0\n', "unknown hyperparameter 'beta'"),
    ('task = "multiclass"\nfoo = 1\n[families.focal]\n', "unknown keys \\['foo'\\]"),
    ('task = "multiclass"\n[families.focal]\ngamma = { min = 3.0, max = 1.0 }\n', "`min` \\(3.0\\) must be <= `max`"),
    ('task = "multiclass"\n[families.focal]\ngamma = { min = -1.0, max = 1.0 }\n', "gamma.*got -1.0"),
    ('task = "pairs"\n[families.focal]\n', "does not fit task 'pairs'"),
    ('task = "multiclass"\n[families.focal]\ngamma = { min = 0.0, max = 1.0, sampling = "cubic" }\n', "sampling"),
    ('task = "multiclass"\nbaseline = "ldam"\n[families.focal]\n', "`baseline` must be one of"),
    ('[families.focal]\n', "missing `task`"),
    ('task = "regression"\n[families.mse]\n[class_weights]\npower = 0.5\n', "classification"),
])
def test_bad_spaces_name_file_key_and_what_is_allowed(text, message):
    with pytest.raises(ValueError, match=message) as err:
        LossSpace.from_toml_text(text, source="my_space.toml")
    assert "my_space.toml" in str(err.value)


def test_unknown_bundled_space_lists_the_bundled_ones():
    with pytest.raises(ValueError, match="bundled spaces: \\["):
        LossSpace.from_toml("no_such_space")


# --- the class-weight modifier ------------------------------------------------------------------------
def test_class_weights_power_zero_is_unweighted_and_one_is_inverse_frequency():
    counts = np.array([100.0, 20.0, 5.0])
    np.testing.assert_allclose(losstune.class_weights_from_counts(counts, 0.0), [1, 1, 1])
    w = np.array(losstune.class_weights_from_counts(counts, 1.0))
    np.testing.assert_allclose(w * counts, (w * counts)[0])  # w_c ~ 1 / n_c
    for power in (0.0, 0.3, 1.0, 2.0):
        w = np.array(losstune.class_weights_from_counts(counts, power))
        assert (w * counts).sum() / counts.sum() == pytest.approx(1.0)  # mean example weight is 1


@pytest.mark.parametrize("power", [-0.1, 2.5, "x", True])
def test_class_weights_reject_bad_power(power):
    with pytest.raises(ValueError, match="`power` must be a number in \\[0.0, 2.0\\]"):
        losstune.class_weights_from_counts([1, 2], power)
