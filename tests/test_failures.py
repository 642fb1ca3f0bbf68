"""Failing trials, an interrupted search, atomic files: nothing completed is lost."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_multiplexer
from tensorboard.plugins.hparams import api_pb2, metadata

import losstune
from losstune import files
from tests.helpers import mlp, tiny_multiclass

ROOT = Path(__file__).resolve().parent.parent
X, Y = tiny_multiclass(n=96)
PLAIN = losstune.LossSpace({"crossentropy": {}}, task="multiclass")


def exploding_model(hp):
    """Trials with explode=True output NaN: their loss is NaN from the first batch."""
    explode = hp.Boolean("explode", default=False)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    if explode:
        model.add(keras.layers.Lambda(lambda t: t * float("nan")))
    return model


@pytest.fixture(scope="module")
def nan_search(tmp_path_factory):
    directory = tmp_path_factory.mktemp("nan")
    out = io.StringIO()
    result = losstune.search(exploding_model, X, Y, validation_data=(X, Y), space=PLAIN, tuner="grid",
                             max_trials=2, epochs=3, race=0, directory=str(directory), stream=out)
    return result, out.getvalue()


def test_nan_trial_is_failed_with_its_reason_and_the_search_goes_on(nan_search):
    result, log = nan_search
    statuses = [t.status for t in result.trials]
    assert statuses == ["COMPLETED", "FAILED"]
    failed = result.trials[1]
    assert "training loss became nan at batch 0 of epoch 0" in failed.message
    assert result.best_trial is result.trials[0]
    table = result.table()
    assert "FAILED" in table and "training loss became nan" in table
    assert "FAILED: training loss became nan" in log


def test_nan_trial_stops_at_once_and_is_failed_in_tensorboard(nan_search):
    result, _ = nan_search
    mux = event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(os.path.join(result.directory, "logs"))
    mux.Reload()
    failed = result.trials[1].trial_id
    # 3 epochs were asked for; the guard stopped the trial in its first batch
    assert len(mux.Tensors(f"{failed}/execution0/train", "epoch_loss")) == 1
    assert len(mux.Tensors(f"{result.trials[0].trial_id}/execution0/train", "epoch_loss")) == 3
    content = mux.PluginRunToTagToContent(metadata.PLUGIN_NAME)[f"{failed}/execution0"]
    ends = mux.Tensors(f"{failed}/execution0", metadata.SESSION_END_INFO_TAG)
    status = [metadata.parse_session_end_info_plugin_data(
        mux.SummaryMetadata(f"{failed}/execution0", metadata.SESSION_END_INFO_TAG).plugin_data.content).status]
    assert metadata.SESSION_START_INFO_TAG in content and ends
    assert status[-1] == api_pb2.STATUS_FAILURE


def test_a_search_where_every_trial_fails_raises(tmp_path):
    class NanWhileTraining(keras.layers.Layer):
        def call(self, x, training=None):
            return x * float("nan") if training else x

    def diverging(hp):
        return keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax"), NanWhileTraining()])

    out = io.StringIO()
    # The first two trials fail with one same reason: the search stops there instead of training the rest.
    with pytest.raises(RuntimeError, match="the first 2 trials all failed with the same error, so the search "
                                           "stopped: training loss became nan at batch 0 of epoch 0"):
        losstune.search(diverging, X, Y, validation_data=(X, Y), space="imbalanced_multiclass", tuner="random",
                        max_trials=5, epochs=2, directory=str(tmp_path), stream=out)
    assert not os.path.exists(tmp_path / "search" / "best_loss.json")
    assert len(list((tmp_path / "search").glob("trial_*/trial.json"))) == 2
    assert out.getvalue().count("FAILED: training loss became nan") == 2


def test_trials_failing_for_different_reasons_all_run_and_the_last_error_names_them(tmp_path):
    class NanAfter(keras.layers.Layer):
        """NaN from a trial-specific batch on: each trial fails with its own reason."""

        def __init__(self, batch, **kwargs):
            super().__init__(**kwargs)
            self.batch = batch
            self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False)

        def call(self, x, training=None):
            if not training:
                return x
            self.calls.assign_add(1.0)
            return keras.ops.where(self.calls > self.batch, x * float("nan"), x)

    def diverging(hp):
        batch = hp.Int("nan_from", 0, 2)
        return keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax"), NanAfter(batch)])

    with pytest.raises(RuntimeError, match="every trial of the search failed.*trial 0 .*at batch 0 .*trial 1 .*at batch 1 "):
        losstune.search(diverging, X, Y, validation_data=(X, Y), space=PLAIN, tuner="grid",
                        max_trials=3, epochs=1, batch_size=16, directory=str(tmp_path), stream=io.StringIO())
    assert len(list((tmp_path / "search").glob("trial_*/trial.json"))) == 3


class Mismatch(keras.layers.Layer):
    """Fails in training only, like a model that cannot take the labels it is given."""

    def call(self, x, training=None):
        if training:
            raise ValueError("Exception encountered when calling Mismatch.call().\n\n\x1b[1mIncompatible "
                             "shapes: [16,3] vs. [16,4]\x1b[0m\n\nArguments received by Mismatch.call():\n"
                             "  \u2022 x=tf.Tensor(shape=(None, 3))\n  \u2022 kwargs=<class 'inspect._empty'>")
        return x


def test_a_failed_trial_says_why_in_one_line_and_keeps_its_traceback(tmp_path, capfd):
    def build(hp):
        broken = hp.Boolean("broken", default=False)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
        if broken:
            model.add(Mismatch())
        return model

    out = io.StringIO()
    result = losstune.search(build, X, Y, validation_data=(X, Y), space=PLAIN, tuner="grid", max_trials=2,
                             epochs=1, race=0, directory=str(tmp_path), stream=out)
    failed = result.trials[1]
    assert failed.status == "FAILED" and failed.message == "Incompatible shapes: [16,3] vs. [16,4]"
    traceback_file = tmp_path / "search" / f"trial_{failed.trial_id}" / "traceback.txt"
    text = traceback_file.read_text()
    assert "Traceback (most recent call last)" in text and "Arguments received by Mismatch.call()" in text
    line = [l for l in out.getvalue().splitlines() if "FAILED" in l]
    assert line == [f"[2/2] trial 1  crossentropy()  FAILED: Incompatible shapes: [16,3] vs. "
                    f"[16,4] (traceback: {traceback_file})  best so far {result.best_score:.4f} (trial 0)"]
    assert "Incompatible shapes" in result.table()
    assert "Traceback" not in capfd.readouterr().err  # KerasTuner's per-trial print is silenced


SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import losstune
    from tests.helpers import mlp, tiny_multiclass
    x, y = tiny_multiclass(n=400)
    losstune.search(mlp(3, inputs=8), x, y, validation_data=(x, y), space="imbalanced_multiclass", tuner="random",
                    max_trials=6, epochs=4, directory={directory!r}, seed=2, race=0)
    print("DONE", flush=True)
""")


def test_sigkill_mid_search_loses_no_completed_trial(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=str(ROOT), directory=str(tmp_path / "runs")))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)
    try:
        seen = []
        for line in proc.stdout:
            if line.startswith("["):
                seen.append(line)
            if len(seen) == 2:
                proc.send_signal(signal.SIGKILL)  # mid-search: trial 3 is running
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    project = tmp_path / "runs" / "search"
    before = {p.parent.name: p.read_text() for p in project.glob("trial_*/trial.json")
              if json.loads(p.read_text())["status"] == "COMPLETED"}
    assert len(before) == 2
    # The same search run again, here in this process (the killed one is the fresh process that matters).
    again = io.StringIO()
    with contextlib.redirect_stdout(again):
        exec(script.read_text(), {"__name__": "rerun"})
    assert "DONE" in again.getvalue() and again.getvalue().count("] trial ") == 4  # only the 4 left
    result = losstune.SearchResult.from_directory(project)
    assert len(result.trials) == 6 and all(t.status == "COMPLETED" for t in result.trials)
    for name, text in before.items():  # completed trials are kept as they were: 0 lost
        assert (project / name / "trial.json").read_text() == text
    assert json.loads((project / "best_loss.json").read_text())["score"] == pytest.approx(result.best_score)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "best.json"
    losstune.export_loss(losstune.families.get("focal").build({"gamma": 1.0}), path)
    old = path.read_text()

    def broken_fsync(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", broken_fsync)  # fails after the new text was written
    with pytest.raises(OSError, match="disk full"):
        losstune.export_loss(losstune.families.get("focal").build({"gamma": 3.0}), path)
    assert path.read_text() == old
    assert sorted(os.listdir(tmp_path)) == ["best.json"]  # no half-written temporary file left behind
    monkeypatch.undo()
    assert losstune.load_loss(path).get_config()["gamma"] == 1.0


def test_a_trial_saved_just_before_a_kill_is_rerun_on_resume(tmp_path):
    # Killed inside KerasTuner's create_trial, after trial.json but before oracle.json: the reloaded oracle
    # knows the trial only as RUNNING; losstune sends it to be rerun instead of ending a trial short.
    common = dict(validation_data=(X, Y), space="imbalanced_multiclass", tuner="random", epochs=1, race=0,
                  directory=str(tmp_path), seed=3, stream=io.StringIO())
    losstune.search(mlp(3, inputs=8), X, Y, max_trials=2, **common)
    project = tmp_path / "search"
    state = json.loads((project / "trial_1" / "trial.json").read_text())
    state.update(trial_id="2", status="RUNNING", score=None, metrics={"metrics": {}})
    (project / "trial_2").mkdir()
    (project / "trial_2" / "trial.json").write_text(json.dumps(state))
    result = losstune.search(mlp(3, inputs=8), X, Y, max_trials=3, **common)
    assert [t.status for t in result.trials] == ["COMPLETED"] * 3
