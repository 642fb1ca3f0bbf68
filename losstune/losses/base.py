"""Shared machinery of every losstune loss: label handling, logits, class weights, validation, config.

Every loss follows Keras's own pattern (`keras/src/losses/losses.py`): a pure function written in
`keras.ops` that returns one loss value per sample (`fn`), plus a thin `keras.losses.Loss` subclass of
`LosstuneLoss` that declares the family and its hyperparameters once; its constructor, checks, docstring
"Args", `get_config` and `call` are derived from that declaration here.

Tasks and label conventions (see README):

* ``"binary"``     -- y in {0, 1}, shape (n,) or (n, 1); y_pred one probability or logit per sample.
* ``"multilabel"`` -- y a 0/1 matrix (n, C); y_pred C independent probabilities or logits.
* ``"multiclass"`` -- y integer ids (n,) / (n, 1) or one-hot (n, C); y_pred C probabilities or logits.
* ``"pairs"``      -- y 1 = similar, 0 = dissimilar; y_pred a distance >= 0, shape (n,) or (n, 1).
* ``"embedding"``  -- y integer class ids (n,); y_pred an embedding (n, d).
* ``"regression"`` -- real targets and predictions.
"""

from __future__ import annotations

import inspect
import math
import textwrap

import keras
from keras import ops

from losstune.losses.hyperparameters import Hyperparameter, check_choice, check_number

CLASSIFICATION_TASKS = ("binary", "multiclass", "multilabel")
TASKS = ("binary", "multiclass", "multilabel", "pairs", "embedding", "regression")


# --------------------------------------------------------------------------------------------------
# Validation at the boundary: every message names the family, the argument, the value and what is allowed.
# --------------------------------------------------------------------------------------------------
def check_task(family, task, allowed):
    return check_choice(family, "task", task, allowed)


def check_class_weights(family, class_weights, task):
    """Class weights are a list of positive floats (or None); returned as a tuple of floats."""
    if class_weights is None:
        return None
    if task not in CLASSIFICATION_TASKS:
        raise ValueError(
            f"{family}: `class_weights` apply to the tasks {list(CLASSIFICATION_TASKS)}, "
            f"got task {task!r}."
        )
    try:
        weights = [float(w) for w in class_weights]
    except (TypeError, ValueError):
        raise ValueError(f"{family}: `class_weights` must be a list of numbers, got {class_weights!r}.")
    if not weights or any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(
            f"{family}: `class_weights` must be a non-empty list of finite numbers >= 0, "
            f"got {class_weights!r}."
        )
    if task == "binary" and len(weights) != 2:
        raise ValueError(
            f"{family}: `class_weights` for task 'binary' holds 2 values (class 0, class 1), "
            f"got {len(weights)}."
        )
    return tuple(weights)


def check_class_counts(family, class_counts, task):
    """Class counts are training examples per class, each >= 0; returned as a tuple of floats."""
    try:
        counts = list(class_counts)
    except TypeError:
        raise ValueError(f"{family}: `class_counts` must be a list of counts, got {class_counts!r}.") from None
    counts = [check_number(family, "class_counts", c, 0.0) for c in counts]
    if task == "binary" and len(counts) != 2:
        raise ValueError(f"{family}: `class_counts` for task 'binary' holds 2 values, got {len(counts)}.")
    return tuple(counts)


# --------------------------------------------------------------------------------------------------
# Labels and logits. Everything is computed from logits so it is stable on every backend: the
# probability inputs are turned into logits once, after clipping to [eps, 1 - eps].
# --------------------------------------------------------------------------------------------------
def binary_logits(y_pred, from_logits):
    """Logits of independent sigmoid outputs (binary and multilabel)."""
    y_pred = ops.convert_to_tensor(y_pred)
    if from_logits:
        return y_pred
    eps = keras.config.epsilon()
    p = ops.clip(y_pred, eps, 1.0 - eps)
    return ops.log(p) - ops.log1p(-p)


def class_log_probs(y_pred, from_logits):
    """log softmax probabilities of a C-way classifier, shape (n, C)."""
    y_pred = ops.convert_to_tensor(y_pred)
    if from_logits:
        return ops.log_softmax(y_pred, axis=-1)
    eps = keras.config.epsilon()
    p = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
    return ops.log(ops.clip(p, eps, 1.0))


def multiclass_targets(y_true, y_pred):
    """One-hot (or soft) targets of shape (n, C) from integer ids or one-hot labels.

    `Loss.__call__` casts labels to the loss dtype, so integer ids arrive as floats: they are cast back.
    """
    y_true = ops.convert_to_tensor(y_true)
    num_classes = y_pred.shape[-1]
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == num_classes and num_classes != 1:
        return ops.cast(y_true, y_pred.dtype)
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    ids = ops.cast(ops.round(ops.cast(y_true, "float32")), "int32")
    return ops.one_hot(ids, num_classes, dtype=y_pred.dtype)


def sparse_ids(y_true, y_pred):
    """Integer class ids (n,) when `y_true` holds ids for the C-way `y_pred`; None for one-hot labels."""
    y_true = ops.convert_to_tensor(y_true)
    num_classes = y_pred.shape[-1]
    if len(y_true.shape) == len(y_pred.shape) and (y_true.shape[-1] != 1 or num_classes == 1):
        return None
    if len(y_true.shape) == len(y_pred.shape):
        y_true = ops.squeeze(y_true, axis=-1)
    return ops.cast(ops.round(ops.cast(y_true, "float32")), "int32")


def binary_targets(y_true, y_pred):
    """Labels shaped like y_pred, for elementwise sigmoid losses (binary, multilabel, pairs)."""
    y_true = ops.cast(ops.convert_to_tensor(y_true), y_pred.dtype)
    if len(y_true.shape) == len(y_pred.shape) - 1:
        y_true = ops.expand_dims(y_true, -1)
    elif len(y_true.shape) == len(y_pred.shape) + 1 and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, -1)
    return y_true


def smooth_labels(targets, label_smoothing, task):
    """Label smoothing as Keras does it: towards uniform over C classes, or towards 0.5 for sigmoids."""
    if isinstance(label_smoothing, (int, float)) and not label_smoothing:  # a tensor (a population's) goes on
        return targets
    if task == "multiclass":
        num_classes = ops.cast(ops.shape(targets)[-1], targets.dtype)
        return targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return targets * (1.0 - label_smoothing) + 0.5 * label_smoothing


def element_class_weights(targets, class_weights, task):
    """Weight of each loss element from the per-class weights.

    * multiclass: a sample of class c weighs w_c (soft targets mix the weights), shape (n, 1).
    * binary: a sample of class 1 weighs w_1, of class 0 weighs w_0, shape like `targets`.
    * multilabel: the positive element of label c weighs w_c, negatives weigh 1, shape like `targets`.
    """
    w = ops.convert_to_tensor(class_weights, dtype=targets.dtype)
    if task == "multiclass":
        return ops.matmul(targets, w[:, None])  # one pass, no (n, C) temporary
    if task == "binary":
        return targets * w[1] + (1.0 - targets) * w[0]
    return targets * w + (1.0 - targets)


def reduce_elements(element_loss, targets, class_weights, task):
    """Per-sample loss from per-element losses: class-weight the elements, then sum (multiclass)
    or average (sigmoid outputs, as Keras's binary cross-entropy does) over the last axis."""
    if class_weights is not None:
        element_loss = element_loss * element_class_weights(targets, class_weights, task)
    if task == "multiclass":
        return ops.sum(element_loss, axis=-1)
    return ops.mean(element_loss, axis=-1)


def weight_samples(sample_loss, targets, class_weights, task):
    """Class-weight a per-sample loss of a multiclass loss whose value is not a sum over classes."""
    if class_weights is None:
        return sample_loss
    return sample_loss * ops.squeeze(element_class_weights(targets, class_weights, task), -1)


# --------------------------------------------------------------------------------------------------
# The Loss base class: a family's declaration, and everything derived from it.
# --------------------------------------------------------------------------------------------------
_CONTEXT_DOCS = {
    "class_counts": "training examples per class (binary: [n_negative, n_positive]); a search measures them "
                    "from the training labels.",
    "from_logits": "whether `y_pred` holds logits (else probabilities); default False.",
    "class_weights": "optional per-class weights, one per class (binary: [w_0, w_1]; multilabel: the weight "
                     "of each label's positives), see `losstune.class_weights_from_counts`; default None.",
}
_KERAS_ARGS = ("reduction", "name", "dtype")


class LosstuneLoss(keras.losses.Loss):
    """Thin `keras.losses.Loss` around a pure loss function, with its hyperparameters declared once.

    A loss family is one subclass that declares, as class attributes:

    * `family` (the registry name), `tasks` (the first is the default), `paper`, `summary`,
      `needs_class_counts` (the constructor then takes `class_counts` first) and `weightable` (it takes
      `class_weights`);
    * `hyperparameters`: a tuple of `Hyperparameter` (default, valid range, suggested search range, paper
      setting, doc);
    * `fn`: the pure per-sample loss, `fn(y_true, y_pred, **kwargs)` in `keras.ops`, as a staticmethod. Its
      keyword arguments are named after the constructor arguments it uses (hyperparameters, `task`,
      `from_logits`, `class_weights`, `class_counts`) or after the per-instance state `derived` computes
      once from them (LDAM's margins, logit adjustment's log prior).

    From this the class gets, at creation: its constructor (hyperparameters, then `task`, then `from_logits`
    for classification tasks, `class_weights` when weightable, then Keras's `reduction`, `name`, `dtype`),
    which validates every argument against the declaration; the "Args" section of its docstring;
    `get_config` (exactly the constructor arguments); and `call`, the same for every class:
    `fn(y_true, y_pred, **kwargs)`. `losstune.families` builds the registry from these declarations.
    """

    family = None
    tasks = ()
    hyperparameters = ()
    paper = ""
    summary = ""
    needs_class_counts = False
    weightable = True
    # {hyperparameter: value} that turns the family's own re-weighting off (class-balanced's beta = 0), or
    # None: deferred re-weighting trains with these values first, then with the trial's own.
    reweighting_off = None
    fn = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("family"):
            _declare(cls)

    @classmethod
    def context_arguments(cls):
        """The constructor arguments that are not hyperparameters nor Keras's: e.g. ("task", "from_logits")."""
        names = ["class_counts"] if cls.needs_class_counts else []
        names.append("task")
        if set(cls.tasks) & set(CLASSIFICATION_TASKS):
            names.append("from_logits")
        if cls.weightable:
            names.append("class_weights")
        return tuple(names)

    def __init__(self, *args, **kwargs):
        cls = type(self)
        if cls._signature is None:
            raise TypeError(f"{cls.__name__} declares no loss `family`; see `LosstuneLoss`.")
        arguments = cls._signature.bind(*args, **kwargs)
        arguments.apply_defaults()
        arguments = dict(arguments.arguments)
        super().__init__(**{k: arguments.pop(k) for k in _KERAS_ARGS})
        family = cls.family
        task = check_task(family, arguments["task"], cls.tasks)
        config = {"task": task}
        if "from_logits" in arguments:
            config["from_logits"] = bool(arguments["from_logits"])
        if "class_weights" in arguments:
            config["class_weights"] = check_class_weights(family, arguments["class_weights"], task)
        if "class_counts" in arguments:
            config["class_counts"] = check_class_counts(family, arguments["class_counts"], task)
        for h in cls.hyperparameters:
            config[h.name] = h.validate(family, arguments[h.name])
        self._config = config
        values = dict(config, **self.derived(config))
        names = values if cls._fn_names is None else cls._fn_names
        missing = [n for n in names if n not in values]
        if missing:
            raise TypeError(f"{cls.__name__}.fn takes {missing}: neither a constructor argument nor derived.")
        self._fn_kwargs = {n: values[n] for n in names}

    _signature = None  # the constructor's signature (without self), set at class creation
    _fn_names = None  # the keyword arguments `fn` takes (None: any)

    def derived(self, config):
        """Per-instance state of `fn` computed once from the validated constructor arguments (a dict of
        keyword arguments of `fn`); none by default."""
        return {}

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self._fn_kwargs)

    def get_config(self):
        config = super().get_config()
        for key, value in self._config.items():
            config[key] = list(value) if isinstance(value, tuple) else value
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._config.items())
        return f"{type(self).__name__}({args})"


def _declare(cls):
    """Check a family class's declaration; give it its constructor signature and docstring "Args"."""
    where = f"{cls.__name__} (family {cls.family!r})"
    unknown = set(cls.tasks) - set(TASKS)
    if not cls.tasks or unknown:
        raise TypeError(f"{where}: `tasks` must be a non-empty tuple of {list(TASKS)}, got {cls.tasks!r}.")
    if not all(isinstance(h, Hyperparameter) for h in cls.hyperparameters):
        raise TypeError(f"{where}: `hyperparameters` must be a tuple of Hyperparameter.")
    names = [h.name for h in cls.hyperparameters]
    context = cls.context_arguments()
    clash = {n for n in names if names.count(n) > 1} | (set(names) & set(context + _KERAS_ARGS))
    if clash:
        raise TypeError(f"{where}: hyperparameter names must be unique and not {list(context + _KERAS_ARGS)}: "
                        f"{sorted(clash)}.")
    if cls.fn is None:
        raise TypeError(f"{where}: `fn` (the pure per-sample loss) is not set.")
    fn_params = list(inspect.signature(cls.fn).parameters.values())[2:]
    cls._fn_names = None if any(p.kind is p.VAR_KEYWORD for p in fn_params) else tuple(p.name for p in fn_params)

    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD)]
    if cls.needs_class_counts:
        params.append(P("class_counts", P.POSITIONAL_OR_KEYWORD))
    params += [P(h.name, P.POSITIONAL_OR_KEYWORD, default=h.default) for h in cls.hyperparameters]
    params.append(P("task", P.POSITIONAL_OR_KEYWORD, default=cls.tasks[0]))
    params += [P(n, P.POSITIONAL_OR_KEYWORD, default={"from_logits": False}.get(n))
               for n in ("from_logits", "class_weights") if n in context]
    params += [P("reduction", P.POSITIONAL_OR_KEYWORD, default="sum_over_batch_size"),
               P("name", P.POSITIONAL_OR_KEYWORD, default=cls.family),
               P("dtype", P.POSITIONAL_OR_KEYWORD, default=None)]
    signature = inspect.Signature(params)
    cls._signature = signature.replace(parameters=params[1:])

    def __init__(self, *args, **kwargs):
        LosstuneLoss.__init__(self, *args, **kwargs)

    __init__.__signature__ = signature
    __init__.__doc__ = f"A {cls.family} loss: the arguments are in the class docstring's Args."
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__module__ = cls.__module__
    cls.__init__ = __init__
    cls.__doc__ = args_docstring(cls)


def args_docstring(cls):
    """The class's own docstring followed by an "Args" section written from its declaration."""
    rows = []
    if cls.needs_class_counts:
        rows.append(("class_counts", _CONTEXT_DOCS["class_counts"]))
    rows += [(h.name, h.arg_doc()) for h in cls.hyperparameters]
    rows.append(("task", "one of " + ", ".join(repr(t) for t in cls.tasks) + f"; default {cls.tasks[0]!r}."))
    rows += [(n, _CONTEXT_DOCS[n]) for n in ("from_logits", "class_weights") if n in cls.context_arguments()]
    rows.append(("reduction, name, dtype", f"as for every `keras.losses.Loss`; `name` defaults to {cls.family!r}."))
    lines = ["Args:"]
    for name, text in rows:
        lines += textwrap.wrap(f"{name}: {text}", 110, initial_indent="    ", subsequent_indent="        ",
                               break_on_hyphens=False, break_long_words=False)
    own = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    return (own + "\n\n" if own else "") + "\n".join(lines)
