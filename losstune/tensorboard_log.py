"""TensorBoard logging of a loss search: per-trial scalars, an HParams session per execution, a picture of
each trial's loss, and a summary run with best vs baseline.

Layout under the log directory:

    <logdir>/                       hparams_config: every hyperparameter with an explicit domain
    <logdir>/<trial_id>/            a picture of the trial's loss
    <logdir>/<trial_id>/execution<k>/{train,validation}   Keras's epoch scalars
    <logdir>/<trial_id>/execution<k>/                     HParams session (group = trial id), trial_score
    <logdir>/summary/               best vs baseline, per-family summary, importance (tables and pictures)

KerasTuner's own hook skips inactive conditional hyperparameters, and the HParams dashboard hides or
splits sessions whose hparam sets differ, so every session here carries every hyperparameter; an inactive
one holds the sentinel `INACTIVE_NUMBER` (-1.0) or `INACTIVE_TEXT` ("inactive"), and the
domain of a conditional hyperparameter includes it. Booleans are logged as the strings "true"/"false".
"""

from __future__ import annotations

import os

import numpy as np

INACTIVE_NUMBER = -1.0
INACTIVE_TEXT = "inactive"
TRIAL_SCORE = "trial_score"


def _tf():
    import tensorflow as tf

    return tf


def _hp_api():
    from tensorboard.plugins.hparams import api

    return api


def _searchable(hp):
    return not hp.name.startswith("tuner/")


def _domain(hp):
    """A TensorBoard domain for a KerasTuner hyperparameter; a conditional one's includes the sentinel."""
    api = _hp_api()
    kind = type(hp).__name__
    conditional = bool(getattr(hp, "conditions", None))
    text_sentinel = {INACTIVE_TEXT} if conditional else set()
    if kind == "Boolean":
        return api.Discrete(sorted({"true", "false"} | text_sentinel))
    if kind in ("Choice", "Fixed"):
        values = list(hp.values) if kind == "Choice" else [hp.value]
        if all(isinstance(v, bool) for v in values):
            return api.Discrete(sorted({"true", "false"} | text_sentinel))
        if all(isinstance(v, (int, float)) for v in values):
            return api.Discrete(sorted({float(v) for v in values} | ({INACTIVE_NUMBER} if conditional else set())))
        return api.Discrete(sorted({str(v) for v in values} | text_sentinel))
    if kind in ("Float", "Int"):
        low, high = float(hp.min_value), float(hp.max_value)
        if conditional:
            low, high = min(low, INACTIVE_NUMBER), max(high, INACTIVE_NUMBER)
        return api.RealInterval(low, high)
    return None


def _is_text(hp):
    kind = type(hp).__name__
    values = getattr(hp, "values", None) or ([hp.value] if kind == "Fixed" else [])
    return kind == "Boolean" or any(isinstance(v, (bool, str)) for v in values)


def session_hparams(space_hps, values):
    """Every searchable hyperparameter's value for one trial; inactive ones get the sentinel."""
    out = {}
    for hp in space_hps:
        if not _searchable(hp):
            continue
        value = values.get(hp.name)
        if value is None:
            out[hp.name] = INACTIVE_TEXT if _is_text(hp) else INACTIVE_NUMBER
        elif isinstance(value, bool):
            out[hp.name] = "true" if value else "false"
        elif isinstance(value, (int, float)):
            out[hp.name] = float(value)
        else:
            out[hp.name] = str(value)
    return out


def write_hparams_config(logdir, space_hps, objective_name, calibration=None):
    """The explicit HParams experiment config: every hyperparameter with its domain; the metrics (the
    objective, and the calibration metric's per-epoch values where the task has one)."""
    tf, api = _tf(), _hp_api()
    hparams = [api.HParam(hp.name, _domain(hp)) for hp in space_hps if _searchable(hp)]
    metric_tag = objective_name[4:] if objective_name.startswith("val_") else objective_name
    group = "validation" if objective_name.startswith("val_") else "train"
    metrics = [
        api.Metric(TRIAL_SCORE, display_name=f"{objective_name} (trial score)"),
        api.Metric(f"epoch_{metric_tag}", group=group, display_name=f"{objective_name} per epoch"),
    ]
    if calibration:
        metrics.append(api.Metric(f"epoch_{calibration}", group="validation",
                                  display_name=f"val_{calibration} (calibration error) per epoch"))
    with tf.summary.create_file_writer(logdir).as_default():
        api.hparams_config(hparams=hparams, metrics=metrics)


def session_callback(execution_dir, hparams, group):
    """A Keras callback that opens the HParams session of one execution when training begins.

    The session is closed by `end_trial` with the trial's real status: TensorBoard keeps the first
    session-end record of a run, so none is written before the trial's outcome is known.
    """
    import keras

    class _SessionStart(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            tf = _tf()
            with tf.summary.create_file_writer(execution_dir).as_default():
                _hp_api().hparams(hparams, trial_id=group)

    return _SessionStart()


def end_trial(trial_dir, score, failed, message="", note=""):
    """After a trial: close each execution's session with its status; record the trial's score."""
    tf = _tf()
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import summary as hparams_summary

    if not os.path.isdir(trial_dir):
        return
    status = api_pb2.STATUS_FAILURE if failed else api_pb2.STATUS_SUCCESS
    for name in sorted(os.listdir(trial_dir)):
        execution_dir = os.path.join(trial_dir, name)
        if not (name.startswith("execution") and os.path.isdir(execution_dir)):
            continue
        with tf.summary.create_file_writer(execution_dir).as_default():
            pb = hparams_summary.session_end_pb(status)
            tf.summary.experimental.write_raw_pb(tf.constant(pb.SerializeToString()), step=0)
            if failed:
                tf.summary.text("failure", message or "trial failed", step=0)
            elif score is not None and np.isfinite(score):
                tf.summary.scalar(TRIAL_SCORE, float(score), step=0)
            if note:
                tf.summary.text("stopped_early", note, step=0)


def update_trial_score(trial_dir, score, step):
    """A later trial score (after racing added repeats) in the trial's first execution run, at `step`: the
    HParams dashboard shows a session metric's last value."""
    tf = _tf()
    execution_dir = os.path.join(trial_dir, "execution0")
    if np.isfinite(score) and os.path.isdir(execution_dir):
        with tf.summary.create_file_writer(execution_dir).as_default():
            tf.summary.scalar(TRIAL_SCORE, float(score), step=step)


def render_curves(curves, height=200, width=300):
    """A small RGB line plot (uint8, H x W x 3) of 1-D curves sharing one x axis; no text."""
    colors = [(31, 119, 180), (214, 39, 40), (127, 127, 127)]
    img = np.full((height, width, 3), 255, np.uint8)
    pad = 12
    img[height - pad, pad:width - pad] = 0
    img[pad:height - pad, pad] = 0
    finite = [c[np.isfinite(c)] for c in curves]
    top = max((float(np.percentile(f, 98)) for f in finite if f.size), default=1.0)
    bottom = min((float(f.min()) for f in finite if f.size), default=0.0)
    span = max(top - bottom, 1e-12)
    for k, curve in enumerate(curves):
        xs = np.linspace(pad, width - pad - 1, len(curve))
        fine_x = np.linspace(pad, width - pad - 1, (width - 2 * pad) * 4)
        fine_y = np.interp(fine_x, xs, np.nan_to_num(curve, nan=top, posinf=top))
        rows = (height - pad) - (np.clip(fine_y, bottom, top) - bottom) / span * (height - 2 * pad - 1)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                r = np.clip(rows.astype(int) + dr, 0, height - 1)
                c = np.clip(fine_x.astype(int) + dc, 0, width - 1)
                img[r, c] = colors[k % len(colors)]
    return img


def _write_image(tag, image, description=None):
    """An RGB picture (uint8, H x W x 3) at step 0 of the default writer, as `tf.summary.image` writes it, with
    the PNG encoded by Pillow: `tf.summary.image` runs TensorFlow's encoder under a `map_fn`, twice as slow
    inside a search (benchmarks/README.md)."""
    import io

    from PIL import Image
    from tensorboard.plugins.image import metadata

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    height, width = image.shape[:2]
    tf = _tf()
    tf.summary.write(tag, tf.constant([str(width).encode(), str(height).encode(), buffer.getvalue()]), step=0,
                     metadata=metadata.create_summary_metadata(display_name=None, description=description))


def write_trial_loss(trial_dir, loss, task, num_outputs, from_logits, description):
    """The trial's loss in its run: a picture of it along the task's axis (see tasks.py), and its class weights
    flattened to one scalar each."""
    tf = _tf()
    curve = task.loss_curves(loss, num_outputs, from_logits)
    weights = loss.get_config().get("class_weights") or []
    with tf.summary.create_file_writer(trial_dir).as_default():
        if curve is not None:
            _write_image("loss_curve", render_curves(curve[1]), description)
        for c, weight in enumerate(weights):
            tf.summary.scalar(f"class_weights/class_{c}", float(weight), step=0)


def write_summary(logdir, rows_markdown, best_score, baseline_score, texts=None, images=None):
    """The `summary` run: best vs baseline as scalars and as a table; more markdown tables (`texts`, {tag:
    markdown}: the per-family summary, importance) and pictures (`images`, {tag: uint8 H x W x 3})."""
    tf = _tf()
    with tf.summary.create_file_writer(os.path.join(logdir, "summary")).as_default():
        if best_score is not None:
            tf.summary.scalar("best_score", float(best_score), step=0)
        if baseline_score is not None:
            tf.summary.scalar("baseline_score", float(baseline_score), step=0)
        tf.summary.text("best_vs_baseline", rows_markdown, step=0)
        for tag, markdown in (texts or {}).items():
            tf.summary.text(tag, markdown, step=0)
        for tag, image in (images or {}).items():
            _write_image(tag, np.asarray(image, np.uint8))
