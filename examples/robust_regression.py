"""Regression with 10% gross outliers in the training targets: MSE vs Huber, log-cosh and quantile losses,
ranked by validation MAE on clean targets.

    python examples/robust_regression.py [--fast]
"""

import argparse

import keras

import losstune
from losstune import datasets


def build_model(hp=None):
    return keras.Sequential([keras.Input((10,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--directory", default="runs/examples/robust_regression")
    args = parser.parse_args()
    trials, epochs = (3, 2) if args.fast else (15, 60)

    split = datasets.regression_with_outliers(outlier_fraction=0.1, seed=0)
    result = losstune.search(build_model, split.x_train, split.y_train, validation_data=(split.x_val, split.y_val),
                             space="robust_regression", tuner="random", max_trials=trials, epochs=epochs,
                             batch_size=16, population=5,  # 5 trials trained at once, vectorized
                             directory=args.directory, overwrite=True)
    print(result.table())
    print(f"TensorBoard: tensorboard --logdir {result.directory}/logs")


if __name__ == "__main__":
    main()
