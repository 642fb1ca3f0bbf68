"""A chief and two workers on 127.0.0.1, through KerasTuner's own oracle service, run one losstune.search."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import losstune

ROOT = Path(__file__).resolve().parent.parent
TRIALS = 6
EPOCHS = 6
SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    import losstune
    from tests.helpers import mlp, tiny_multiclass
    if os.environ.get("KERASTUNER_TUNER_ID") == "chief":
        # KerasTuner private (1.4.x): a chief told to stop checks every 20 s whether its workers are done
        import time, types
        from keras_tuner.src.distribute import oracle_chief
        oracle_chief.time = types.SimpleNamespace(sleep=lambda seconds: time.sleep(min(seconds, 0.2)))
    x, y = tiny_multiclass(n=200)
    result = losstune.search(mlp(3, inputs=8), x, y, validation_data=(x, y), space="imbalanced_multiclass",
                             tuner="random", max_trials={trials}, epochs={epochs}, directory={directory!r}, seed=1,
                             race=0)
    print("FINISHED", os.environ.get("KERASTUNER_TUNER_ID", "single"), len(result.trials), flush=True)
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp_path, tuner_id, port, epochs, text=None):
    """Start one process of the search; `text`: the script to run (default: SCRIPT, with TRIALS and `epochs`)."""
    script = tmp_path / "search.py"
    script.write_text(text or SCRIPT.format(root=str(ROOT), trials=TRIALS, epochs=epochs,
                                            directory=str(tmp_path / "runs")))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", KERASTUNER_ORACLE_IP="127.0.0.1",
               KERASTUNER_ORACLE_PORT=str(port), KERASTUNER_TUNER_ID=tuner_id)
    log = open(tmp_path / f"{tuner_id}.log", "w")
    return subprocess.Popen([sys.executable, str(script)], stdout=log, stderr=subprocess.STDOUT, env=env), log


def _trial_lines(tmp_path, tuner_id):
    return [l for l in (tmp_path / f"{tuner_id}.log").read_text().splitlines() if l.startswith("[")]


def _run(tmp_path, epochs, kill_and_restart=False, timeout=300, text=None):
    """Chief + two workers; with kill_and_restart, tuner1 is SIGKILLed in its second trial, and started again
    with the same id once tuner0 has finished. `text`: another search script (tests/test_population_tuners.py)."""
    port = _free_port()
    procs, codes = {}, {}
    try:
        procs["chief"] = _start(tmp_path, "chief", port, epochs, text)
        time.sleep(3)
        for worker in ("tuner0", "tuner1"):
            procs[worker] = _start(tmp_path, worker, port, epochs, text)
        deadline = time.time() + timeout
        stage = "running" if kill_and_restart else "done"
        while time.time() < deadline and any(p.poll() is None for p, _ in procs.values()):
            if stage == "running" and len(_trial_lines(tmp_path, "tuner1")) >= 1:
                procs["tuner1"][0].send_signal(signal.SIGKILL)  # mid-run: its second trial is under way
                procs["tuner1"][0].wait(timeout=30)
                codes["tuner1 killed"] = procs["tuner1"][0].returncode
                stage = "killed"
            if stage == "killed" and procs["tuner0"][0].poll() is not None:
                procs["tuner1"][1].close()
                (tmp_path / "tuner1.log").rename(tmp_path / "tuner1-killed.log")
                procs["tuner1"] = _start(tmp_path, "tuner1", port, epochs, text)
                stage = "restarted"
            time.sleep(0.5)
        codes.update({name: p.poll() for name, (p, _) in procs.items()})
        return codes
    finally:
        for p, log in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
            log.close()


def _trial_states(tmp_path):
    project = tmp_path / "runs" / "search"
    return [json.loads(p.read_text()) for p in sorted(project.glob("trial_*/trial.json"))]


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory):
    """One distributed search (tuner1 SIGKILLed mid-run, then restarted) and the same search in one process."""
    tmp_path = tmp_path_factory.mktemp("distributed")
    codes = _run(tmp_path, epochs=EPOCHS, kill_and_restart=True)
    single = tmp_path_factory.mktemp("single")
    exec(SCRIPT.format(root=str(ROOT), trials=TRIALS, epochs=EPOCHS, directory=str(single / "runs")),
         {"__name__": "single_process"})
    return tmp_path, codes, losstune.SearchResult.from_directory(single / "runs" / "search")


def _configs(result):
    return sorted((t.family, json.dumps(t.params, sort_keys=True), t.power or 0.0) for t in result.trials)


def test_chief_and_two_workers_share_one_search(distributed_run):
    tmp_path, codes, single = distributed_run
    assert codes["chief"] == 0 and codes["tuner0"] == 0 and codes["tuner1"] == 0, codes
    states = _trial_states(tmp_path)
    ids = [s["trial_id"] for s in states]
    assert len(ids) == TRIALS and len(set(ids)) == TRIALS  # exactly the requested trials, none twice
    assert all(s["status"] == "COMPLETED" for s in states)
    per_worker = {w: len(_trial_lines(tmp_path, w)) for w in ("tuner0", "tuner1-killed", "tuner1")}
    assert per_worker["tuner0"] >= 1 and per_worker["tuner1-killed"] >= 1
    assert sum(per_worker.values()) == TRIALS  # every trial was completed once, by a worker
    assert _trial_lines(tmp_path, "chief") == []  # the chief serves the oracle and trains nothing
    # A worker sees only its own trials: its lines name it instead of counting, and claim no best.
    assert all(line.startswith("[tuner0] trial ") and "best so far" not in line
               for line in _trial_lines(tmp_path, "tuner0"))
    result = losstune.SearchResult.from_directory(tmp_path / "runs" / "search")
    assert len(result.completed) == TRIALS and sum(t.is_baseline for t in result.trials) == 1
    exported = json.loads((tmp_path / "runs" / "search" / "best_loss.json").read_text())
    assert exported["score"] == pytest.approx(result.best_score)
    assert exported["baseline_score"] == pytest.approx(result.baseline_score)
    # The same search in one process tries the same losses and reports the same best and baseline.
    assert _configs(result) == _configs(single)
    assert result.best_trial.describe_loss() == single.best_trial.describe_loss()
    assert result.best_score == pytest.approx(single.best_score, abs=1e-3)
    assert result.baseline_score == pytest.approx(single.baseline_score, abs=1e-3)


def test_a_killed_worker_does_not_stop_the_others(distributed_run):
    tmp_path, codes, _ = distributed_run
    assert codes["tuner1 killed"] == -signal.SIGKILL
    # The other worker went on to the end of the search on its own.
    assert codes["tuner0"] == 0, (tmp_path / "tuner0.log").read_text()[-2000:]
    # KerasTuner keeps the killed worker's trial as its ongoing trial: the chief waits for it, and the same
    # worker id started again resumes exactly that trial; then everyone finishes with no trial run twice.
    assert codes["chief"] == 0 and codes["tuner1"] == 0, codes
    states = _trial_states(tmp_path)
    assert len(states) == TRIALS and len({s["trial_id"] for s in states}) == TRIALS
    assert all(s["status"] == "COMPLETED" for s in states)
    assert len(_trial_lines(tmp_path, "tuner1")) == 1  # the restarted worker ran only the interrupted trial
