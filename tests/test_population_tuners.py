"""losstune.search(population=K) with every kind of KerasTuner loop it plugs into: the grid and Bayesian oracles,
an interrupted search resumed, distributed workers (test_population_search.py covers random search)."""

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import keras_tuner
import numpy as np
import pytest
from keras_tuner.src.distribute.oracle_chief import exit_chief

import losstune
from losstune import population
from losstune import tuner as tuner_module
from tests.helpers import mlp, tiny_multiclass
from tests.test_distributed import ROOT, _run, _trial_lines, _trial_states

X, Y = tiny_multiclass(n=240, classes=3)
X = X + np.random.default_rng(5).normal(scale=1.5, size=X.shape).astype("float32")  # classes overlap
X, XV, Y, YV = X[:150], X[150:], Y[:150], Y[150:]  # validation from the same classes: trials score apart


@contextlib.contextmanager
def _populations():
    """The sizes of the populations trained, in order: who trained together."""
    from losstune.population import trials

    sizes = []
    train_population = trials.train_population

    def counted(members, *args, **kwargs):
        sizes.append(len(members))
        return train_population(members, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trials, "train_population", counted)
        yield sizes


def _search(directory, tuner, space, max_trials, **kw):
    out = io.StringIO()
    result = losstune.search(mlp(3, inputs=8), X, Y, validation_data=(XV, YV), space=space, tuner=tuner,
                             max_trials=max_trials, epochs=2, batch_size=8, race=0, seed=3, directory=str(directory),
                             stream=out, **kw)
    return result, out.getvalue()


def _status_ids(log):
    """The trial ids of a search's status lines (`[n/N] trial <id>  ...`), in order."""
    return re.findall(r"^\[\d+(?:/\d+)?\] trial (\S+)", log, flags=re.M)


# ------------------------------------------------------------------------------------------------------
# Grid search: every grid point once, the serial grid's trials and scores
# ------------------------------------------------------------------------------------------------------
GRID = losstune.LossSpace({"crossentropy": {"label_smoothing": {"values": [0.0, 0.1]}},
                           "focal": {"gamma": {"values": [1.0, 2.0]}}}, task="multiclass")  # 4 points


@pytest.fixture(scope="module")
def grid_searches(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    serial = _search(tmp / "serial", "grid", GRID, max_trials=6)  # the budget is larger than the grid
    with _populations() as sizes:
        together = _search(tmp / "population", "grid", GRID, max_trials=6, population=3)
    return serial, together, sizes


def test_grid_population_tries_every_point_once_as_the_serial_grid(grid_searches):
    (serial, _), (together, log), sizes = grid_searches
    points = {(t.family, json.dumps(t.params, sort_keys=True)) for t in together.trials}
    assert len(points) == len(together.trials) == 4  # the whole grid, no point twice, then the search stops
    assert [t.status for t in together.trials] == ["COMPLETED"] * 4
    assert together.trials[0].is_baseline  # the grid starts from every default
    assert [t.trial_id for t in together.trials] == [t.trial_id for t in serial.trials]
    assert [t.loss for t in together.trials] == [t.loss for t in serial.trials]
    np.testing.assert_allclose([t.score for t in together.trials], [t.score for t in serial.trials], atol=1e-5)
    assert sorted(_status_ids(log)) == [t.trial_id for t in together.trials]
    # Three grid points train at once, then the last one: the grid oracle proposes from running trials too.
    assert sizes == [3, 1]


# ------------------------------------------------------------------------------------------------------
# Bayesian optimization: from the second population on, its Gaussian process proposes the members
# ------------------------------------------------------------------------------------------------------
class QuickBayes(keras_tuner.BayesianOptimization):
    """Bayesian optimization past its random start after two trials (the default waits for 3 x dimensions)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, num_initial_points=2, **kwargs)


BAYES = losstune.LossSpace({"crossentropy": {"label_smoothing": {"values": [0.0, 0.05, 0.1]}},
                            "focal": {"gamma": {"values": [1.0, 2.0, 3.0]}}}, task="multiclass")  # 6 points


@pytest.fixture(scope="module")
def bayesian_search(tmp_path_factory):
    with _populations() as sizes:
        result, log = _search(tmp_path_factory.mktemp("bayes"), QuickBayes, BAYES, max_trials=5, population=3)
    return result, log, sizes


def test_bayesian_population_completes_its_trials_once_each(bayesian_search):
    result, log, sizes = bayesian_search
    assert [t.status for t in result.trials] == ["COMPLETED"] * 5
    ids = [t.trial_id for t in result.trials]
    assert len(set(ids)) == 5 and sorted(_status_ids(log)) == ids
    assert result.trials[0].is_baseline and sum(t.is_baseline for t in result.trials) == 1
    # From the second population on the Gaussian process proposes; here it proposes the baseline again (the
    # members of one population are kept apart by KerasTuner's own guesses for running trials): without
    # losstune's replacement of a repeated proposal (tuner._known_first) one point would be trained twice.
    points = [(t.family, json.dumps(t.params, sort_keys=True)) for t in result.trials]
    assert len(set(points)) == 5, points
    assert sizes == [3, 2]


# ------------------------------------------------------------------------------------------------------
# The same search as a script: the uninterrupted reference, an interrupted one resumed, a distributed one
# ------------------------------------------------------------------------------------------------------
TRIALS, EPOCHS = 4, 2
SCRIPT = textwrap.dedent("""
    import os, sys, time, types
    sys.path.insert(0, {root!r})
    from keras_tuner.src.distribute import oracle_chief
    import losstune
    from losstune import population
    from tests.helpers import mlp, tiny_multiclass

    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "")
    if tuner_id == "chief":
        # KerasTuner private (1.4.x): a chief told to stop checks every 20 s whether its workers are done
        oracle_chief.time = types.SimpleNamespace(sleep=lambda seconds: time.sleep(min(seconds, 0.2)))
    elif tuner_id:
        # the workers start searching together: each takes a population of 2 of the 4 trials
        here = os.path.dirname({directory!r})
        open(os.path.join(here, tuner_id + ".ready"), "w").close()
        for _ in range(1200):
            if len([name for name in os.listdir(here) if name.endswith(".ready")]) >= 2:
                break
            time.sleep(0.05)

    train_members = population.train_members

    def counted(hypermodel, by_execution, *args, **kwargs):  # one line per population: who trains together
        print("POPULATION", sum(len(members) for members in by_execution.values()), flush=True)
        return train_members(hypermodel, by_execution, *args, **kwargs)

    population.train_members = counted
    try:
        x, y = tiny_multiclass(n=180)
        result = losstune.search(mlp(3, inputs=8), x[:120], y[:120], validation_data=(x[120:], y[120:]),
                                 space="imbalanced_multiclass", tuner="random", max_trials={trials},
                                 epochs={epochs}, batch_size=8, directory={directory!r}, seed=1, race=0,
                                 population={population})
    finally:
        population.train_members = train_members
    print("FINISHED", os.environ.get("KERASTUNER_TUNER_ID", "single"), len(result.trials), flush=True)
""")


def _script(directory, population):
    return SCRIPT.format(root=str(ROOT), trials=TRIALS, epochs=EPOCHS, directory=str(directory),
                         population=population)


def _in_process(directory, population):
    """The script run in this process: (its result, its output)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(_script(directory, population), {"__name__": "population_search"})
    return losstune.SearchResult.from_directory(directory / "search"), out.getvalue()


def _populations_of(text):
    return [int(n) for n in re.findall(r"^POPULATION (\d+)$", text, flags=re.M)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The search uninterrupted, in one process."""
    return _in_process(tmp_path_factory.mktemp("reference") / "runs", population=4)


def _trial_files(project):
    files = {}
    for trial_dir in sorted(project.glob("trial_*")):
        for name in ("trial.json", "repeats.json", "checkpoint.weights.h5"):
            path = trial_dir / name
            if path.exists():
                files[(trial_dir.name, name)] = (path.read_bytes(), path.stat().st_mtime_ns)
    return files


def _kill_in_second_population(proc, log_path, first, timeout=240):
    """SIGKILL `proc` once its first population's `first` status lines are out and its second population
    has gone to the engine."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        text = log_path.read_text()
        if len(_status_ids(text)) >= first and len(_populations_of(text)) >= 2:
            proc.send_signal(signal.SIGKILL)
            return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, request):
    """The search with population 2 SIGKILLed while its second population trains, then run again as it was."""
    tmp = tmp_path_factory.mktemp("resume")
    (tmp / "search.py").write_text(_script(tmp / "runs", population=2))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    log_path = tmp / "killed.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(tmp / "search.py")], stdout=log, stderr=subprocess.STDOUT,
                                env=env)
        try:
            watcher = threading.Thread(target=_kill_in_second_population, args=(proc, log_path, 2))
            watcher.start()
            request.getfixturevalue("reference")  # computed here while the subprocess starts (2 cores)
            watcher.join()
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    project = tmp / "runs" / "search"
    before = _trial_files(project)
    states_before = {s["trial_id"]: s["status"] for s in _trial_states(tmp)}
    result, rerun_log = _in_process(tmp / "runs", population=2)
    return (proc.returncode, log_path.read_text(), states_before, before, _trial_files(project), result,
            rerun_log)


def test_an_interrupted_population_search_resumes_where_it_stopped(resumed, reference):
    code, killed_log, states_before, before, after, result, rerun_log = resumed
    assert code == -signal.SIGKILL, killed_log[-2000:]
    first_round = _status_ids(killed_log)
    assert len(first_round) == 2 and _populations_of(killed_log) == [2, 2], killed_log[-2000:]
    assert sorted(states_before) == [str(i) for i in range(TRIALS)]
    assert sorted(i for i, s in states_before.items() if s == "COMPLETED") == sorted(first_round)
    assert sorted(i for i, s in states_before.items() if s == "RUNNING") == ["2", "3"]
    # The completed trials are kept as they were: not retrained, their files untouched.
    for trial_id in first_round:
        for name in ("trial.json", "repeats.json", "checkpoint.weights.h5"):
            assert after[(f"trial_{trial_id}", name)] == before[(f"trial_{trial_id}", name)], (trial_id, name)
    # The interrupted ones train again, together, and nothing else does.
    assert sorted(_status_ids(rerun_log)) == ["2", "3"] and _populations_of(rerun_log) == [2]
    ids = [t.trial_id for t in result.trials]
    assert ids == [str(i) for i in range(TRIALS)] and [t.status for t in result.trials] == ["COMPLETED"] * TRIALS
    # The rerun trials' TensorBoard runs hold the new attempt only (the killed one's events were removed).
    for trial_id in ("2", "3"):
        logs = Path(result.directory) / "logs" / trial_id
        assert len(list(logs.glob("events.out.tfevents.*"))) == 1  # the loss picture, written once
        for run in ("train", "validation"):
            assert len(list((logs / "execution0" / run).glob("events.out.tfevents.*"))) == 1
    # ... with the result of the search that was never interrupted.
    ref, _ = reference
    assert [t.loss for t in result.trials] == [t.loss for t in ref.trials]
    np.testing.assert_allclose([t.score for t in result.trials], [t.score for t in ref.trials], atol=1e-5)


@pytest.fixture(scope="module")
def distributed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    codes = _run(tmp, epochs=EPOCHS, timeout=240, text=_script(tmp / "runs", population=2))
    return tmp, codes


def test_distributed_workers_train_populations_of_the_chiefs_trials(distributed, reference):
    tmp, codes = distributed
    logs = {w: (tmp / f"{w}.log").read_text() for w in ("chief", "tuner0", "tuner1")}
    # Every process ends: the chief too, once each member id of each worker has been told to stop.
    assert codes == {"chief": 0, "tuner0": 0, "tuner1": 0}, {w: text[-1500:] for w, text in logs.items()}
    states = _trial_states(tmp)
    ids = [s["trial_id"] for s in states]
    assert len(ids) == TRIALS and len(set(ids)) == TRIALS
    assert all(s["status"] == "COMPLETED" for s in states)
    # The chief serves the oracle and trains nothing; each worker trains its trials as populations of 2.
    assert _trial_lines(tmp, "chief") == [] and _populations_of(logs["chief"]) == []
    sizes = {w: _populations_of(logs[w]) for w in ("tuner0", "tuner1")}
    assert sizes == {"tuner0": [2], "tuner1": [2]}, sizes  # every trial trained once
    assert sum(len(_trial_lines(tmp, w)) for w in ("tuner0", "tuner1")) == TRIALS
    assert all("one by one" not in text for text in logs.values())
    # The single-process population search has the same trials: same ids, losses and scores.
    ref, ref_log = reference
    assert _populations_of(ref_log) == [4]
    result = losstune.SearchResult.from_directory(tmp / "runs" / "search")
    assert [(t.trial_id, t.loss) for t in result.trials] == [(t.trial_id, t.loss) for t in ref.trials]
    np.testing.assert_allclose([t.score for t in result.trials], [t.score for t in ref.trials], atol=1e-5)
    assert result.best_trial.trial_id == ref.best_trial.trial_id and result.trials[0].is_baseline


# ------------------------------------------------------------------------------------------------------
# How the members ask the oracle (KerasTuner's own oracles, no training)
# ------------------------------------------------------------------------------------------------------
def _worker(oracle, tuner_id="tuner0"):
    """What `_take_trials` uses of a tuner."""
    return types.SimpleNamespace(oracle=oracle, tuner_id=tuner_id, pre_create_trial=lambda: None)


class _Client:
    """An oracle seen from a distributed worker (KerasTuner's OracleClient): its methods, not its state."""

    def __init__(self, oracle):
        self.create_trial = oracle.create_trial


def _oracle(cls, tmp_path, values, **kw):
    hp = keras_tuner.HyperParameters()
    hp.Choice("a", values)
    oracle = cls(objective=keras_tuner.Objective("score", "max"), hyperparameters=hp, seed=1, **kw)
    oracle._set_project_dir(str(tmp_path), "oracle")
    return oracle


def _end(oracle, trial):
    oracle.update_trial(trial.trial_id, {"score": 1.0})
    trial.status = keras_tuner.engine.trial.TrialStatus.COMPLETED
    oracle.end_trial(trial)


def test_every_member_id_is_told_to_stop_so_a_distributed_chief_can_exit(tmp_path):
    oracle = _oracle(keras_tuner.oracles.RandomSearchOracle, tmp_path, list(range(100)), max_trials=4)
    worker = _worker(_Client(oracle))
    for _ in range(2):
        trials = tuner_module.LosstuneTunerMixin._take_trials(worker, 2)
        assert len(trials) == 2
        for trial in trials:
            _end(oracle, trial)
    assert tuner_module.LosstuneTunerMixin._take_trials(worker, 2) == []
    # KerasTuner's chief exits once no trial runs and every tuner id it served was told to stop.
    assert exit_chief(oracle), oracle.tuner_ids


def test_a_worker_waits_while_the_oracle_is_idle(tmp_path):
    oracle = _oracle(keras_tuner.oracles.GridSearchOracle, tmp_path, [1, 2, 3, 4], max_trials=10)
    first = tuner_module.LosstuneTunerMixin._take_trials(_worker(_Client(oracle), "tuner0"), 2)
    assert [t.hyperparameters.values["a"] for t in first] == [1, 2]
    # The grid can step on only from an ended trial: another worker is answered IDLE until one ends.
    taken = []
    second = threading.Thread(target=lambda: taken.extend(
        tuner_module.LosstuneTunerMixin._take_trials(_worker(_Client(oracle), "tuner1"), 2)))
    second.start()
    time.sleep(0.4)
    assert second.is_alive() and taken == []  # it waits instead of ending its search with no trial
    for trial in first:
        _end(oracle, trial)
    second.join(timeout=10)
    assert not second.is_alive()
    assert [t.hyperparameters.values["a"] for t in taken] == [3]
