"""Data flows one way: no import circles in losstune/, and no module imports one from a higher layer.

losses know nothing of tuning; the registry knows losses; tasks and the space know the registry; the tuner
layer knows the space; search() sits on top. A new module must be placed in LAYERS.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "losstune"

# Lowest first; a module may import only from layers below its own.
LAYERS = [
    {"losstune.version", "losstune.losses.hyperparameters"},
    {"losstune.losses.base"},
    {"losstune.losses.classification", "losstune.losses.metric_learning", "losstune.losses.regression",
     "losstune.losses.segmentation"},
    {"losstune.losses"},
    {"losstune.families", "losstune.files", "losstune.stats"},
    {"losstune.pruning"},
    {"losstune.class_weights", "losstune.objectives", "losstune.tensorboard_log", "losstune.inputs",
     "losstune.datasets"},
    {"losstune.tasks", "losstune.lossfile"},
    {"losstune.lossspace"},
    {"losstune.spaces", "losstune.hypermodel", "losstune.importance"},
    {"losstune.population"},
    {"losstune.tuner", "losstune.plots"},
    {"losstune.result"},
    {"losstune.search"},
    {"losstune"},
    {"losstune.cli"},
    {"losstune.__main__"},
]


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path):
    """losstune modules that `path` imports, anywhere in the file (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("losstune")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("losstune"):
            for alias in node.names:  # `from losstune import families` imports the module losstune.families
                sub = f"{node.module}.{alias.name}"
                found.add(sub if (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                          or (PACKAGE.parent / sub.replace(".", "/")).is_dir() else node.module)
    return found


def _graph():
    return {_module_name(p): _imports(p) - {_module_name(p)} for p in PACKAGE.rglob("*.py")}


def test_every_module_has_a_layer():
    layer_of = {m for layer in LAYERS for m in layer}
    missing = sorted(set(_graph()) - layer_of)
    assert not missing, f"place these modules in tests/test_layering.py LAYERS: {missing}"


def test_no_module_imports_from_its_own_or_a_higher_layer():
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    upward = sorted((m, dep) for m, deps in _graph().items() for dep in deps
                    if dep in rank and m in rank and rank[dep] >= rank[m])
    assert not upward, f"imports that go sideways or up (module, imported): {upward}"


def test_no_import_circles():
    graph = _graph()
    state = {}

    def visit(node, path):
        state[node] = "open"
        for dep in graph.get(node, ()):
            if state.get(dep) == "open":
                raise AssertionError(f"import circle: {' -> '.join(path + [node, dep])}")
            if dep not in state:
                visit(dep, path + [node])
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])
