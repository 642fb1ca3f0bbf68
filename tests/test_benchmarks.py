"""The benchmark scripts run in their --quick mode (opt-in: python -m pytest -m benchmark)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPECT = {"overhead.py": "losstune / KerasTuner", "loss_speed.py": "comparisons within 1.1x", "score_rule.py": "== recipes", "pruning.py": "epochs saved", "population_search.py": "same trial sequence on every side: yes", "population.py": "speed-up",
          "population_layers.py": "| Dense | yes |", "fold_members.py": "rank correlation (Spearman)",
          "repeat_members.py": "repeats as members against one repeat at a time",
          "quality.py": "95% CI", "prior_splits.py": "split-averaged test macro-F1",
          "conv_step.py": "the tf.data case's conv net"}


@pytest.mark.benchmark
@pytest.mark.parametrize("script", sorted(EXPECT))
def test_benchmark_quick(script):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert EXPECT[script] in proc.stdout and "machine:" in proc.stdout


@pytest.mark.benchmark
def test_conv_step_profile_quick():
    # benchmarks/conv_step.py --profile reads tf.profiler's trace (TensorFlow private (2.x): the XSpace protobuf,
    # "node:OpType" events on "tf_Compute" lines); a TensorFlow that changes it prints "no op trace" here.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "conv_step.py"), "--quick", "--profile"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no op trace" not in proc.stdout
    for part in ("convolution kernels", "BatchNormalization", "all ops", "wall time of the step",
                 "the tf.data case's conv net"):
        assert part in proc.stdout, proc.stdout
