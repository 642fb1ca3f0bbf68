"""Each loss family is declared once, on its loss class: the registry, the constructors' checks, the docstrings
and the README's table are derived from the declarations, and what was saved before still loads."""

import ast
import inspect
import json
from pathlib import Path

import numpy as np
import pytest

import keras
import losstune
from losstune import families
from losstune.losses import base, family_classes
from losstune.losses.hyperparameters import Hyperparameter

ROOT = Path(__file__).resolve().parent.parent
CLASSES = family_classes()


def _context(cls, task=None):
    """The non-hyperparameter arguments a class needs to build, for its first task."""
    task = task or cls.tasks[0]
    return {"class_counts": [4.0, 2.0, 1.0] if task != "binary" else [3.0, 1.0]} if cls.needs_class_counts else {}


# --- the registry is the classes' declarations ------------------------------------------------------------
def test_every_family_is_one_loss_class():
    assert [cls.family for cls in CLASSES] == families.available()
    for cls in CLASSES:
        fam = families.get(cls.family)
        assert fam.loss_class is cls
        assert (fam.name, fam.tasks, fam.hyperparameters, fam.paper, fam.summary) == (
            cls.family, cls.tasks, cls.hyperparameters, cls.paper, cls.summary)
        assert (fam.needs_class_counts, fam.weightable) == (cls.needs_class_counts, cls.weightable)
        assert keras.saving.get_registered_name(cls) == f"losstune>{cls.__name__}"
        loss = fam.build({}, class_counts=_context(cls).get("class_counts"))
        assert type(loss) is cls


def test_registry_lists_families_by_task():
    assert {"crossentropy", "focal", "ldam", "logit_adjusted", "poly1", "class_balanced", "hinge"} <= set(
        families.available("multiclass"))
    assert families.available("pairs") == ["contrastive"]
    assert "tversky" in families.available("binary") and "tversky" in families.available("multilabel")
    with pytest.raises(ValueError, match="unknown loss family 'nope'; available"):
        families.get("nope")


def test_the_loss_modules_import_nothing_of_tuning():
    for path in sorted((ROOT / "losstune" / "losses").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                if name == "losstune" or name.startswith("losstune."):
                    assert name == "losstune.losses" or name.startswith("losstune.losses."), (path.name, name)


# --- constructors, docstrings and configs come from the declaration ---------------------------------------
@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.family)
def test_constructor_docstring_and_config_follow_the_declaration(cls):
    params = inspect.signature(cls).parameters
    names = [h.name for h in cls.hyperparameters]
    context = [n for n in cls.context_arguments() if n != "class_counts"]
    assert list(params) == (["class_counts"] if cls.needs_class_counts else []) + names + context + [
        "reduction", "name", "dtype"]
    assert [params[n].default for n in names] == [h.default for h in cls.hyperparameters]
    assert params["task"].default == cls.tasks[0] and params["name"].default == cls.family
    # the docstring's Args section is the declaration's, word for word
    doc = " ".join(cls.__doc__.split())
    assert "Args:" in doc
    for h in cls.hyperparameters:
        assert f"{h.name}: {' '.join(h.arg_doc().split())}" in doc
    # one contract: `fn` is the pure per-sample loss, `call` the base class's
    assert isinstance(inspect.getattr_static(cls, "fn"), staticmethod)
    assert "call" not in cls.__dict__ and "get_config" not in cls.__dict__
    loss = cls(**_context(cls))
    assert set(loss.get_config()) == set(params) - {"dtype"}  # Keras's Loss keeps dtype out of its config
    assert type(loss).from_config(loss.get_config()).get_config() == loss.get_config()


def _outside(h):
    """Values just outside a hyperparameter's valid range."""
    if h.kind == "bool":
        return [1, "yes"]
    if h.kind == "choice":
        return ["nope"]
    bad = ["big", float("nan")]
    if h.low is not None:
        bad.append(h.low if not h.low_inclusive else h.low - 0.5)
    if h.high is not None:
        bad.append(h.high if not h.high_inclusive else h.high + 0.5)
    return bad


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.family)
def test_constructors_and_registry_validate_alike_from_the_declaration(cls):
    fam = families.get(cls.family)
    for h in cls.hyperparameters:
        for bad in _outside(h):
            with pytest.raises(ValueError, match=f"^{cls.family}: `{h.name}` must be") as from_class:
                cls(**_context(cls), **{h.name: bad})
            with pytest.raises(ValueError) as from_registry:
                fam.build({h.name: bad}, **_context(cls))
            assert str(from_class.value) == str(from_registry.value)
    with pytest.raises(ValueError, match=f"^{cls.family}: `task` must be one of"):
        cls(**_context(cls), task="nope")


def test_loss_classes_validate_too():
    with pytest.raises(ValueError, match="focal: `gamma`"):
        type(families.get("focal").build({}, task="multiclass"))(gamma=-0.5)
    with pytest.raises(ValueError, match="class_weights` for task 'binary' holds 2 values"):
        families.get("crossentropy").build({}, task="binary", class_weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="class_balanced: `class_counts` for task 'binary' holds 2 values, got 3"):
        families.get("class_balanced").build({}, task="binary", class_counts=[1, 2, 3])
    with pytest.raises(ValueError, match="ldam: `class_counts` must be in \\[0.0, inf\\), got -1.0"):
        families.get("ldam").loss_class(class_counts=[3, -1])
    with pytest.raises(TypeError, match="declares no loss `family`"):
        base.LosstuneLoss()


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(default=2.0, low=0.0, high=1.0), "`x` must be in \\[0.0, 1.0\\], got 2.0"),
    (dict(default=0.5, low=0.0, high=1.0, search=(0.0, 2.0)), "`x` must be in \\[0.0, 1.0\\], got 2.0"),
    (dict(default=0.5, low=0.0, search=(0.0, 1.0), sampling="log"), "log sampling needs a search range above 0"),
    (dict(default=0.5, search=(1.0, 0.0)), "`search` is \\(min, max\\)"),
    (dict(default=0.5, sampling="cubic"), "`sampling` must be one of"),
    (dict(default="a", kind="choice"), "a choice lists its allowed `values`"),
    (dict(default=1, kind="text"), "`kind` must be one of"),
])
def test_a_bad_declaration_fails_when_the_module_loads(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        Hyperparameter(**{"name": "x", "kind": "float", **kwargs})


def test_a_bad_loss_class_fails_when_the_module_loads():
    with pytest.raises(TypeError, match="`tasks` must be a non-empty tuple"):
        type("Bad", (base.LosstuneLoss,), {"family": "bad", "tasks": ("images",), "fn": staticmethod(lambda y, p: p)})
    with pytest.raises(TypeError, match="`fn` .* is not set"):
        type("Bad", (base.LosstuneLoss,), {"family": "bad", "tasks": ("regression",)})
    with pytest.raises(TypeError, match="hyperparameter names must be unique"):
        type("Bad", (base.LosstuneLoss,), {"family": "bad", "tasks": ("regression",), "fn": staticmethod(lambda y, p: p),
                                           "hyperparameters": (Hyperparameter("task", "float", 1.0),)})


def test_space_style_hyperparameters_keep_their_api():
    power = families.Hyperparameter("power", "float", 0.0, low=0.0, high=2.0, search=(0.0, 1.0), doc="w_c ~ n_c^-p")
    assert (power.name, power.kind, power.default, power.low, power.high, power.values) == (
        "power", "float", 0.0, 0.0, 2.0, None)
    assert (power.search, power.sampling, power.validate("space", 1)) == ((0.0, 1.0), "linear", 1.0)
    with pytest.raises(ValueError, match="space: `power` must be in \\[0.0, 2.0\\], got 3.0"):
        power.validate("space", 3.0)


# --- one search range per parameter, decided by the papers' settings ----------------------------------------
def test_suggested_search_ranges_follow_the_papers():
    def hp(family, name):
        return families.get(family).hyperparameter(name)

    assert hp("ldam", "scale").search_values == (10.0, 30.0, 64.0)
    assert hp("asymmetric", "gamma_pos").search_values == (0.0, 1.0)
    assert (hp("asymmetric", "gamma_neg").search, hp("asymmetric", "clip").search) == ((0.0, 6.0), (0.0, 0.2))
    assert (hp("focal", "gamma").search, hp("focal", "alpha").search) == ((0.0, 5.0), (0.1, 0.9))
    assert (hp("class_balanced", "beta").search, hp("class_balanced", "beta").sampling) == ((0.9, 0.9999), "reverse_log")
    assert hp("crossentropy", "label_smoothing").search == (0.0, 0.3)
    assert (hp("triplet", "margin").search, hp("triplet", "margin").sampling) == ((0.02, 0.5), "log")


@pytest.mark.parametrize("name", families.available())
def test_suggested_search_ranges_make_a_valid_space(name):
    fam = families.get(name)
    specs = {h.name: h.suggested_spec() for h in fam.hyperparameters if h.suggested_spec() is not None}
    space = losstune.LossSpace({name: specs}, task=fam.tasks[0])
    assert set(space.families[name]) == set(specs)


def test_readme_family_table_is_current():
    readme = (ROOT / "README.md").read_text()
    assert families.markdown_table() in readme, (
        "README.md's family table is stale; paste the output of "
        "python -c 'import losstune; print(losstune.families.markdown_table())'")


# --- a family outside the package registers explicitly ------------------------------------------------------
def scaled_squared_error(y_true, y_pred, scale=1.0):
    return keras.ops.mean(keras.ops.square(scale * (y_pred - y_true)), axis=-1)


def test_a_loss_class_outside_the_package_registers_explicitly():
    class ScaledSquaredError(base.LosstuneLoss):
        """(scale r)^2."""

        family = "test_scaled_mse"
        tasks = ("regression",)
        weightable = False
        hyperparameters = (Hyperparameter("scale", "float", 1.0, 0.0, None, low_inclusive=False, search=(0.5, 2.0),
                                          doc="the residuals' scale"),)
        fn = staticmethod(scaled_squared_error)

    assert "test_scaled_mse" not in families.available()  # only losstune.losses' classes register on import
    fam = families.register(ScaledSquaredError)
    try:
        assert "scale: float in (0, inf); default 1.0. The residuals' scale. Search: 0.5 to 2." in ScaledSquaredError.__doc__
        loss = fam.build({"scale": 2.0}, task="regression", from_logits=True)  # from_logits does not apply: ignored
        y, p = np.zeros((4, 1)), np.full((4, 1), 0.5)
        assert float(loss(y, p)) == pytest.approx(1.0)
        with pytest.raises(ValueError, match="already registered"):
            families.register(ScaledSquaredError)
        with pytest.raises(ValueError, match="test_scaled_mse: `class_weights` do not apply"):
            fam.build({}, task="regression", class_weights=[1.0])
    finally:
        families._REGISTRY.pop("test_scaled_mse")


# --- what was saved before still loads, and computes the same ------------------------------------------------
# Loss configs exported by losstune before the families were declared on the classes, and the values that
# code computed on `_inputs` (float32).
OLD_EXPORTS = {
    "ldam": ({"class_name": "losstune>LDAMLoss", "config": {
        "class_counts": [4.0, 2.0, 1.0], "class_weights": [0.5, 1.0, 2.0], "from_logits": False, "max_margin": 0.3,
        "name": "ldam", "reduction": "sum_over_batch_size", "scale": 10.0, "task": "multiclass"}}, 3.4356958866119385),
    "class_balanced": ({"class_name": "losstune>ClassBalancedLoss", "config": {
        "base_loss": "focal", "beta": 0.99, "class_counts": [4.0, 2.0, 1.0], "class_weights": [0.5, 1.0, 2.0],
        "from_logits": False, "gamma": 1.5, "name": "class_balanced", "reduction": "sum_over_batch_size",
        "task": "multiclass"}}, 0.9288673996925354),
    "logit_adjusted": ({"class_name": "losstune>LogitAdjustedLoss", "config": {
        "class_counts": [4.0, 2.0, 1.0], "class_weights": None, "from_logits": True, "tau": 1.5,
        "name": "logit_adjusted", "reduction": "sum_over_batch_size", "task": "multiclass"}}, 1.5508308410644531),
    "focal": ({"class_name": "losstune>FocalCrossentropy", "config": {
        "alpha": None, "class_weights": None, "from_logits": False, "gamma": 2.0, "name": "focal",
        "reduction": "sum_over_batch_size", "task": "multiclass"}}, 0.46426892280578613),
    "asymmetric": ({"class_name": "losstune>AsymmetricLoss", "config": {
        "class_weights": None, "clip": 0.1, "from_logits": False, "gamma_neg": 2.5, "gamma_pos": 1.0,
        "name": "asymmetric", "reduction": "sum_over_batch_size", "task": "multilabel"}}, 0.6714153289794922),
    "hinge": ({"class_name": "losstune>HingeLoss", "config": {
        "class_weights": [0.7, 1.3], "from_logits": False, "margin": 0.5, "name": "hinge",
        "reduction": "sum_over_batch_size", "squared": True, "task": "binary"}}, 2.7225897312164307),
    "triplet": ({"class_name": "losstune>TripletLoss", "config": {
        "margin": 0.3, "mining": "all", "name": "triplet", "reduction": "sum_over_batch_size",
        "task": "embedding"}}, 0.6541687250137329),
    "huber": ({"class_name": "losstune>HuberLoss", "config": {
        "delta": 0.4, "name": "huber", "reduction": "sum_over_batch_size", "task": "regression"}}, 0.7547825574874878),
}


def _inputs(task, from_logits):
    x = np.linspace(-2.0, 2.0, 24).reshape(8, 3)
    if task == "multiclass":
        return np.array([0, 1, 2, 0, 1, 2, 2, 2]), x if from_logits else np.exp(x) / np.exp(x).sum(1, keepdims=True)
    if task == "multilabel":
        return (x > 0.3).astype(float), 1 / (1 + np.exp(-x[::-1]))
    if task == "binary":
        return (x[:, :1] > 0).astype(float), 1 / (1 + np.exp(-x[::-1, 1:2]))
    if task == "embedding":
        return np.array([0, 0, 1, 1, 2, 2, 0, 1]), x[::-1]
    return x[:, :1], x[::-1, :1]


@pytest.mark.parametrize("name", sorted(OLD_EXPORTS))
def test_loss_files_written_before_still_load_and_compute_the_same(name, tmp_path):
    saved, before = OLD_EXPORTS[name]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"schema_version": 1, "format": "losstune.loss", "loss": saved}))
    loss = losstune.load_loss(path)
    assert loss.get_config() == saved["config"]
    config = saved["config"]
    y, pred = _inputs(config["task"], config.get("from_logits", False))
    assert float(loss(y, pred.astype("float32"))) == pytest.approx(before, rel=1e-6)
