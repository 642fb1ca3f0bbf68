"""The KerasTuner private names losstune relies on (read from keras-tuner 1.4.x).

Each test fails loudly when an upgrade of KerasTuner changes one, naming what losstune would lose.
"""

import inspect

from keras_tuner.src import config as kt_config
from keras_tuner.src.engine import base_tuner


def test_trial_traceback_printing_is_switched_by_the_debug_flag():
    # losstune.search sets it to False so a failed trial prints one line, not KerasTuner's traceback.
    assert isinstance(kt_config.DEBUG, bool)
    source = inspect.getsource(base_tuner.BaseTuner._try_run_and_update_trial)
    assert "config_module.DEBUG" in source and "traceback.print_exc()" in source
