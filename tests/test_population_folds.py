"""Folds as members (`train_population(..., holdout=)`): K members train on one stream of the whole (x, y),
each with its held-out examples weighted 0, and validate on those examples. A held-out label never reaches a
member's gradient; each member's validation logs are its held-out fold's, recomputed independently."""

import keras
import numpy as np
import pytest
from sklearn.metrics import f1_score

from losstune import families, objectives
from losstune.population import Member, train_population

SEED = 4
rng = np.random.default_rng(0)
X = rng.normal(size=(120, 8)).astype("float32")
Y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype("int64") + (X[:, 2] > 0.8).astype("int64")  # 3 classes
FOLDS = np.arange(120) % 3  # example i is held out of member k when FOLDS[i] == k
HOLDOUT = np.stack([FOLDS == k for k in range(3)])


def model_of(loss):
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(12, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss=loss, metrics=[objectives.MacroF1()])
    return model


def members(losses):
    return [Member(model_of(loss)) for loss in losses]


def focal(gamma):
    return families.get("focal").build({"gamma": gamma}, task="multiclass")


def trained(y, losses=None):
    group = members(losses or [focal(2.0), focal(1.0), "sparse_categorical_crossentropy"])
    train_population(group, X, y, epochs=3, batch_size=16, seed=SEED, holdout=HOLDOUT)
    return group


def test_a_held_out_label_never_reaches_the_members_gradient():
    base = trained(Y)
    scrambled = Y.copy()
    scrambled[FOLDS == 0] = rng.integers(0, 3, size=(FOLDS == 0).sum())  # member 0's held-out labels
    changed = trained(scrambled)
    for a, b in zip(base[0].model.get_weights(), changed[0].model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)  # member 0 trained on the same examples
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(base[1].model.get_weights(),
                                                             changed[1].model.get_weights()))
    assert moved > 1e-3  # member 1 trains on those labels: it changed


def test_each_member_validates_on_its_held_out_fold():
    group = trained(Y)
    for k, member in enumerate(group):
        held = FOLDS == k
        p = np.asarray(member.model(X[held], training=False))
        expected_f1 = f1_score(Y[held], p.argmax(1), average="macro", labels=[0, 1, 2], zero_division=0)
        assert member.history["val_macro_f1"][-1] == pytest.approx(expected_f1, abs=1e-5)
        if k == 2:  # cross-entropy: the validation loss is the mean over the held-out examples
            ce = -np.log(np.clip(p[np.arange(held.sum()), Y[held]], 1e-7, 1.0))
            assert member.history["val_loss"][-1] == pytest.approx(float(ce.mean()), rel=1e-4)
        assert len(member.history["loss"]) == 3 and member.failure is None


def test_holdout_is_checked_before_training():
    group = members([focal(2.0), focal(1.0), focal(0.5)])
    with pytest.raises(ValueError, match="`holdout` must be a boolean array of shape \\(members, examples\\)"):
        train_population(group, X, Y, epochs=1, seed=SEED, holdout=HOLDOUT[:2])
    with pytest.raises(ValueError, match="`holdout` and `validation_data` exclude each other"):
        train_population(group, X, Y, validation_data=(X, Y), epochs=1, seed=SEED, holdout=HOLDOUT)
    with pytest.raises(ValueError, match="needs examples to train on and examples held out"):
        train_population(group, X, Y, epochs=1, seed=SEED, holdout=np.zeros((3, 120), bool))
    import tensorflow as tf

    with pytest.raises(ValueError, match="`holdout` needs x and y as NumPy arrays"):
        train_population(group, tf.data.Dataset.from_tensor_slices((X, Y)).batch(8), epochs=1, seed=SEED,
                         holdout=HOLDOUT)


def dropout_member(seed, seed_state_of=None):
    """A member as a fold search builds it for the execution of `seed` (its own initial weights and Dropout
    seed state); with `seed_state_of`, the Dropout seed state of that other model instead."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(12, activation="relu"), keras.layers.Dropout(0.3),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss=focal(1.0), metrics=[objectives.MacroF1()])
    if seed_state_of is not None:
        for mine, theirs in zip(model.non_trainable_variables, seed_state_of.non_trainable_variables):
            if mine.name == "seed_generator_state":
                mine.assign(theirs.numpy())
    return Member(model)


def test_members_of_other_folds_draw_dropout_from_the_first_members_seed_state_without_a_loop():
    # A fold search builds each member for its own execution (seed), so the members' Dropout seed states
    # differ. Mapped per member, TensorFlow draws the mask in a loop over members (no vectorized form of
    # StatelessRandomGetKeyCounter / StatelessRandomUniformV2 for a per-member seed): folds as members draw one
    # mask for all members from the first member's state, as they follow one order of batches.
    from tests.helpers import pfor_loops

    seeds = [SEED, SEED + 1, SEED + 2]
    with pfor_loops() as loops:
        group = [dropout_member(s) for s in seeds]
        train_population(group, X, Y, epochs=2, batch_size=16, seed=SEED, holdout=HOLDOUT)
    assert loops == [], f"ops mapped by a loop over members: {loops}"
    # Each member keeps its own initial weights; only the Dropout draws are the first member's.
    first = dropout_member(SEED).model
    given = [dropout_member(s, seed_state_of=first) for s in seeds]
    train_population(given, X, Y, epochs=2, batch_size=16, seed=SEED, holdout=HOLDOUT)
    for member, expected in zip(group, given):
        for a, b in zip(member.model.get_weights(), expected.model.get_weights()):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert not np.allclose(group[0].model.get_weights()[0], group[1].model.get_weights()[0])


JAX_SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import test_population_folds as t
from sklearn.metrics import f1_score
base = t.trained(t.Y)
scrambled = t.Y.copy()
scrambled[t.FOLDS == 0] = (scrambled[t.FOLDS == 0] + 1) % 3
changed = t.trained(scrambled)
out = {"same": max(float(np.max(np.abs(a - b))) for a, b in zip(base[0].model.get_weights(), changed[0].model.get_weights())),
       "moved": max(float(np.max(np.abs(a - b))) for a, b in zip(base[1].model.get_weights(), changed[1].model.get_weights()))}
held = t.FOLDS == 1
p = np.asarray(base[1].model(t.X[held], training=False))
out["f1"] = abs(base[1].history["val_macro_f1"][-1]
                - f1_score(t.Y[held], p.argmax(1), average="macro", labels=[0, 1, 2], zero_division=0))
print("RESULT" + json.dumps(out))
"""


def test_a_fold_search_trains_every_fold_of_a_round_as_one_population(tmp_path):
    # folds=3, population=3: the 3 trials x 3 folds of the round are one population of 9 over the whole
    # (x, y); each trial still gets one score per fold, and its checkpoint.
    import io
    import os

    import losstune
    from losstune.population import trials
    from tests.helpers import mlp, tiny_multiclass

    x, y = tiny_multiclass(n=150)
    sizes = []
    original = trials.train_population

    def counted(members, *args, **kwargs):
        sizes.append(len(members))
        return original(members, *args, **kwargs)

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trials, "train_population", counted)
        result = losstune.search(mlp(3, inputs=8), x, y, folds=3, population=3, tuner="random", max_trials=3,
                                 epochs=2, race=0, seed=1, directory=str(tmp_path), stream=out)
    assert sizes == [9] and "one by one" not in out.getvalue()
    for t in result.trials:
        assert t.status == "COMPLETED" and len(t.scores) == 3 and np.all(np.isfinite(t.scores))
        assert os.path.isfile(os.path.join(result.directory, f"trial_{t.trial_id}", "checkpoint.weights.h5"))
