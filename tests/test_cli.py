"""The `losstune` command: demo, search, show, export, spaces, and its one-line errors."""

import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import losstune
from losstune import cli
from tests.helpers import tiny_multiclass

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _command():
    exe = shutil.which("losstune")
    return [exe] if exe else [sys.executable, "-m", "losstune"]


def test_demo_runs_a_real_search(tmp_path):
    proc = subprocess.run(_command() + ["demo", "--trials", "3", "--epochs", "2", "--directory", str(tmp_path)],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for k in (1, 2, 3):
        assert f"[{k}/3] trial {k - 1} " in out  # finished-trial count, then the trial's id
    assert "best val_macro_f1 =" in out and "baseline val_macro_f1 =" in out
    config = os.path.join(tmp_path, "search", "best_loss.json")
    assert f"best loss config: {config}" in out
    assert isinstance(losstune.load_loss(config), keras.losses.Loss)
    assert f"watch the trials: tensorboard --logdir {os.path.join(tmp_path, 'search', 'logs')}" in out
    assert "Traceback" not in proc.stderr


@pytest.fixture
def npz_and_model(tmp_path):
    x, y = tiny_multiclass(n=90)
    np.savez(tmp_path / "data.npz", x_train=x, y_train=y, x_val=x[:30], y_val=y[:30])
    (tmp_path / "mymodels.py").write_text(textwrap.dedent("""
        import keras

        def build(hp):
            return keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                                     keras.layers.Dense(3, activation="softmax")])
    """))
    return tmp_path


def test_search_show_export(npz_and_model, capsys, monkeypatch):
    d = npz_and_model
    monkeypatch.chdir(d)
    assert cli.main(["search", "--data", "data.npz", "--model", "mymodels:build", "--space", "imbalanced_multiclass",
                     "--trials", "2", "--epochs", "1", "--tuner", "random", "--race", "0",
                     "--directory", "out"]) in (0, None)
    assert "[2/2] trial 1 " in capsys.readouterr().out
    assert cli.main(["show", str(d / "out")]) in (0, None)
    shown = capsys.readouterr().out
    assert "[baseline]" in shown and "[best]" in shown
    cli.main(["export", str(d / "out"), "-o", str(d / "best.json")])  # the --directory the search was given
    assert losstune.load_loss(d / "best.json").get_config()["task"] == "multiclass"


def test_an_error_exits_2_with_one_line_end_to_end(tmp_path):
    proc = subprocess.run(_command() + ["search", "--data", "missing.npz", "--model", "m:f", "--space", "x"],
                          capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.startswith("losstune")]
    assert lines == ["losstune search: error: --data: no such file: missing.npz"]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--data", "nope.npz", "--model", "mymodels:build", "--space", "imbalanced_multiclass"], "--data: no such file"),
    (["--data", "data.npz", "--model", "nomodule:f", "--space", "imbalanced_multiclass"], "cannot import module 'nomodule'"),
    (["--data", "data.npz", "--model", "mymodels", "--space", "imbalanced_multiclass"], "expected module:function"),
    (["--data", "data.npz", "--model", "mymodels:missing", "--space", "imbalanced_multiclass"], "has no function 'missing'"),
    (["--data", "data.npz", "--model", "mymodels:build", "--space", "no_such_space"], "unknown search space 'no_such_space'"),
    (["--data", "data.npz", "--model", "mymodels:build", "--space", "imbalanced_multiclass", "--tuner", "nope"],
     "`tuner` must be one of"),
    (["--data", "partial.npz", "--model", "mymodels:build", "--space", "imbalanced_multiclass"], "has no array 'y_val'"),
    (["--data", "data.npz", "--model", "mymodels:build", "--space", "imbalanced_multiclass", "--trials", "0"],
     "`max_trials` must be an integer >= 1"),
])
def test_search_errors_exit_2_with_one_line(args, message, npz_and_model, capsys, monkeypatch):
    monkeypatch.chdir(npz_and_model)
    np.savez(npz_and_model / "partial.npz", x_train=np.zeros((4, 8)), y_train=np.zeros(4), x_val=np.zeros((4, 8)))
    assert cli.main(["search"] + args + ["--directory", str(npz_and_model / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("losstune search: error:") and message in err[0], err


def test_show_on_a_non_search_directory(tmp_path, capsys):
    assert cli.main(["show", str(tmp_path)]) == 2
    assert "is not a losstune search directory" in capsys.readouterr().err


def test_spaces_lists_the_bundled_spaces(capsys):
    assert cli.main(["spaces"]) == 0
    out = capsys.readouterr().out
    for name in losstune.spaces.available():
        assert name in out


@pytest.mark.parametrize("verb", ["demo", "search", "show", "export", "spaces"])
def test_every_verb_has_help_with_an_example(verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([verb, "--help"])
    assert exit_info.value.code == 0
    assert "example: losstune " + verb in capsys.readouterr().out


def test_search_with_folds_needs_no_validation_arrays(npz_and_model, capsys, monkeypatch):
    d = npz_and_model
    monkeypatch.chdir(d)
    x, y = tiny_multiclass(n=90)
    np.savez(d / "train_only.npz", x_train=x, y_train=y)
    common = ["--model", "mymodels:build", "--space", "imbalanced_multiclass", "--epochs", "1", "--tuner", "random",
              "--folds", "2", "--race", "0"]
    assert cli.main(["search", "--data", "train_only.npz", "--trials", "2", "--directory", "cv", *common]) in (0, None)
    assert "(2 repeats)" in capsys.readouterr().out
    result = losstune.SearchResult.from_directory(d / "cv")
    assert [len(t.scores) for t in result.trials] == [2, 2]
    # A file with a validation set: --folds folds over both (every example scored once), and says so.
    xv, yv = tiny_multiclass(n=30, seed=1)
    np.savez(d / "both.npz", x_train=x, y_train=y, x_val=xv, y_val=yv)
    assert cli.main(["search", "--data", "both.npz", "--trials", "1", "--directory", "cv_both", *common]) in (0, None)
    assert "--folds 2: folding over x_train and x_val together (120 examples)" in capsys.readouterr().out
    counts = losstune.SearchResult.from_directory(d / "cv_both").context.class_counts
    assert list(counts) == np.bincount(np.concatenate([y, yv])).tolist()
