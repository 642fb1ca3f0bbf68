"""A real TensorBoard server over a finished search: its HParams plugin serves one session group per trial."""

import io
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import losstune
from tests.helpers import mlp, tiny_multiclass


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port, route, body):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/data/plugin/hparams/{route}",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    x, y = tiny_multiclass(n=90)
    result = losstune.search(mlp(3, inputs=8), x, y, validation_data=(x, y), space="imbalanced_multiclass",
                             tuner="random", max_trials=3, epochs=1, directory=str(tmp_path_factory.mktemp("tbs")),
                             seed=4, race=0, stream=io.StringIO())
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", f"{result.directory}/logs",
                             "--host", "127.0.0.1", "--port", str(port), "--load_fast=false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/data/logdir", timeout=5).read()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("the TensorBoard server did not start")
                time.sleep(1)
        yield result, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_hparams_plugin_serves_one_session_group_per_trial(server):
    result, port = server
    experiment = _post(port, "experiment", {"experimentName": ""})
    names = {h["name"] for h in experiment["hparamInfos"]}
    assert {"loss", "focal/gamma", "class_weights/power"} <= names
    assert "trial_score" in {m["name"]["tag"] for m in experiment["metricInfos"]}
    groups = _post(port, "session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 100, "includeMetrics": True,
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [{"hparam": name} for name in sorted(names)] + [{"metric": {"tag": "trial_score"}}],
    })["sessionGroups"]
    assert sorted(g["name"] for g in groups) == sorted(t.trial_id for t in result.trials)
    for group in groups:
        trial = next(t for t in result.trials if t.trial_id == group["name"])
        assert group["hparams"]["loss"] == trial.family
        for key, value in trial.params.items():
            assert group["hparams"][f"{trial.family}/{key}"] == pytest.approx(value)
        score = next(m["value"] for m in group["metricValues"] if m["name"]["tag"] == "trial_score")
        assert score == pytest.approx(trial.score, rel=1e-5)
        assert [s["status"] for s in group["sessions"]] == ["STATUS_SUCCESS"]
