import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# The heaviest test files first (estimated CPU seconds on 2 cores: test_search about 190, test_examples and
# test_population_search about 150, down to test_population_package about 40), so that pytest-xdist's
# `--dist loadfile` hands them out first and the run does not end with one worker alone on a long file.
# pyproject's addopts pass `--no-loadscope-reorder`: xdist's default reorder (by number of tests per file)
# would put the few-test, slow files (the distributed and the example runs) last. Files not listed keep their
# order after these.
HEAVIEST_FIRST = ["test_search.py", "test_examples.py", "test_population_search.py", "test_population_tuners.py",
                  "test_cli.py", "test_population_jax.py", "test_population_layers.py", "test_population_folds.py",
                  "test_population.py",
                  "test_distributed.py", "test_reweighting.py", "test_population_inputs.py", "test_tensorboard.py",
                  "test_pruning.py", "test_sampling.py", "test_failures.py", "test_importance.py",
                  "test_tensorboard_server.py", "test_quality.py", "test_population_package.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
