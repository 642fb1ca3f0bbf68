"""Every example runs in its fast mode."""

import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPECT = {
    "imbalanced_multiclass.py": "test macro-F1: best loss",
    "binary_imbalanced.py": "test PR-AUC with the best loss",
    "siamese_contrastive.py": "best margin:",
    "robust_regression.py": "[baseline]",
    "kerastuner_plain.py": "best val_macro_f1:",
}


def test_every_example_is_tested():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXPECT)


@pytest.mark.parametrize("script", sorted(EXPECT))
def test_example_runs_fast(script, tmp_path, capsys, monkeypatch):
    # in this process, as `python examples/<script> --fast` (a fresh interpreter would import TensorFlow again)
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", [script, "--fast", "--directory", str(tmp_path)])
    runpy.run_path(str(ROOT / "examples" / script), run_name="__main__")
    assert EXPECT[script] in capsys.readouterr().out
