"""A model compiled with a losstune loss reloads in a fresh process once `import losstune` has run."""

import os
import subprocess
import sys
import textwrap

import keras

import losstune

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

# One fresh process: first without `import losstune` (Keras cannot know the class), then with it.
LOAD = textwrap.dedent("""
    import sys, keras
    try:
        keras.saving.load_model(sys.argv[1])
    except Exception as error:
        print("WITHOUT IMPORT", type(error).__name__, "FocalCrossentropy" in str(error))
    import losstune  # registers losstune's losses with Keras
    model = keras.saving.load_model(sys.argv[1])
    print("LOSS", type(model.loss).__name__, model.loss.get_config()["gamma"])
""")


def test_saved_model_reloads_after_import_losstune(tmp_path):
    path = str(tmp_path / "model.keras")
    # Saved here; only the loading needs a fresh process (one that has not imported losstune yet).
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss=losstune.families.get("focal").build({"gamma": 1.5}, task="multiclass"))
    model.save(path)
    loaded = subprocess.run([sys.executable, "-c", LOAD, path], env=ENV, timeout=120, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    # Without the import the load fails naming the class (the README says to import losstune first); with
    # it, the loss comes back with its hyperparameter.
    assert "WITHOUT IMPORT TypeError True" in loaded.stdout, loaded.stdout
    assert "LOSS FocalCrossentropy 1.5" in loaded.stdout
