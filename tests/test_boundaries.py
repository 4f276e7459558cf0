"""The dependency arrows of DESIGN.md §3, checked statically (``ast``) over every .py file.

::

    kernels  <-  samlab.optim  <-  samlab.train  <-  notebooks, CLIs
    landscape (torch, numpy; h5py, matplotlib, mpi4py, scipy, tqdm lazily)  <-  notebooks, CLIs

An import is *lazy* when it sits inside a function (``def``, ``async def``, ``lambda``) or under
``if TYPE_CHECKING:``; anything else (module level, class bodies, top-level ``try`` blocks) runs
when the module is imported. Relative imports are resolved, ``from pkg import sub`` counts as an
import of ``pkg.sub``, and ``importlib.import_module("...")`` / ``__import__("...")`` with a
literal name count as imports too. Code outside ``samlab.optim`` never asks which optimizer
class it holds (``isinstance``/``issubclass`` against samlab.optim classes): capabilities are
flags on the registry entry. Every failure names the file and line; the last two tests plant
violations in a scratch tree to show the checker catches them.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("samlab", "landscape", "kernels")

#: Optional packages that must only be imported inside the functions that need them.
HEAVY = frozenset({"mpi4py", "h5py", "matplotlib", "triton", "playwright"})

#: Packages that may import only the standard library, themselves and these third-party
#: packages: (at module level, additionally inside functions).
SELF_CONTAINED = {
    "landscape": (
        frozenset({"torch", "numpy"}),
        frozenset({"h5py", "matplotlib", "mpi4py", "scipy", "tqdm"}),
    ),
    "kernels": (frozenset({"torch"}), frozenset({"triton"})),
}

#: importer prefix -> module prefixes it must never import, lazily or not.
FORBIDDEN = {
    "samlab.optim": ("samlab.train", "samlab.models", "samlab.datasets", "landscape"),
    "samlab.models": ("samlab.optim", "samlab.train"),
    "samlab.datasets": ("samlab.optim", "samlab.train"),
}

#: kernels holds tensor-list ops only: no nn.Module code.
KERNELS_FORBIDDEN_TORCH = ("torch.nn.Module", "torch.nn.modules")

_STDLIB = frozenset(sys.stdlib_module_names)


@dataclass(frozen=True)
class ImportRef:
    path: Path  # relative to the scanned root
    line: int
    importer: str  # dotted module name of the importing file
    target: str  # absolute dotted name imported (module, or module.name for `from m import name`)
    lazy: bool

    @property
    def top(self) -> str:
        return self.target.split(".", 1)[0]

    def where(self) -> str:
        return f"{self.path.as_posix()}:{self.line}"


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    package = importer if is_package else importer.rpartition(".")[0]
    parts = package.split(".") if package else []
    if level - 1 > len(parts):
        raise ValueError(f"relative import beyond the top-level package in {importer}")
    base = parts[: len(parts) - (level - 1)]
    if module:
        base.append(module)
    return ".".join(base)


class _Collector(ast.NodeVisitor):
    def __init__(self, rel: Path, importer: str, is_package: bool) -> None:
        self.rel, self.importer, self.is_package = rel, importer, is_package
        self.refs: list[ImportRef] = []
        self.module_classes: list[tuple[int, str, list[str]]] = []
        self.type_checks: list[tuple[int, str]] = []  # (line, class argument of isinstance)
        self.optim_aliases: set[str] = set()  # local names bound to samlab.optim or its members
        self._depth = 0  # > 0 inside a function or an `if TYPE_CHECKING:` block

    def _add(self, node: ast.AST, target: str) -> None:
        self.refs.append(ImportRef(self.rel, node.lineno, self.importer, target, self._depth > 0))

    def _lazy(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _lazy

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._depth += 1
            for child in node.body:
                self.visit(child)
            self._depth -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)
            if alias.asname and _in(alias.name, "samlab.optim"):
                self.optim_aliases.add(alias.asname)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = _resolve_relative(self.importer, self.is_package, node.level, node.module)
        else:
            base = node.module or ""
        if base:
            self._add(node, base)
        for alias in node.names:
            if alias.name != "*":
                target = f"{base}.{alias.name}" if base else alias.name
                self._add(node, target)
                if _in(target, "samlab.optim"):
                    self.optim_aliases.add(alias.asname or alias.name)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if (
            name in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            self._add(node, node.args[0].value)
        if name in {"isinstance", "issubclass"} and len(node.args) == 2:
            self.type_checks.append((node.lineno, ast.unparse(node.args[1])))
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.module_classes.append((node.lineno, node.name, [ast.unparse(b) for b in node.bases]))
        self.generic_visit(node)


@dataclass(frozen=True)
class ScannedFile:
    path: Path
    importer: str
    refs: tuple[ImportRef, ...]
    classes: tuple[tuple[int, str, list[str]], ...]
    type_checks: tuple[tuple[int, str], ...]
    optim_aliases: frozenset[str]


def scan(root: Path, packages: Iterable[str] = PACKAGES) -> list[ScannedFile]:
    """Parse every .py file of ``packages`` under ``root``."""
    files = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(root)
            importer = _module_name(root, path)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(rel))
            collector = _Collector(rel, importer, path.name == "__init__.py")
            collector.visit(tree)
            files.append(
                ScannedFile(
                    rel,
                    importer,
                    tuple(collector.refs),
                    tuple(collector.module_classes),
                    tuple(collector.type_checks),
                    frozenset(collector.optim_aliases),
                )
            )
    return files


def _in(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _refs(files: Iterable[ScannedFile]) -> Iterator[ImportRef]:
    for scanned in files:
        yield from scanned.refs


def self_contained_violations(files: Iterable[ScannedFile]) -> list[str]:
    problems = []
    for ref in _refs(files):
        package = ref.importer.split(".", 1)[0]
        if package not in SELF_CONTAINED or ref.top in _STDLIB or ref.top == package:
            continue
        eager_ok, lazy_ok = SELF_CONTAINED[package]
        if ref.top in eager_ok or (ref.lazy and ref.top in lazy_ok):
            continue
        if ref.top in lazy_ok:
            why = f"{ref.top} may only be imported inside a function"
        else:
            allowed = sorted(eager_ok) + [f"{n} (lazily)" for n in sorted(lazy_ok)]
            why = f"{package} may import only the standard library, itself, {', '.join(allowed)}"
        problems.append(f"{ref.where()}: {ref.importer} imports {ref.target}: {why}")
    return problems


def forbidden_violations(files: Iterable[ScannedFile]) -> list[str]:
    problems = []
    for ref in _refs(files):
        for importer_prefix, banned in FORBIDDEN.items():
            if not _in(ref.importer, importer_prefix):
                continue
            for prefix in banned:
                if _in(ref.target, prefix):
                    problems.append(
                        f"{ref.where()}: {ref.importer} imports {ref.target}: "
                        f"{importer_prefix} must never import {prefix}"
                    )
    return problems


def heavy_violations(files: Iterable[ScannedFile]) -> list[str]:
    return [
        f"{ref.where()}: {ref.importer} imports {ref.target} at import time: {ref.top} is "
        "optional and heavy, import it inside the function that needs it"
        for ref in _refs(files)
        if ref.top in HEAVY and not ref.lazy
    ]


def kernels_module_violations(files: Iterable[ScannedFile]) -> list[str]:
    problems = []
    for scanned in files:
        if not _in(scanned.importer, "kernels"):
            continue
        for ref in scanned.refs:
            if any(_in(ref.target, p) for p in KERNELS_FORBIDDEN_TORCH):
                problems.append(f"{ref.where()}: kernels imports {ref.target}: no nn.Module code")
        for line, name, bases in scanned.classes:
            if any(base == "Module" or base.endswith(".Module") for base in bases):
                problems.append(
                    f"{scanned.path.as_posix()}:{line}: class {name}({', '.join(bases)}): "
                    "kernels holds tensor-list ops, no nn.Module code"
                )
    return problems


def optimizer_type_check_violations(files: Iterable[ScannedFile]) -> list[str]:
    """Outside samlab.optim, code never asks which optimizer class it holds (a capability is a
    flag on the registry entry): no isinstance/issubclass against samlab.optim classes."""
    problems = []
    for scanned in files:
        if _in(scanned.importer, "samlab.optim"):
            continue
        for line, cls in scanned.type_checks:
            names = {n.id for n in ast.walk(ast.parse(cls, mode="eval")) if isinstance(n, ast.Name)}
            if "samlab.optim." in cls or names & scanned.optim_aliases:
                problems.append(
                    f"{scanned.path.as_posix()}:{line}: {scanned.importer} checks an optimizer's "
                    f"class ({cls}); use a capability flag of the registry entry instead"
                )
    return problems


def _report(rule: str, problems: list[str]) -> str:
    return f"broken rule: {rule} (DESIGN.md §3):\n  " + "\n  ".join(problems)


# --- the repository -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo_files() -> list[ScannedFile]:
    files = scan(REPO)
    for package in PACKAGES:
        assert any(_in(f.importer, package) for f in files), f"no .py files found in {package}/"
    return files


CHECKS = {
    "landscape-and-kernels-import-only-allowed-dependencies": self_contained_violations,
    "samlab-subpackages-follow-the-dependency-arrows": forbidden_violations,
    "heavy-optional-packages-imported-lazily": heavy_violations,
    "no-optimizer-isinstance-outside-samlab-optim": optimizer_type_check_violations,
    "kernels-hold-no-module-code": kernels_module_violations,
}


@pytest.mark.parametrize("rule", CHECKS)
def test_repository_follows_rule(rule: str, repo_files):
    problems = CHECKS[rule](repo_files)
    assert not problems, _report(rule, problems)


# --- the checker itself: planted violations are caught --------------------------------------


def _plant(root: Path, files: dict[str, str]) -> list[ScannedFile]:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return scan(root)


def test_checker_catches_planted_violations(tmp_path: Path):
    files = _plant(
        tmp_path,
        {
            "samlab/__init__.py": "",
            "samlab/optim/__init__.py": "",
            "samlab/optim/sam.py": "from ..train import loop\nfrom samlab import models\n",
            "samlab/models/net.py": "def f():\n    import samlab.optim\n",
            "samlab/datasets/csv.py": "import importlib\nimportlib.import_module('samlab.train')\n",
            "samlab/train/loop.py": (
                "from samlab.optim import SAM as S\nimport samlab.optim as so\n"
                "import samlab.optim\n"
                "def run(opt, m):\n    if isinstance(opt, (S, so.GSAM)):\n        pass\n"
                "    assert issubclass(type(opt), samlab.optim.SAMBase)\n"
                "    return isinstance(m, torch.nn.BatchNorm2d)\n"
            ),
            "landscape/__init__.py": "",
            "landscape/plot.py": (
                "import matplotlib.pyplot as plt\n"
                "from samlab.optim import SAM\n"
                "try:\n    import h5py\nexcept ImportError:\n    h5py = None\n"
                "import kernels\nimport pandas\nimport tqdm\n"
            ),
            "kernels/__init__.py": "",
            "kernels/ops.py": (
                "import torch\nfrom torch import nn\nfrom torch.nn import Module\n"
                "import landscape\nclass Fused(nn.Module):\n    pass\n"
            ),
        },
    )
    heavy = heavy_violations(files)
    assert "landscape/plot.py:1" in heavy[0] and "matplotlib" in heavy[0]
    assert any("landscape/plot.py:4" in p and "h5py" in p for p in heavy)

    forbidden = "\n".join(forbidden_violations(files))
    assert "samlab/optim/sam.py:1: samlab.optim.sam imports samlab.train" in forbidden
    assert "samlab/optim/sam.py:2: samlab.optim.sam imports samlab.models" in forbidden
    assert "samlab/models/net.py:2: samlab.models.net imports samlab.optim" in forbidden
    assert "samlab/datasets/csv.py:2: samlab.datasets.csv imports samlab.train" in forbidden

    contained = "\n".join(self_contained_violations(files))
    for needle in (
        "landscape/plot.py:2: landscape.plot imports samlab.optim",
        "landscape/plot.py:7: landscape.plot imports kernels",
        "landscape/plot.py:8: landscape.plot imports pandas",
        "landscape/plot.py:9: landscape.plot imports tqdm: tqdm may only be imported inside",
        "kernels/ops.py:4: kernels.ops imports landscape",
    ):
        assert needle in contained, needle

    checks = optimizer_type_check_violations(files)
    assert [p.split(": ", 1)[0] for p in checks] == [
        "samlab/train/loop.py:5",
        "samlab/train/loop.py:7",
    ]

    modules = "\n".join(kernels_module_violations(files))
    assert "kernels/ops.py:3: kernels imports torch.nn.Module" in modules
    assert "kernels/ops.py:5: class Fused(nn.Module)" in modules


def test_checker_accepts_lazy_and_type_checking_imports(tmp_path: Path):
    files = _plant(
        tmp_path,
        {
            "landscape/__init__.py": "from .surface import Surface\n",
            "landscape/surface.py": (
                "from __future__ import annotations\n"
                "import json\nimport numpy as np\nimport torch\nfrom torch import nn\n"
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    import h5py\n"
                "class Surface:\n"
                "    def save(self):\n        import h5py\n        from tqdm import tqdm\n"
                "plot = lambda: __import__('matplotlib')\n"
            ),
            "kernels/__init__.py": "from kernels.ops import add\n",
            "kernels/ops.py": "import torch\ndef fast():\n    import triton\n",
            "samlab/optim/__init__.py": "from samlab.optim.sam import SAM\nimport kernels\n",
            "samlab/optim/sam.py": (
                "from . import _base\nfrom samlab.utils import smoke_mode\n"
                "def f(o):\n    return isinstance(o, _base.SAMBase)\n"
            ),
            "samlab/train/loop.py": (
                "from samlab.optim import get_optimizer_info\n"
                "def f(m):\n    return isinstance(m, torch.nn.BatchNorm2d)\n"
            ),
        },
    )
    assert not heavy_violations(files)
    assert not self_contained_violations(files)
    assert not forbidden_violations(files)
    assert not kernels_module_violations(files)
    assert not optimizer_type_check_violations(files)
    targets = {ref.target for ref in _refs(files)}
    assert {"samlab.optim._base", "landscape.surface.Surface", "matplotlib"} <= targets
