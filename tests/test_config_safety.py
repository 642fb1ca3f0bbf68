"""Loaded configs are data, never code: load_loss fails closed; the package has no pickle or eval."""

import json
import re
from pathlib import Path

import pytest

import losstune

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def good(tmp_path):
    path = losstune.export_loss(losstune.families.get("focal").build({"gamma": 1.5}, task="binary"), tmp_path / "ok.json")
    return json.loads(Path(path).read_text())


def _load(tmp_path, data):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(data))
    return losstune.load_loss(path)


@pytest.mark.parametrize("class_name", ["os.system", "builtins.eval", "keras.src.x:Y", "subprocess>Popen",
                                        "Sequential", "losstune>NoSuchLoss"])
def test_unknown_or_python_path_classes_are_refused(class_name, good, tmp_path):
    good["loss"]["class_name"] = class_name
    with pytest.raises(ValueError, match="unknown loss class .*never a Python path"):
        _load(tmp_path, good)


def test_extra_keys_are_refused(good, tmp_path):
    with pytest.raises(ValueError, match="unknown keys \\['module'\\]"):
        _load(tmp_path, dict(good, module="os"))
    inner = json.loads(json.dumps(good))
    inner["loss"]["config"]["fn"] = "os.system"
    with pytest.raises(ValueError, match="bad config for"):
        _load(tmp_path, inner)
    inner = json.loads(json.dumps(good))
    inner["loss"]["registered_name"] = "x"
    with pytest.raises(ValueError, match="`loss` must be"):
        _load(tmp_path, inner)


def test_bad_values_inside_the_config_are_validated(good, tmp_path):
    good["loss"]["config"]["gamma"] = -3
    with pytest.raises(ValueError, match="focal: `gamma` must be in"):
        _load(tmp_path, good)


@pytest.mark.parametrize("payload", [[1, 2], "text", 3])
def test_non_object_json_is_refused(payload, tmp_path):
    with pytest.raises(ValueError, match="a loss config is a JSON object"):
        _load(tmp_path, payload)


def test_keras_builtin_losses_round_trip(tmp_path):
    import keras

    path = losstune.export_loss(keras.losses.Huber(delta=2.0), tmp_path / "huber.json")
    assert type(losstune.load_loss(path)) is keras.losses.Huber


def test_no_pickle_eval_or_dynamic_import_in_the_package():
    pattern = re.compile(r"^\s*(import|from)\s+(c?pickle|dill|marshal)|pickle\.|\beval\(|\bexec\(|__import__\(|import_module\(")
    offenders = []
    for path in (ROOT / "losstune").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and not (path.name == "cli.py" and "import_module(module_name)" in line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
