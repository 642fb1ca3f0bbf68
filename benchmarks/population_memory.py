"""Population memory: peak resident memory per member against a solo trial, and what K fits.

Each measurement runs in a fresh process: load the digits, build and compile the members, note the resident
memory, train 2 epochs (a population of K members, or one solo `fit`), and read the process's peak resident
memory. The increase over the pre-training level is the training's own memory; divided by K it is the cost of
one member. Models: the digits MLP with 64 and with 1,024 hidden units.

    python benchmarks/population_memory.py
    python benchmarks/population_memory.py --quick
"""

import argparse
import json
import os
import subprocess
import sys

import _common

CHILD = r"""
import json, resource, sys
import keras, numpy as np
from sklearn.datasets import load_digits
import losstune
from losstune import objectives
from losstune.population import Member, train_population
k, hidden = int(sys.argv[1]), int(sys.argv[2])
d = load_digits()
x, y = (d.data / 16).astype("float32"), d.target
def build():
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(hidden, activation="relu"),
                          keras.layers.Dense(10, activation="softmax")])
    loss = losstune.families.get("focal").build({"gamma": 1.0 + 0.1 * len(models)}, task="multiclass")
    m.compile(optimizer="adam", loss=loss, metrics=[objectives.MacroF1()])
    return m
models = []
for _ in range(max(k, 1)):
    models.append(build())
params = models[0].count_params()
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
before = rss()
if k == 0:  # solo: one model.fit
    keras.utils.set_random_seed(0)
    models[0].fit(x[:1400], y[:1400], validation_data=(x[1400:], y[1400:]), epochs=2, batch_size=32, verbose=0)
else:
    train_population([Member(m) for m in models], x[:1400], y[:1400], validation_data=(x[1400:], y[1400:]),
                     epochs=2, batch_size=32, seed=0)
print("RESULT" + json.dumps({"before": before, "peak": rss(), "params": params}))
"""


def measure(k, hidden):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(k), str(hidden)], capture_output=True, text=True,
                          env=env, cwd=os.path.dirname(os.path.abspath(__file__)), timeout=900)
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    if not line:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(line[0][len("RESULT"):])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 hidden units, K = 4 only")
    args = parser.parse_args()
    cases = [(64, (4,))] if args.quick else [(64, (8, 32)), (1024, (8, 32))]
    print(_common.machine())
    rows = []
    for hidden, sizes in cases:
        solo = measure(0, hidden)
        solo_mb = (solo["peak"] - solo["before"]) / 2 ** 20
        rows.append((f"MLP {hidden} hidden ({solo['params']:,} params)", "solo fit", f"{solo_mb:.1f}", f"{solo_mb:.1f}",
                     "1.00"))
        for k in sizes:
            r = measure(k, hidden)
            mb = (r["peak"] - r["before"]) / 2 ** 20
            rows.append(("", f"population K={k}", f"{mb:.1f}", f"{mb / k:.2f}", f"{mb / k / max(solo_mb, 1e-9):.2f}"))
    print(_common.table(rows, ("model", "training", "peak increase MB", "per member MB", "per member / solo")))
    print("\nper-member memory: see the table; what K fits = free memory / per-member MB")


if __name__ == "__main__":
    main()
