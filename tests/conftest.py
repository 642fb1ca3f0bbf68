import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# The heaviest test files first (seconds of one CPU each, measured on 2 cores), so that pytest-xdist's
# `--dist loadfile` hands them out at the start and the run does not end with one worker alone on a long
# file. Files not listed keep their order after these.
HEAVIEST_FIRST = ["test_search.py", "test_population.py", "test_examples.py", "test_population_tuners.py",
                  "test_population_search.py", "test_population_layers.py", "test_reweighting.py",
                  "test_population_folds.py", "test_distributed.py", "test_cli.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
