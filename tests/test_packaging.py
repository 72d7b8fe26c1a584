"""The wheel holds the whole package: a module in a subpackage missing from pyproject's list installs
nowhere, and an editable install (as in development and CI) would never show it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_every_module_and_grammar(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: a build/ left in the checkout would hide a missing package
    skip = shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "tests", "benchmarks")
    shutil.copytree(ROOT, src, ignore=skip)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "-w", str(tmp_path), str(src)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("querylm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "querylm").rglob("*.py")}
    grammars = {f"querylm/grammars/{p.name}" for p in (ROOT / "grammars").glob("*.lark")}
    assert modules and grammars
    assert modules - names == set() and grammars - names == set()
