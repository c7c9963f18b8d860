"""The package installs and runs from a fresh environment with the lowest versions it allows.

A lower bound that is too low only shows on a machine that resolves it (the generated gRPC
code once required protobuf 7.35.1 while pyproject allowed protobuf 5). So this builds the
wheel, installs it into a new virtual environment with uv resolving every direct dependency to
its lowest allowed version, and starts each console script with ``--help``. Needs PyPI.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
UV = [sys.executable, "-m", "uv"]


def _run(*argv: str | Path, cwd: Path = REPO_ROOT) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def lowest_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and the lowest allowed direct dependencies; its bin dir."""
    work = tmp_path_factory.mktemp("install")
    _run(*UV, "build", "--wheel", "--out-dir", work / "dist", REPO_ROOT)
    (wheel,) = (work / "dist").glob("kube_qss-*.whl")
    venv = work / "venv"
    python = venv / "bin" / "python"
    _run(*UV, "venv", "--python", sys.executable, venv)
    # The project's dependencies as direct requirements, so that "lowest-direct" lowers them
    # (given the wheel alone, uv would only lower the wheel); then the wheel itself.
    requirements = work / "requirements.txt"
    requirements.write_text("\n".join(PROJECT["dependencies"]) + "\n")
    _run(
        *UV,
        "pip",
        "install",
        "--python",
        python,
        "--resolution",
        "lowest-direct",
        "-r",
        requirements,
    )
    _run(*UV, "pip", "install", "--python", python, "--no-deps", wheel)
    return venv / "bin"


@pytest.mark.parametrize("script", sorted(PROJECT["scripts"]))
def test_each_console_script_starts_with_the_lowest_allowed_dependencies(
    lowest_install: Path, script: str
) -> None:
    out = _run(lowest_install / script, "--help")
    assert f"usage: {script}" in out


def test_the_wheel_carries_the_license_and_the_lua_scripts(lowest_install: Path) -> None:
    python = lowest_install / "python"
    out = _run(
        python,
        "-c",
        "import importlib.metadata as m, importlib.resources as r;"
        "print(m.metadata('kube-qss')['License-Expression']);"
        "print(any(f.name.endswith('.lua') for f in r.files('controllers.keystore').iterdir()))",
        cwd=lowest_install,
    )
    assert out.split() == ["Apache-2.0", "True"]
