"""Every example runs in its fast mode."""

import os
import subprocess
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
def test_example_runs_fast(script, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--fast", "--directory", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert EXPECT[script] in proc.stdout
