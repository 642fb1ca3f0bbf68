"""The wheel ships the search spaces and the `losstune` command."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_holds_search_spaces_and_console_script(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("losstune-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    spaces = sorted(p.name for p in (ROOT / "search_spaces").glob("*.toml"))
    assert len(spaces) >= 5
    for name in spaces:
        assert f"losstune/search_spaces/{name}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "losstune = losstune.cli:main" in text
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/")) for n in names)
