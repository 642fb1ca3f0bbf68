"""A siamese network on digit pairs: tune the contrastive margin by verification ROC-AUC.

The model maps two images to the distance of their embeddings; y = 1 for a pair of the same digit.

    python examples/siamese_contrastive.py [--fast]
"""

import argparse

import keras

import losstune
from losstune import datasets


def build_model(hp=None):
    encoder = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(16)])
    a, b = keras.Input((64,)), keras.Input((64,))
    diff = keras.layers.Subtract()([encoder(a), encoder(b)])
    distance = keras.layers.Lambda(
        lambda d: keras.ops.sqrt(keras.ops.sum(keras.ops.square(d), axis=-1, keepdims=True) + 1e-9))(diff)
    return keras.Model([a, b], distance)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--directory", default="runs/examples/siamese_contrastive")
    args = parser.parse_args()
    trials, epochs, pairs = (3, 1, 400) if args.fast else (12, 15, 3000)

    split = datasets.digit_pairs(n_train=pairs, n_val=pairs // 3, n_test=pairs // 3, seed=0)
    result = losstune.search(build_model, split.x_train, split.y_train, validation_data=(split.x_val, split.y_val),
                             space="metric_learning", tuner="bayesian", max_trials=trials, epochs=epochs,
                             population=4,  # 4 trials trained at once, vectorized (two-input model too)
                             directory=args.directory, overwrite=True)
    print(result.table())
    print(f"best margin: {result.best_trial.params['margin']:.3f}")
    print(f"TensorBoard: tensorboard --logdir {result.directory}/logs")


if __name__ == "__main__":
    main()
