"""Data flows one way: no import circles in losstune/, and no module imports one from a higher layer; and
every module stays readable: at most 600 lines, no function body (docstring excluded) above 60 lines.

losses know nothing of tuning; the registry knows losses; tasks and the space know the registry; the
population package knows Keras models and nothing of the search; retraining knows the population; the tuner
layer knows the space and retraining; search() sits on top. A new module must be placed in LAYERS.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "losstune"

# The population package, lowest first: what a member is, data order and sizing; what vectorizes; how members
# are mapped and their losses grouped; the engines; the epoch driver; trials trained as populations.
POPULATION_LAYERS = [
    {"losstune.population.member", "losstune.population.stream", "losstune.population.sizing",
     "losstune.population.converters"},
    {"losstune.population.forward"},
    {"losstune.population.eligibility", "losstune.population.groups"},
    {"losstune.population.engine"},
    {"losstune.population.engine_tf", "losstune.population.engine_jax"},
    {"losstune.population.driver"},
    {"losstune.population.trials"},
]

# Lowest first; a module may import only from layers below its own.
LAYERS = [
    {"losstune.version", "losstune.losses.hyperparameters", "losstune.checks"},
    {"losstune.losses.base"},
    {"losstune.losses.classification", "losstune.losses.metric_learning", "losstune.losses.regression"},
    {"losstune.losses"},
    {"losstune.families", "losstune.files", "losstune.stats", "losstune.optimizers", "losstune.calibration",
     "losstune.reweighting"},
    {"losstune.layout", "losstune.sampling"},
    {"losstune.pruning", "losstune.failures", "losstune.progress"},
    {"losstune.class_weights", "losstune.objectives", "losstune.tensorboard_log", "losstune.inputs",
     "losstune.datasets"},
    {"losstune.tasks", "losstune.lossfile"},
    {"losstune.lossspace"},
    {"losstune.spaces", "losstune.hypermodel", "losstune.importance", "losstune.predictions"},
    *POPULATION_LAYERS,
    {"losstune.population"},
    {"losstune.retrain"},
    {"losstune.tuner", "losstune.plots", "losstune.racing", "losstune.pick"},
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


def test_every_layer_names_a_module_that_exists():
    unknown = sorted({m for layer in LAYERS for m in layer} - set(_graph()))
    assert not unknown, f"tests/test_layering.py LAYERS names modules that do not exist: {unknown}"


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


MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60


def _function_body_lines(node):
    """Lines of a function's body without its docstring."""
    body = node.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        if len(body) == 1:
            return 0
        first = body[1]
    return node.end_lineno - first.lineno + 1


def test_modules_and_functions_stay_short():
    long_modules = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
                    if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    long_functions = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if (n := _function_body_lines(node)) > MAX_FUNCTION_LINES:
                    long_functions[f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"] = n
    assert not long_modules, f"modules above {MAX_MODULE_LINES} lines (split them by concept): {long_modules}"
    assert not long_functions, f"function bodies above {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_population_is_a_package():
    assert (PACKAGE / "population" / "__init__.py").is_file() and not (PACKAGE / "population.py").exists()
