"""TensorBoard: HParams sessions, per-epoch scalars, loss pictures and the summary run, read back with
TensorBoard's own event reader."""

import io

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_multiplexer
from tensorboard.plugins.hparams import metadata
from tensorboard.util import tensor_util

import losstune
from losstune import tasks
from losstune import tensorboard_log as tb
from tests.helpers import mlp, tiny_multiclass


@pytest.fixture(scope="module")
def search_logs(tmp_path_factory):
    x, y = tiny_multiclass(n=150)
    directory = tmp_path_factory.mktemp("tb")
    result = losstune.search(mlp(3, inputs=8), x, y, validation_data=(x, y), space="imbalanced_multiclass",
                             tuner="random", max_trials=4, epochs=2, directory=str(directory), seed=5,
                             stream=io.StringIO())
    mux = event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(f"{result.directory}/logs")
    mux.Reload()
    return result, mux


def _sessions(mux):
    sessions = {}
    for run, tags in mux.PluginRunToTagToContent(metadata.PLUGIN_NAME).items():
        if metadata.SESSION_START_INFO_TAG in tags:
            info = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
            sessions[run] = info
    return sessions


def test_one_hparams_session_per_trial_with_every_hparam(search_logs):
    result, mux = search_logs
    sessions = _sessions(mux)
    assert sorted(sessions) == sorted(f"{t.trial_id}/execution0" for t in result.trials)
    names = None
    for run, info in sessions.items():
        trial = next(t for t in result.trials if run.startswith(t.trial_id + "/"))
        assert info.group_name == trial.trial_id
        hparams = {k: v for k, v in info.hparams.items()}
        assert hparams["loss"].string_value == trial.family
        for key, value in trial.params.items():
            assert hparams[f"{trial.family}/{key}"].number_value == pytest.approx(value)
        # every session carries every hyperparameter; inactive ones hold the sentinel
        names = names or set(hparams)
        assert set(hparams) == names
        other = [k for k in hparams if "/" in k and not k.startswith(trial.family + "/") and k != "class_weights/power"]
        assert other and all(hparams[k].number_value == tb.INACTIVE_NUMBER for k in other)
    assert "class_weights/power" in names and "focal/gamma" in names and "ldam/max_margin" in names


def test_experiment_config_declares_every_domain_and_the_objective(search_logs):
    _, mux = search_logs
    content = mux.PluginRunToTagToContent(metadata.PLUGIN_NAME)["."][metadata.EXPERIMENT_TAG]
    experiment = metadata.parse_experiment_plugin_data(content)
    declared = {h.name: h for h in experiment.hparam_infos}
    assert "loss" in declared and "focal/gamma" in declared
    assert list(declared["loss"].domain_discrete.values)
    assert declared["focal/gamma"].domain_interval.max_value == pytest.approx(5.0)
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"trial_score", "epoch_macro_f1"} <= metrics


def test_scalars_score_and_loss_picture_per_trial(search_logs):
    result, mux = search_logs
    runs = mux.Runs()
    for trial in result.trials:
        validation = mux.Tensors(f"{trial.trial_id}/execution0/validation", "epoch_macro_f1")
        assert len(validation) == 2  # one value per epoch
        score = mux.Tensors(f"{trial.trial_id}/execution0", "trial_score")
        # the last value: a raced trial's score is updated as its repeats come in
        assert float(tensor_util.make_ndarray(score[-1].tensor_proto)) == pytest.approx(trial.score, rel=1e-5)
        assert "loss_curve" in runs[trial.trial_id]["tensors"]
        weights = [tag for tag in runs[trial.trial_id]["tensors"] if tag.startswith("class_weights/")]
        assert len(weights) == (3 if trial.power else 0)  # flattened to one scalar per class
    summary = mux.Tensors("summary", "best_score")
    assert float(tensor_util.make_ndarray(summary[0].tensor_proto)) == pytest.approx(result.best_score, rel=1e-5)


def test_loss_curve_follows_the_loss():
    fam = losstune.families.get("crossentropy")
    x, (curve,) = tasks.get("multiclass").loss_curves(fam.build({}, task="multiclass"), 4, False)
    np.testing.assert_allclose(curve, -np.log(x), rtol=1e-4)
    image = tb.render_curves([curve])
    assert image.shape == (200, 300, 3) and image.dtype == np.uint8
    assert (image != 255).any()


def test_pictures_are_written_as_tf_summary_image_writes_them(tmp_path):
    import tensorflow as tf

    image = tb.render_curves([np.linspace(2.0, 0.1, 50), np.linspace(0.5, 1.5, 50)])
    with tf.summary.create_file_writer(str(tmp_path / "ours")).as_default():
        tb._write_image("picture", image, "what it shows")
    with tf.summary.create_file_writer(str(tmp_path / "tf")).as_default():
        tf.summary.image("picture", image[None], step=0, description="what it shows")
    mux = event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    ours, reference = mux.Tensors("ours", "picture")[0], mux.Tensors("tf", "picture")[0]
    assert ours.step == reference.step == 0
    assert mux.SummaryMetadata("ours", "picture") == mux.SummaryMetadata("tf", "picture")  # the image plugin's
    ours, reference = tensor_util.make_ndarray(ours.tensor_proto), tensor_util.make_ndarray(reference.tensor_proto)
    assert list(ours[:2]) == list(reference[:2]) == [b"300", b"200"]  # width, height
    np.testing.assert_array_equal(tf.io.decode_png(ours[2]).numpy(), image)
    np.testing.assert_array_equal(tf.io.decode_png(ours[2]).numpy(), tf.io.decode_png(reference[2]).numpy())
