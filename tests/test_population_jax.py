"""The population on the JAX backend: the checks of the population test files, run in one JAX interpreter
(starting one with JAX and TensorFlow costs about 8 s of CPU). Each file keeps its own script (`JAX_SCRIPT`,
next to the helpers it uses); here every script runs in a fresh namespace, with the test modules imported
afresh, and the dict it prints after "RESULT" is its result."""

import json

import pytest

from tests import (test_population, test_population_folds, test_population_inputs, test_population_layers,
                   test_population_package)
from tests.helpers import run_jax_script

SCRIPTS = {"members": test_population.JAX_SCRIPT, "folds": test_population_folds.JAX_SCRIPT,
           "inputs": test_population_inputs.JAX_SCRIPT, "layers": test_population_layers.JAX_SCRIPT,
           "engine": test_population_package.JAX_SCRIPT}

RUNNER = r"""
import contextlib, io, sys
from losstune.population import driver
restack = driver.RESTACK_COST
results = {}
for name, source in SCRIPTS.items():
    for module in [m for m in sys.modules if m.startswith("test_")]:
        del sys.modules[module]  # each script sees its test module as freshly imported
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(source, name, "exec"), {"__name__": "__main__"})
    driver.RESTACK_COST = restack  # a script may change it
    line = next(l for l in printed.getvalue().splitlines() if l.startswith("RESULT"))
    results[name] = json.loads(line[len("RESULT"):])
print("RESULT" + json.dumps(results))
"""


@pytest.fixture(scope="module")
def jax():
    pytest.importorskip("jax")
    return run_jax_script(f"import json\nSCRIPTS = json.loads({json.dumps(SCRIPTS)!r})\n" + RUNNER, timeout=900)


def test_members_match_solo_fits(jax):
    out = jax["members"]
    assert out["same_logs"], out
    assert out["dw"] <= test_population.ATOL and out["dh"] <= test_population.RTOL, out
    assert out["free"] > 0 and out["auto"] == 8, out  # population="auto" reads the host's free memory


def test_folds_as_members(jax):
    out = jax["folds"]
    assert out["same"] <= 1e-6 and out["moved"] > 1e-3 and out["f1"] <= 1e-5, out


def test_streams_as_fit_does(jax):
    out = jax["inputs"]
    assert out["arrays"] and out["PyDataset"] and out["restacked"], out
    assert out["dw"] <= 1e-5 and out["dh"] <= 1e-5 and out["seeds_dw"] <= 1e-5, out


def test_layers_train_as_alone(jax):
    out = dict(jax["layers"])
    assert "a layer does not vectorize: HostCall 'host': vmap is only supported" in out.pop("refusal", ""), out
    assert sorted(out) == sorted(row.id for row in test_population_layers.JAX_ROWS), out
    for name, (dw, variable, dh, logged) in out.items():
        assert dw <= test_population_layers.ATOL and dh <= test_population_layers.RTOL, (name, variable, dw,
                                                                                        logged, dh)


def test_the_jax_engine_traces_eagerly_under_the_same_retry(jax):
    out = jax["engine"]
    assert out["retried"] == [[True], [False]], out
    assert out["refused"] and out["refused"].startswith("a layer does not vectorize"), out
    assert out["untouched"], out
