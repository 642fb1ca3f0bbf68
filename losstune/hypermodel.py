"""LossHyperModel: a KerasTuner HyperModel whose trials differ in their loss.

It respects KerasTuner's `build(hp)` / `fit(hp, model, *args, **kwargs)` contract, so it drops into any
KerasTuner tuner unchanged:

    hm = losstune.LossHyperModel(build_model, "imbalanced_multiclass", class_counts=counts)
    tuner = keras_tuner.RandomSearch(hm, objective=keras_tuner.Objective("val_macro_f1", "max"), ...)
    tuner.search(x, y, validation_data=(xv, yv), epochs=10)
"""

from __future__ import annotations

import math

import keras
import keras_tuner

from losstune import inputs, tasks
from losstune.lossspace import LossSpace
from losstune.optimizers import fresh_optimizer
from losstune.reweighting import DeferredReweighting, Schedule, start_epoch


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite, and remembers why."""

    def __init__(self):
        super().__init__()
        self.failure = None

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get("loss")
        if value is not None and not math.isfinite(float(value)):
            self.failure = f"training loss became {float(value)} at batch {batch} of epoch {self._epoch}"
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


class LossHyperModel(keras_tuner.HyperModel):
    """A HyperModel that compiles the user's model with each trial's loss.

    Args:
        build_model: `callable(hp) -> keras.Model` (it may declare its own hyperparameters), or a
            `keras.Model`, cloned for each trial with its initial weights copied.
        space: a `LossSpace`, a bundled space name or a path to a `.toml` file.
        task: overrides the space's task (rarely needed).
        class_counts: training examples per class (positives per label for multilabel), for the class-weight
            modifier and the families that use class statistics (LDAM, logit adjustment, class-balanced).
        from_logits: whether the model outputs logits (True) or probabilities (False).
        optimizer: an optimizer name, config dict or instance; a fresh copy is made for every model.
        metrics: extra metrics (names or instances, copied for every model) besides the task's defaults.
        seed: every model starts from the same initial weights and sees the same data order for a seed.
        folds: None, or k: `fit` trains on k-1 folds of the (x, y) it is given and validates on the remaining
            one (stratified by class for classification), execution e of a trial taking fold e % k; run k
            executions per trial (`executions_per_trial=k`) to score every fold.
    """

    def __init__(
        self,
        build_model,
        space,
        *,
        task=None,
        class_counts=None,
        from_logits=False,
        optimizer="adam",
        metrics=None,
        seed=0,
        folds=None,
        name=None,
        tunable=True,
    ):
        super().__init__(name=name, tunable=tunable)
        if not (callable(build_model) or isinstance(build_model, keras.Model)):
            raise ValueError(
                f"`build_model` must be a callable(hp) -> keras.Model or a keras.Model, got {build_model!r}."
            )
        self.build_model = build_model
        self.space = LossSpace.coerce(space)
        self.task = tasks.get(task) if task is not None else self.space.task
        self.class_counts = None if class_counts is None else [float(c) for c in class_counts]
        self.from_logits = bool(from_logits)
        self.optimizer = optimizer
        self.metrics = list(metrics or [])
        self.seed = int(seed)
        if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
            raise ValueError(f"`folds` must be None or an integer >= 2, got {folds!r}.")
        self.folds = folds
        # Per-class weights of the objective metric (the balanced prior: tasks.Task.prior_weights), or None.
        self.metric_class_weights = None
        # The execution (repeat) that KerasTuner's own loop is running: set by losstune's tuner mixin in its
        # per-execution hook, the one place KerasTuner tells which execution comes next. losstune's own
        # callers pass `execution=` instead.
        self.execution = 0

    # --- KerasTuner contract -------------------------------------------------------------------------
    def declare_hyperparameters(self, hp):
        self.space.declare(hp)

    def build(self, hp, execution=None):
        """The user's model for `hp`, compiled with the trial's loss; initial weights from the seed of
        `execution` (default: the execution KerasTuner is running)."""
        trial_loss = self.space.declare(hp)
        keras.utils.set_random_seed(self.seed_for(execution))
        model = self.user_model(hp)
        loss = trial_loss.build(self.task, class_counts=self.class_counts, from_logits=self.from_logits)
        model.compile(optimizer=fresh_optimizer(self.optimizer), loss=loss, metrics=self.fresh_metrics(model))
        return model

    def fit(self, hp, model, *args, execution=None, **kwargs):
        """`model.fit(*args, **kwargs)` with the data order of `execution`'s seed (default: the execution
        KerasTuner is running) and, with `folds`, that execution's fold; a non-finite loss fails the trial."""
        execution = self.execution if execution is None else execution
        keras.utils.set_random_seed(self.seed_for(execution))  # the same data order for every trial
        if self.folds:
            args, kwargs = self._fold(args, kwargs, execution)
        guard = NonFiniteLossGuard()
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [guard]
        schedule = self.loss_schedule(hp, kwargs.get("epochs", 1))
        if schedule is not None:
            kwargs["callbacks"].append(DeferredReweighting(schedule))
        history = model.fit(*args, **kwargs)
        if guard.failure:
            # Fails the trial without retry; the search goes on with the next one.
            raise keras_tuner.errors.FailedTrialError(guard.failure)
        return history

    # --- helpers -------------------------------------------------------------------------------------
    def loss_schedule(self, hp, epochs):
        """The trial's deferred re-weighting over `epochs` (a `reweighting.Schedule`: class weights off, then
        on from the trial's `class_weights/start` fraction of the epochs), or None when it has none."""
        if hp is None:
            return None
        trial_loss = self.space.trial_loss({k: v for k, v in hp.values.items() if hp.is_active(k)})
        if not trial_loss.deferred:
            return None
        loss = trial_loss.build(self.task, class_counts=self.class_counts, from_logits=self.from_logits)
        return Schedule(loss, start_epoch(trial_loss.start, epochs))

    def seed_for(self, execution=None):
        """The seed of `execution` (default: the execution KerasTuner is running): executions differ in it."""
        return self.seed + (self.execution if execution is None else int(execution))

    def execution_data(self, x, y, validation_data, execution=None):
        """(x, y, validation_data) of `execution`: as given, or with `folds` its fold of (x, y)."""
        execution = self.execution if execution is None else execution
        if not self.folds:
            return x, y, validation_data
        if x is None or y is None or inputs.is_dataset(x):
            raise ValueError("`folds` needs x and y as arrays (not a tf.data.Dataset) to cut its folds from.")
        if validation_data is not None:
            raise ValueError("`folds` cuts the validation data from (x, y); pass no `validation_data`.")
        train, val = self.fold_split(y, execution)
        return inputs.take(x, train), inputs.take(y, train), (inputs.take(x, val), inputs.take(y, val))

    def fold_split(self, y, execution):
        """(training indices, validation indices) of `execution`'s fold of the labels `y` (`folds` set): stratified
        k-fold with the HyperModel's seed, execution e taking fold e % k."""
        return inputs.fold_indices(len(y), self.folds, self.seed, self.task.strata(y))[execution % self.folds]

    def _fold(self, args, kwargs, execution):
        """`fit`'s arguments with this execution's fold cut from the (x, y) given to it."""
        args, kwargs = list(args), dict(kwargs)
        x = args.pop(0) if args else kwargs.pop("x", None)
        y = args.pop(0) if args else kwargs.pop("y", None)
        x, y, validation = self.execution_data(x, y, kwargs.pop("validation_data", None), execution)
        kwargs.update(x=x, y=y, validation_data=validation)
        return args, kwargs

    def user_model(self, hp):
        """The user's (uncompiled) model for `hp`."""
        if isinstance(self.build_model, keras.Model):
            model = keras.models.clone_model(self.build_model)
            model.set_weights(self.build_model.get_weights())
            return model
        model = self.build_model(hp)
        if not isinstance(model, keras.Model):
            raise ValueError(f"`build_model(hp)` must return a keras.Model, got {type(model).__name__}.")
        return model

    def fresh_metrics(self, model):
        num_outputs = model.outputs[0].shape[-1] if getattr(model, "outputs", None) else 1
        extra = [
            m.__class__.from_config(m.get_config()) if isinstance(m, keras.metrics.Metric) else m
            for m in self.metrics
        ]
        return self.task.metrics(from_logits=self.from_logits, num_outputs=num_outputs,
                                 class_weights=self.metric_class_weights) + extra

    def metric_names(self, num_outputs=1):
        """Names of the metrics every compiled model reports (for objective validation)."""
        names = [m.name for m in self.task.metrics(from_logits=self.from_logits, num_outputs=num_outputs)]
        for m in self.metrics:
            names.append(m.name if isinstance(m, keras.metrics.Metric) else str(m))
        return names
