"""Population training per layer: K members trained together against the same K trained one after the other
with `model.fit`, side by side in one run, for each layer of tests/test_population_layers.py in a small model
(tests/helpers.LAYER_CASES: Input -> the layer -> Flatten -> Dense softmax).

Both sides do a trial's whole work but the tuner (benchmarks/population.py's `serial` and `population`): seed,
build, compile with the member's loss (mixed families and hyperparameters) and macro-F1, train with
validation after every epoch. The sides alternate which runs first from row to row. Where the members cannot
be one population (`vectorizable`), the row says why and times the serial side alone; "loop over members:
Conv3D" names the ops TensorFlow maps with a loop inside the population's step (no vectorized form).

    python benchmarks/population_layers.py           # K = 8, 512 + 128 examples, 3 epochs, every layer
    python benchmarks/population_layers.py --quick   # K = 2, 64 + 32 examples, 1 epoch, 3 layers
"""

import argparse
import time

import _common
import numpy as np
from population import agreement, compiled, member_losses, population, serial

from losstune.population import vectorizable
from tests.helpers import LayerSizes, layer_data, layer_model, pfor_loops

SMALL = LayerSizes(16, 100, flat=(64,), sequence=(24, 8), image=(16, 16, 3), volume=(8, 8, 8, 1), tokens=(24,))
CLASSES = 10
# (layer, optimizer): the rows of tests/test_population_layers.py
ROWS = [(name, "adam") for name in (
    "Dense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose",
    "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "BatchNormalization", "LayerNormalization",
    "GroupNormalization", "Embedding")] + [("Embedding", "sgd")] + [(name, "adam") for name in (
        "LSTM", "GRU", "MultiHeadAttention", "Dropout", "GaussianNoise", "RandomFlip", "RandomTranslation",
        "RandomRotation", "RandomZoom", "RandomContrast")]


def measure(layer, optimizer, k, n, epochs, order):
    """One row: (population? or why not, max |member - solo| over weights, serial s, population s)."""
    x, y = layer_data(layer, SMALL, n + n // 4, classes=CLASSES)
    data = (x[:n], y[:n], x[n:], y[n:])
    losses = member_losses(k, np.bincount(y[:n], minlength=CLASSES).astype("float64"))

    def builder():
        return layer_model(layer, SMALL, classes=CLASSES)

    reason = vectorizable(compiled(builder, "sparse_categorical_crossentropy", optimizer))
    times, runs = {}, {}
    for side in ([] if reason else order):
        start = time.perf_counter()
        if side == "serial":
            runs[side] = serial(builder, losses, data, epochs, optimizer)
        else:
            with pfor_loops() as loops:
                runs[side] = population(builder, losses, data, epochs, optimizer)
        times[side] = time.perf_counter() - start
    if reason:
        start = time.perf_counter()
        serial(builder, losses, data, epochs, optimizer)
        return f"no: {reason}", None, time.perf_counter() - start, None
    what = f"yes (loop over members: {', '.join(sorted(set(loops)))})" if loops else "yes"
    return what, agreement(runs["serial"], runs["population"])[0], times["serial"], times["population"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K = 2, 1 epoch, 3 layers (a smoke run)")
    args = parser.parse_args()
    k, n, epochs = (2, 64, 1) if args.quick else (8, 512, 3)
    rows = [("Dense", "adam"), ("Conv2D", "adam"), ("Embedding", "adam")] if args.quick else ROWS
    print(_common.machine())
    print(f"K = {k} members (mixed losses), {n} training / {n // 4} validation examples of random data, "
          f"{epochs} epochs, batch 32, validation every epoch; layer width {SMALL.width}, inputs {SMALL.shapes}")
    lines = ["| layer | population? | max \\|member - solo\\| | serial s | population s | speed-up |",
             "|---|---|---|---|---|---|"]
    for i, (layer, optimizer) in enumerate(rows):
        order = ("serial", "population") if i % 2 == 0 else ("population", "serial")
        what, dw, s, p = measure(layer, optimizer, k, n, epochs, order)
        name = layer if optimizer == "adam" else f"{layer} ({optimizer.upper()})"
        lines.append(f"| {name} | {what} | {'-' if dw is None else f'{dw:.1e}'} | {s:.1f} | "
                     f"{'-' if p is None else f'{p:.1f}'} | {'-' if p is None else f'{s / p:.1f}x'} |")
        print(f"  {lines[-1]}", flush=True)
    print("\n".join(lines))
    print("serial s / population s: wall time for all K trials (build, compile, train, validate); speed-up = "
          "serial / population. max |member - solo|: the largest difference of any weight (moving statistics "
          "included) between a member and its serial twin after the last epoch.")


if __name__ == "__main__":
    main()
