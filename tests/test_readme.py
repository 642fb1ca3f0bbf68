"""README stays true: its set-up commands are the ones CI runs, and it lists every family and space."""

from pathlib import Path

import losstune

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_setup_matches_ci():
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'python -m pip install -e ".[test]"' in README and 'python -m pip install -e ".[test]"' in ci
    test_command = "python -m pytest -q"
    assert test_command in README and test_command in ci
    assert "losstune demo" in README


def test_readme_lists_every_family_and_space():
    for name in losstune.families.available():
        assert f"`{name}`" in README, name
    for name in losstune.spaces.available():
        assert f"`{name}`" in README, name
    assert (ROOT / "docs" / "hparams.png").is_file()


def test_readme_space_example_loads():
    block = README.split("```toml\n", 1)[1].split("```", 1)[0]
    space = losstune.LossSpace.from_toml_text(block, source="README.md")
    assert [name for name, _ in space.recipes] == ["inverse-frequency cross-entropy", "focal(alpha=0.25, gamma=2)"]
    assert space.weightable() == ["crossentropy", "focal"]


def test_readme_package_layout_names_every_module():
    layout = README.split("**Package layout**", 1)[1].split("**Adding a loss family**", 1)[0]
    modules = [p.name for p in (ROOT / "losstune").glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    modules += [p.name + "/" for p in (ROOT / "losstune").iterdir() if (p / "__init__.py").is_file()]
    missing = [m for m in modules if f"`{m}`" not in layout]
    assert not missing, f"add these modules to README.md's package layout: {missing}"


def test_readme_layer_table_names_every_tested_layer():
    from tests.test_population_layers import ROWS

    table = README.split("**Which layers train in populations**", 1)[1].split("\n\n", 2)[1]
    missing = sorted({row.layer for row in ROWS if f"| {row.layer} |" not in table})
    assert not missing, f"add these layers to README.md's population layer table: {missing}"
