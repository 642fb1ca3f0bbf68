"""Imbalanced binary detection (digit 9 vs the rest, 5% positives): search the loss by validation PR-AUC.

    python examples/binary_imbalanced.py [--fast]
"""

import argparse

import keras

import losstune
from losstune import datasets


def build_model(hp=None):
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(1)])  # a logit


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--directory", default="runs/examples/binary_imbalanced")
    args = parser.parse_args()
    trials, epochs = (3, 2) if args.fast else (20, 30)

    split = datasets.imbalanced_binary_digits(positive=9, positive_fraction=0.05, seed=0)
    result = losstune.search(build_model, split.x_train, split.y_train, validation_data=(split.x_val, split.y_val),
                             space="imbalanced_binary", from_logits=True, max_trials=trials, epochs=epochs,
                             population=5,  # 5 trials trained at once, vectorized
                             directory=args.directory, overwrite=True)
    print(result.table())
    model = build_model()
    model.compile(optimizer="adam", loss=result.best_loss,
                  metrics=[keras.metrics.AUC(curve="PR", from_logits=True, name="pr_auc")])
    model.fit(split.x_train, split.y_train, epochs=epochs, verbose=0)
    print(f"test PR-AUC with the best loss: {model.evaluate(split.x_test, split.y_test, verbose=0)[1]:.4f}")
    print(f"TensorBoard: tensorboard --logdir {result.directory}/logs")


if __name__ == "__main__":
    main()
