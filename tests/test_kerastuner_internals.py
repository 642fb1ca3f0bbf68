"""The KerasTuner private names losstune relies on (read from keras-tuner 1.4.x).

Each test fails loudly when an upgrade of KerasTuner changes one, naming what losstune would lose.
"""

import inspect

from keras_tuner.src import config as kt_config
from keras_tuner.src.engine import base_tuner


def test_trial_traceback_printing_is_switched_by_the_debug_flag():
    # losstune.search sets it to False so a failed trial prints one line, not KerasTuner's traceback.
    assert isinstance(kt_config.DEBUG, bool)
    source = inspect.getsource(base_tuner.BaseTuner._try_run_and_update_trial)
    assert "config_module.DEBUG" in source and "traceback.print_exc()" in source


def test_the_per_execution_tensorboard_hook_exists_with_its_signature():
    # losstune's mixin extends it to add its TensorBoard run, HParams session and loss picture per execution.
    import keras_tuner

    params = list(inspect.signature(keras_tuner.Tuner._configure_tensorboard_dir).parameters)
    assert params == ["self", "callbacks", "trial", "execution"]


def test_populate_space_is_the_oracles_source_of_the_next_trial():
    # losstune replaces it on the oracle instance to put the baseline first.
    import keras_tuner

    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_loss", max_trials=1)
    assert list(inspect.signature(oracle.populate_space).parameters) == ["trial_id"]
    assert "populate_space" in inspect.getsource(keras_tuner.engine.oracle.Oracle._populate_space)


def test_distributed_roles_are_read_from_the_environment():
    from keras_tuner.src.distribute import utils as dist_utils

    assert callable(dist_utils.has_chief_oracle) and callable(dist_utils.is_chief_oracle)
    assert not dist_utils.has_chief_oracle()  # no KERASTUNER_ORACLE_IP in the test environment


def test_trial_state_holds_the_keys_losstune_reads_back():
    # tuner.stored_trials reads <project>/trial_<id>/trial.json, which is Trial.get_state() as JSON.
    import keras_tuner
    from keras_tuner.engine import trial as trial_module

    hp = keras_tuner.HyperParameters()
    hp.Choice("loss", ["crossentropy", "focal"])
    state = trial_module.Trial(hp, trial_id="3", status="COMPLETED").get_state()
    assert {"trial_id", "hyperparameters", "status", "score", "message"} <= set(state)
    assert state["hyperparameters"]["values"] == {"loss": "crossentropy"}


def test_state_files_go_through_one_json_writer():
    # losstune swaps it for an atomic writer while a search runs, so a killed search can resume.
    from keras_tuner.src import utils as kt_utils
    from keras_tuner.src.engine import stateful

    assert list(inspect.signature(kt_utils.save_json).parameters) == ["path", "obj"]
    assert "utils.save_json(" in inspect.getsource(stateful.Stateful.save)


def test_the_atomic_writer_is_in_place_only_while_running(tmp_path):
    from keras_tuner.src import utils as kt_utils

    from losstune import tuner

    original = kt_utils.save_json
    with tuner.running():
        assert kt_utils.save_json is not original
        kt_utils.save_json(str(tmp_path / "state.json"), {"a": 1})
    assert kt_utils.save_json is original
    assert (tmp_path / "state.json").read_text() == '{"a": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_the_oracle_keeps_a_retry_queue_and_saves_a_new_trial_before_itself():
    # losstune requeues trials left RUNNING by a process killed between the two saves of create_trial.
    import keras_tuner

    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_loss", max_trials=1)
    assert isinstance(oracle._retry_queue, list) and isinstance(oracle.ongoing_trials, dict)
    module = inspect.getsource(keras_tuner.src.engine.oracle)  # create_trial is wrapped by @synchronized
    source = module[module.index("\n    def create_trial(self, tuner_id):"):module.index("\n    def update_trial(")]
    first_save = source.index("self._save_trial(trial)")
    assert "self.save()" in source[first_save:]  # trial.json first, then oracle.json
    assert "_retry_queue.append" in inspect.getsource(keras_tuner.engine.oracle.Oracle.reload)


def test_save_best_epoch_calls_save_model_at_each_better_epoch():
    # losstune's SaveBestAtTrainEnd overrides `_save_model` to keep the weights in memory until training ends.
    import keras_tuner
    from keras_tuner.src.engine import tuner_utils

    calls = []

    class Recording(tuner_utils.SaveBestEpoch):
        def _save_model(self):
            calls.append(self.best_value)

    cb = Recording(objective=keras_tuner.Objective("val_score", "max"), filepath="unused")
    for epoch, value in enumerate([0.5, 0.4, 0.7, 0.7]):
        cb.on_epoch_end(epoch, {"val_score": value})
    assert calls == [0.5, 0.7]
    cb.on_epoch_end(4, {"loss": 1.0})  # no objective in the logs: saved at every epoch
    assert len(calls) == 3


def test_the_grid_oracle_steps_from_the_trials_in_its_populate_next_list():
    # A population appends each trial it takes to `_populate_next`, so the grid hands out K points at once.
    import keras_tuner

    oracle = keras_tuner.oracles.GridSearchOracle(objective="val_loss", max_trials=10)
    assert oracle._populate_next == []
    source = inspect.getsource(keras_tuner.oracles.GridSearchOracle)
    assert "self._populate_next.pop(0)" in source and "self._populate_next.append(trial.trial_id)" in source


def test_a_distributed_chief_exits_once_every_tuner_id_was_told_to_stop():
    # So a population asks under every member id, and each one is told to stop at the end.
    import keras_tuner
    from keras_tuner.src.distribute import oracle_chief

    assert "len(oracle.tuner_ids) == 0" in inspect.getsource(oracle_chief)  # exit_chief's condition
    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_loss", max_trials=1)
    assert isinstance(oracle.tuner_ids, set)


def test_bayesian_proposals_of_one_round_see_the_running_ones(tmp_path):
    # A population takes K trials from the Bayesian oracle before any of them ends. KerasTuner fits its Gaussian
    # process on the completed trials plus a pessimistic guess for each running one
    # (`BayesianOptimizationOracle._vectorize_trials` reads `ongoing_trials`), so the members of one round are
    # kept apart as a constant-liar scheme keeps them; without it all K proposals would be the same point.
    import keras_tuner
    import numpy as np

    hps = keras_tuner.HyperParameters()
    hps.Float("x", 0.0, 1.0)
    oracle = keras_tuner.oracles.BayesianOptimizationOracle(
        objective=keras_tuner.Objective("score", "max"), max_trials=10, num_initial_points=2,
        hyperparameters=hps, seed=1)
    oracle._set_project_dir(str(tmp_path), "p")  # as a tuner sets it
    for k, x in enumerate([0.2, 0.8]):
        trial = oracle.create_trial(f"start{k}")
        trial.hyperparameters.values["x"] = x
        oracle.update_trial(trial.trial_id, {"score": x}, step=0)
        trial.status = keras_tuner.engine.trial.TrialStatus.COMPLETED
        oracle.end_trial(trial)
    fitted = []
    fit = oracle.gpr.fit
    oracle.gpr.fit = lambda x, y: (fitted.append(len(x)), fit(x, y))[1]
    proposals = [oracle.create_trial(f"member{k}").hyperparameters.values["x"] for k in range(3)]
    assert fitted == [2, 3, 4]  # the completed trials, then one more guess per member already taken
    # Apart: fitted on the completed trials alone, the three proposals fall within 0.01 of each other.
    gaps = np.diff(np.sort(proposals))
    assert gaps.min() > 0.1, proposals


def test_the_bayesian_oracle_draws_its_first_trials_at_random(tmp_path):
    # tuner.random_trials_first: population="auto" sizes Bayesian rounds up to the oracle's random phase,
    # max(3 x dimensions, 3) completed trials by default, read from `num_initial_points` and the space.
    import keras_tuner

    from losstune import tuner as tuner_module

    hps = keras_tuner.HyperParameters()
    for name in "abcd":
        hps.Float(name, 0.0, 1.0)
    oracle = keras_tuner.oracles.BayesianOptimizationOracle(
        objective=keras_tuner.Objective("score", "max"), max_trials=20, hyperparameters=hps, seed=1)
    oracle._set_project_dir(str(tmp_path), "p")
    assert "max(3 * dimensions, 3)" in inspect.getsource(type(oracle).populate_space)
    random_calls = []
    draw = oracle._random_populate_space
    oracle._random_populate_space = lambda: (random_calls.append(1), draw())[1]
    for k in range(12):
        trial = oracle.create_trial(f"t{k}")
        oracle.update_trial(trial.trial_id, {"score": k / 12}, step=0)
        trial.status = keras_tuner.engine.trial.TrialStatus.COMPLETED
        oracle.end_trial(trial)
    assert len(random_calls) == 12  # 4 hyperparameters: the first 12 trials are random draws

    class Holder:
        pass

    holder = Holder()
    holder.oracle = oracle
    assert tuner_module.random_trials_first(holder) == 12
    oracle.num_initial_points = 5
    assert tuner_module.random_trials_first(holder) == 5
    holder.oracle = keras_tuner.oracles.RandomSearchOracle(objective=keras_tuner.Objective("score", "max"))
    assert tuner_module.random_trials_first(holder) == 0


# --- Keras private names outside the population package (those inside it: tests/test_population_package.py)
def test_weight_decay_exclusions_by_name_live_outside_the_optimizer_config():
    # optimizers.fresh_optimizer copies `_exclude_from_weight_decay_pattern` by hand: get_config leaves it out,
    # so a copied AdamW would decay the variables the user excluded.
    import keras

    from losstune.optimizers import fresh_optimizer

    opt = keras.optimizers.AdamW(weight_decay=0.1)
    opt.exclude_from_weight_decay(var_names=["bias"])
    assert opt._exclude_from_weight_decay_pattern is not None
    assert "bias" not in str(opt.get_config())
    copy = fresh_optimizer(opt)
    assert copy is not opt and copy._exclude_from_weight_decay_pattern == opt._exclude_from_weight_decay_pattern
    bias = keras.Variable([1.0], name="bias")
    assert copy._use_weight_decay(bias) is False
    assert fresh_optimizer(keras.optimizers.AdamW(weight_decay=0.1))._use_weight_decay(bias) is True
