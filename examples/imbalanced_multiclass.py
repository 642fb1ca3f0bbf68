"""Long-tailed digits (imbalance 50:1): search the loss, then train with it and compare on the test set.

    python examples/imbalanced_multiclass.py            # 20 trials, 40 epochs (about a minute on 2 cores)
    python examples/imbalanced_multiclass.py --fast     # a smoke run
"""

import argparse

import keras
import numpy as np
from sklearn.metrics import f1_score

import losstune
from losstune import datasets


def build_model(hp=None):
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def test_macro_f1(loss, split, epochs, seed):
    keras.utils.set_random_seed(seed)
    model = build_model()
    model.compile(optimizer="adam", loss=loss)
    model.fit(split.x_train, split.y_train, epochs=epochs, batch_size=32, verbose=0)
    return f1_score(split.y_test, model.predict(split.x_test, verbose=0).argmax(1), average="macro")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--directory", default="runs/examples/imbalanced_multiclass")
    args = parser.parse_args()
    trials, epochs = (3, 2) if args.fast else (20, 40)

    split = datasets.long_tailed_digits(imbalance=50, seed=0)
    result = losstune.search(build_model, split.x_train, split.y_train, validation_data=(split.x_val, split.y_val),
                             space="imbalanced_multiclass", max_trials=trials, epochs=epochs,
                             population=5,  # 5 trials trained at once, vectorized; the race's repeats too
                             directory=args.directory, overwrite=True)
    print(result.summary())
    path = result.export()
    loss = losstune.load_loss(path)  # what a training script does later
    best = test_macro_f1(loss, split, epochs, seed=1)
    plain = test_macro_f1(keras.losses.SparseCategoricalCrossentropy(), split, epochs, seed=1)
    print(f"test macro-F1: best loss {best:.4f}, plain cross-entropy {plain:.4f}")
    print(f"TensorBoard: tensorboard --logdir {result.directory}/logs")
    assert np.isfinite(best)


if __name__ == "__main__":
    main()
