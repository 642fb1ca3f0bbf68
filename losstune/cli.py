"""The `losstune` command: demo, search, show, export, spaces."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the terminal

_EXAMPLES = {
    "demo": "example: losstune demo --trials 12 --epochs 40 --directory runs/demo",
    "search": ("example: losstune search --data data.npz --model mymodels:build --space imbalanced_multiclass "
               "--trials 20 --epochs 10 --directory runs/mysearch\n"
               "data.npz holds x_train, y_train and optionally x_val, y_val (several inputs: x_train_0, x_train_1, ...);\n"
               "without x_val, y_val the search holds out 20% of the training data, or cuts --folds K\n"
               "(with them, --folds K folds over training and validation data together)."),
    "show": "example: losstune show runs/demo --plots",
    "export": "example: losstune export runs/demo -o best_loss.json",
    "spaces": "example: losstune spaces",
}


class UsageError(Exception):
    """A problem with the command line's input: reported in one line, exit status 2."""


def _population(text):
    """--population: an integer, or "auto"."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or auto, got {text!r}") from None


def _search_options(p, trials, epochs, directory, population=1):
    """The options `losstune demo` and `losstune search` share, with each verb's defaults."""
    p.add_argument("--tuner", default="bayesian", help="random | grid | bayesian | hyperband (default: %(default)s)")
    p.add_argument("--trials", type=int, default=trials, help="trials in all, the baseline included (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=epochs, help="epochs per trial (default: %(default)s)")
    p.add_argument("--objective", default=None, help="metric to rank trials by (default: the task's, e.g. val_macro_f1)")
    p.add_argument("--directory", default=directory, help="where the search lives; run again to resume (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, data order and tuner (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    p.add_argument("--score", default="last_quarter",
                   help="a training's score from its validation curve: last_quarter (mean of the last quarter "
                        "of the epochs) | best | last | mean_last_3 | mean_last_5 | mean_last_10 "
                        "(default: %(default)s)")
    p.add_argument("--repeats", type=int, default=1,
                   help="trainings per trial with different seeds; the score is their mean (default: %(default)s)")
    p.add_argument("--folds", type=int, default=None,
                   help="score each trial by stratified k-fold over the training data, and over x_val, y_val too "
                        "where the file has them (every example is scored once)")
    p.add_argument("--race", type=int, default=3,
                   help="the N best trials get repeats until each has 3, then the pick: the best mean, or the "
                        "best of the baseline and the recipes where it cannot be told apart (0: off; "
                        "default: %(default)s)")
    p.add_argument("--population", type=_population, default=population,
                   help="train K trials at once, vectorized over stacked weights, with their repeats or folds "
                        "as members too; auto: as many as fit (default: %(default)s)")
    p.add_argument("--prune", choices=["median", "halving"], default=None,
                   help="median: stop a trial whose objective falls below the median of earlier trials at the "
                        "same epoch; halving: successive halving, only the best third at each rung goes on")
    p.add_argument("--prior", choices=["validation", "balanced"], default=None,
                   help="the class prior scores estimate performance under: the validation set's own class "
                        "frequencies, or balanced classes (default: the space's own)")
    p.add_argument("--confirm-seeds", type=int, default=0,
                   help="retrain best and baseline with N fresh seeds and report a 95%% CI of the gain (default: off)")
    p.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    p.add_argument("-v", "--verbose", action="store_true", help="show Keras's progress bar for every epoch")


def _parser():
    parser = argparse.ArgumentParser(
        prog="losstune",
        description="Find the best loss function for a Keras model (a KerasTuner search over losses).",
        epilog="run 'losstune VERB --help' for each verb's options and an example.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name, help_text):
        return verbs.add_parser(name, help=help_text, description=help_text, epilog=_EXAMPLES[name],
                                formatter_class=argparse.RawDescriptionHelpFormatter)

    demo = verb("demo", "Run a real loss search on the bundled long-tailed digits dataset (imbalance 50:1).")
    _search_options(demo, trials=12, epochs=40, directory="runs/demo", population=6)
    demo.add_argument("--imbalance", type=float, default=50.0, help="largest / smallest class size (default: %(default)s)")

    search = verb("search", "Search the loss for your model on your data.")
    search.add_argument("--data", required=True, help=".npz file with x_train, y_train (and optionally x_val, y_val)")
    search.add_argument("--model", required=True, help="module:function; function(hp) returns a keras.Model")
    search.add_argument("--space", required=True, help="a bundled space name (see 'losstune spaces') or a .toml file")
    search.add_argument("--from-logits", action="store_true", help="the model outputs logits, not probabilities")
    _search_options(search, trials=20, epochs=10, directory="runs/losstune")

    show = verb("show", "Print a search's trials table, best vs baseline, the per-family summary and what mattered.")
    show.add_argument("dir", help="the search's --directory (or the project folder inside it)")
    show.add_argument("--plots", action="store_true",
                      help="also write PNG pictures (score against each hyperparameter per family, importance "
                           "bars) beside the search's best_loss.json, and print their paths")

    export = verb("export", "Write a search's best loss as a JSON config (load it with losstune.load_loss).")
    export.add_argument("dir", help="the search's --directory (or the project folder inside it)")
    export.add_argument("-o", "--output", default="best_loss.json", help="output file (default: %(default)s)")

    verb("spaces", "List the bundled search spaces.")
    return parser


def _load_npz(path):
    import numpy as np

    if not os.path.isfile(path):
        raise UsageError(f"--data: no such file: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001
        raise UsageError(f"--data: {path} is not a readable .npz file ({err})") from None
    arrays = {}
    for name in ("x_train", "y_train", "x_val", "y_val"):
        if name in archive.files:
            arrays[name] = archive[name]
            continue
        parts = sorted((k for k in archive.files if k.startswith(name + "_")), key=lambda k: int(k.rsplit("_", 1)[1]))
        if name in ("x_val", "y_val") and "x_val" not in archive.files and "y_val" not in archive.files \
                and not any(k.startswith("x_val_") for k in archive.files):
            continue  # no validation set: the search holds one out (or uses --folds)
        if not parts or not name.startswith("x"):
            raise UsageError(f"--data: {path} has no array {name!r} (it has {sorted(archive.files)}); "
                             f"it needs x_train, y_train, and x_val, y_val together or not at all")
        arrays[name] = [archive[k] for k in parts]
    return arrays


def _load_builder(spec):
    module_name, _, function = spec.partition(":")
    if not module_name or not function:
        raise UsageError(f"--model: expected module:function, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UsageError(f"--model: cannot import module {module_name!r}: {err}") from None
    builder = getattr(module, function, None)
    if not callable(builder):
        raise UsageError(f"--model: module {module_name!r} has no function {function!r}")
    return builder


def _joined(train, val):
    """Training and validation inputs as one: one array, or a list of arrays (one per model input)."""
    import numpy as np

    if isinstance(train, list):
        return [np.concatenate([a, b]) for a, b in zip(train, val)]
    return np.concatenate([train, val])


def _run_search(args, builder, data, space, from_logits):
    import losstune

    x, y = data["x_train"], data["y_train"]
    validation = (data["x_val"], data["y_val"]) if "x_val" in data else None
    if args.folds and validation is not None:  # folds score every example once: the validation set's too
        x, y = _joined(x, validation[0]), _joined(y, validation[1])
        validation = None
        print(f"--folds {args.folds}: folding over x_train and x_val together ({len(y)} examples)", flush=True)
    result = losstune.search(
        builder, x, y, validation_data=validation, space=space,
        objective=args.objective, tuner=args.tuner, max_trials=args.trials, epochs=args.epochs,
        seed=args.seed, directory=args.directory, overwrite=args.overwrite, from_logits=from_logits,
        batch_size=args.batch_size, confirm_seeds=args.confirm_seeds, verbose=1 if args.verbose else 0,
        score=args.score, executions_per_trial=args.repeats, folds=args.folds, race=args.race, prune=args.prune,
        prior=args.prior, population=args.population,
    )
    path = result.export()
    print()
    print(result.summary())
    print(f"best loss config: {path}")
    print(f"load it with:     loss = losstune.load_loss({path!r})")
    print(f"watch the trials: tensorboard --logdir {os.path.join(result.directory, 'logs')}")
    return result


def demo_model(hp=None):
    """The demo's model: a small MLP on 8x8 digit images."""
    import keras

    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])


def _demo(args):
    from losstune import datasets

    split = datasets.long_tailed_digits(imbalance=args.imbalance, seed=args.seed)
    print(f"long-tailed digits: {len(split.y_train)} training examples, imbalance {args.imbalance:g}:1, "
          f"balanced validation set of {len(split.y_val)}")
    data = {"x_train": split.x_train, "y_train": split.y_train, "x_val": split.x_val, "y_val": split.y_val}
    _run_search(args, demo_model, data, "imbalanced_multiclass", from_logits=False)


def _show(args):
    from losstune.result import SearchResult

    result = SearchResult.from_directory(args.dir)
    print(result.table())
    print()
    print(result.importance().text())
    if args.plots:
        print()
        for path in result.save_plots():
            print(f"wrote {path}")


def _export(args):
    from losstune.result import SearchResult

    path = SearchResult.from_directory(args.dir).export(args.output)
    print(f"wrote {path}")


def _spaces(args):
    from losstune import spaces

    for name, task, families, description in spaces.describe():
        print(f"{name:<24} {task:<11} {description or ', '.join(families)}")


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.verb == "demo":
            _demo(args)
        elif args.verb == "search":
            data = _load_npz(args.data)
            builder = _load_builder(args.model)
            _run_search(args, builder, data, args.space, args.from_logits)
        elif args.verb == "show":
            _show(args)
        elif args.verb == "export":
            _export(args)
        elif args.verb == "spaces":
            _spaces(args)
    except (UsageError, ValueError, RuntimeError, OSError) as err:
        message = " ".join(str(err).split())
        print(f"losstune {args.verb}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"losstune {args.verb}: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
