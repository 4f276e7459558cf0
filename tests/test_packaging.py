"""Packaging stays consistent: requirements.txt, environment.yml and pyproject.toml agree, and the
import packages resolve to this repository.

``requirements.txt`` holds the pins (pip is the real install path); ``environment.yml`` mirrors
them for conda users; ``pyproject.toml`` declares loose dependencies and extras, each of which
must be pinned in ``requirements.txt``. PyPI has unrelated projects called ``samlab`` and
``kernels``, so the import packages must come from this checkout, not from site-packages.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
IMPORT_PACKAGES = ("samlab", "landscape", "kernels")


def _pins(lines: list[str], source: str) -> dict[str, str]:
    """Map canonical package name -> pinned version; every line must be ``name==version``."""
    pins: dict[str, str] = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):  # blank, comment, or a pip option such as `-e .`
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", (
            f"{source}: {line!r} is not pinned as name==version"
        )
        name = canonicalize_name(req.name)
        assert name not in pins, f"{source}: {req.name} is listed twice"
        pins[name] = specs[0].version
    return pins


def _requirements_pins() -> dict[str, str]:
    path = REPO / "requirements.txt"
    return _pins(path.read_text().splitlines(), "requirements.txt")


def _environment() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((REPO / "environment.yml").read_text())


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_environment_yml_mirrors_requirements_txt():
    env = _environment()
    deps = env["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one `- pip:` section"
    assert "pip" in conda, "environment.yml must list `pip` among the conda dependencies"
    assert any(d.replace(" ", "").startswith("python=") for d in conda), (
        "environment.yml must pin python"
    )

    env_pins = _pins(pip_sections[0], "environment.yml (pip section)")
    req_pins = _requirements_pins()
    only_req = sorted(set(req_pins) - set(env_pins))
    only_env = sorted(set(env_pins) - set(req_pins))
    assert not only_req and not only_env, (
        f"package lists differ: only in requirements.txt {only_req}, "
        f"only in environment.yml {only_env}"
    )
    differ = {n: (req_pins[n], env_pins[n]) for n in req_pins if req_pins[n] != env_pins[n]}
    assert not differ, f"pins differ (requirements.txt, environment.yml): {differ}"
    # torch and torchvision come from pip on both paths, never from a conda channel.
    conda_names = {canonicalize_name(d.split("=")[0].split("<")[0].split(">")[0]) for d in conda}
    assert not conda_names & {"torch", "pytorch", "torchvision"}, (
        "environment.yml installs torch/torchvision through conda; they belong in the pip section"
    )


def test_environment_python_satisfies_requires_python():
    env = _environment()
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    version = python.split("=", 1)[1].strip()
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert requires.contains(version), (
        f"environment.yml {python} outside requires-python {requires}"
    )


def test_pyproject_dependencies_and_extras_are_pinned():
    project = _pyproject()["project"]
    req_pins = _requirements_pins()
    declared: dict[str, list[str]] = {"dependencies": project["dependencies"]}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        declared[f"extra {extra!r}"] = reqs

    problems = []
    for where, reqs in declared.items():
        for line in reqs:
            req = Requirement(line)
            name = canonicalize_name(req.name)
            if name == canonicalize_name(project["name"]):  # an extra pulling in another extra
                continue
            if name not in req_pins:
                problems.append(f"{where}: {req.name} is not pinned in requirements.txt")
            elif not req.specifier.contains(req_pins[name], prereleases=True):
                problems.append(
                    f"{where}: {line!r} excludes the pinned {req.name}=={req_pins[name]}"
                )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", IMPORT_PACKAGES)
def test_import_package_resolves_to_this_repository(name: str):
    module = importlib.import_module(name)
    assert module.__file__ is not None, (
        f"{name} imported as a namespace package ({list(module.__path__)}): its __init__.py "
        "was not found"
    )
    path = Path(module.__file__).resolve()
    assert path.is_relative_to(REPO), f"{name} resolves to {path}, outside {REPO}"
    assert path == REPO / name / "__init__.py"


def test_installed_packages_resolve_to_this_repository(tmp_path: Path):
    """From another directory (as analysis code would run), the editable install finds this
    checkout: not a same-named PyPI package, not a stale namespace mapping."""
    code = (
        "import importlib\n"
        f"for name in {IMPORT_PACKAGES!r}:\n"
        "    print(name, importlib.import_module(name).__file__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    found = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    hint = "reinstall with: python -m pip install --no-deps --no-build-isolation -e ."
    for name in IMPORT_PACKAGES:
        assert found[name] != "None", f"{name} imports as a namespace package; {hint}"
        path = Path(found[name]).resolve()
        assert path == REPO / name / "__init__.py", f"{name} resolves to {path}; {hint}"
