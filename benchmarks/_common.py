"""Shared bits of the benchmark scripts: the machine line and a plain table printer."""

import os
import platform
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def machine():
    import keras
    import keras_tuner
    import tensorflow as tf

    return (f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, keras {keras.__version__}, "
            f"tensorflow {tf.__version__}, keras-tuner {keras_tuner.__version__}, backend {keras.backend.backend()}")


def table(rows, header):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(header, widths))]
    lines += ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def timed_search(*args, **kwargs):
    """`losstune.search(*args, **kwargs)` in a fresh temporary directory (removed afterwards), its output
    discarded: ({each trial's loss: its list of scores}, wall seconds)."""
    import io
    import shutil
    import tempfile
    import time

    import losstune

    directory = tempfile.mkdtemp()
    try:
        start = time.perf_counter()
        result = losstune.search(*args, directory=directory, stream=io.StringIO(), **kwargs)
        seconds = time.perf_counter() - start
        return {t.describe_loss(): list(t.scores) for t in result.trials if t.scores}, seconds
    finally:
        shutil.rmtree(directory, ignore_errors=True)
