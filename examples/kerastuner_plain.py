"""losstune's LossHyperModel inside a plain KerasTuner tuner, beside a hyperparameter of the model's own.

    python examples/kerastuner_plain.py [--fast]
"""

import argparse

import keras
import keras_tuner
import numpy as np

import losstune
from losstune import datasets


def build_model(hp):
    units = hp.Int("units", 16, 64, step=16)  # the model's own hyperparameter, tuned with the loss
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(units, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--directory", default="runs/examples/kerastuner_plain")
    args = parser.parse_args()
    trials, epochs = (3, 2) if args.fast else (20, 30)

    split = datasets.long_tailed_digits(imbalance=50, seed=0)
    counts = np.bincount(split.y_train, minlength=10)
    hypermodel = losstune.LossHyperModel(build_model, "imbalanced_multiclass", class_counts=counts)
    tuner = keras_tuner.RandomSearch(hypermodel, objective=keras_tuner.Objective("val_macro_f1", "max"),
                                     max_trials=trials, seed=1, directory=args.directory, project_name="kt",
                                     overwrite=True)
    tuner.search(split.x_train, split.y_train, validation_data=(split.x_val, split.y_val), epochs=epochs, verbose=0)
    best = tuner.get_best_hyperparameters(1)[0]
    loss = hypermodel.space.trial_loss(best.values).build("multiclass", class_counts=counts)
    print(f"best units: {best.get('units')}, best loss: {loss!r}")
    print(f"best val_macro_f1: {tuner.oracle.get_best_trials(1)[0].score:.4f}")


if __name__ == "__main__":
    main()
