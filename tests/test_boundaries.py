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
import re
import subprocess
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
    type_only: bool = False  # under `if TYPE_CHECKING:` (never runs)
    from_base: str | None = None  # `from BASE import name`: BASE (target is BASE.name)

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


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own(node: ast.expr) -> bool:
    """``self``, ``cls``, ``super()`` or ``type(self)``: the object's own attributes."""
    if isinstance(node, ast.Name):
        return node.id in {"self", "cls"}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id == "super" or (
            node.func.id == "type" and len(node.args) == 1 and _own(node.args[0])
        )
    return False


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


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
        self._type_checking = 0  # > 0 inside an `if TYPE_CHECKING:` block
        self.private_imports: list[tuple[int, list[str]]] = []  # `from m import _name` lines
        # obj._name: (line, text, root name of obj, _name)
        self.private_access: list[tuple[int, str, str | None, str]] = []
        self.module_names: dict[str, str] = {}  # local name -> module, of `import x [as y]`
        self.from_names: dict[str, str] = {}  # local name -> dotted origin of `from m import n`

    def _add(self, node: ast.AST, target: str, from_base: str | None = None) -> None:
        self.refs.append(
            ImportRef(
                self.rel,
                node.lineno,
                self.importer,
                target,
                self._depth > 0,
                self._type_checking > 0,
                from_base,
            )
        )

    def _lazy(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _lazy

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._depth += 1
            self._type_checking += 1
            for child in node.body:
                self.visit(child)
            self._depth -= 1
            self._type_checking -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)
            if alias.asname:
                self.module_names[alias.asname] = alias.name
            else:
                top = alias.name.split(".", 1)[0]
                self.module_names[top] = top
            if alias.asname and _in(alias.name, "samlab.optim"):
                self.optim_aliases.add(alias.asname)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = _resolve_relative(self.importer, self.is_package, node.level, node.module)
        else:
            base = node.module or ""
        if base:
            self._add(node, base, from_base=base)
        private = [a.name for a in node.names if a.name.startswith("_")]
        parts = base.split(".")
        hidden = next((i for i, part in enumerate(parts) if _is_private(part)), None)
        if hidden is not None and not _in(self.importer, ".".join(parts[:hidden])):
            private = private or [f"(from the private module {base})"]
        if private and base != "__future__":
            self.private_imports.append((node.lineno, private))
        for alias in node.names:
            if alias.name != "*":
                target = f"{base}.{alias.name}" if base else alias.name
                self._add(node, target, from_base=base)
                self.from_names[alias.asname or alias.name] = target
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
        if (
            isinstance(func, ast.Name)
            and func.id in {"getattr", "setattr", "hasattr", "delattr"}
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and _is_private(str(node.args[1].value))
            and not _own(node.args[0])
        ):
            text = f"{func.id}({ast.unparse(node.args[0])}, {node.args[1].value!r})"
            attr = str(node.args[1].value)
            self.private_access.append((node.lineno, text, _root_name(node.args[0]), attr))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _is_private(node.attr) and not _own(node.value):
            root = _root_name(node.value)
            self.private_access.append((node.lineno, ast.unparse(node), root, node.attr))
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.module_classes.append((node.lineno, node.name, [ast.unparse(b) for b in node.bases]))
        self.generic_visit(node)


def _module_exists(dotted: str, project: set[str]) -> bool:
    """Whether ``dotted`` names a module (of the project, or an importable third-party one)."""
    if dotted in project:
        return True
    top = dotted.split(".", 1)[0]
    if top in {p.split(".", 1)[0] for p in project}:
        return False
    import importlib.util

    try:
        return importlib.util.find_spec(dotted) is not None
    except (ImportError, ValueError, AttributeError):
        return False


@dataclass(frozen=True)
class ScannedFile:
    path: Path
    importer: str
    refs: tuple[ImportRef, ...]
    classes: tuple[tuple[int, str, list[str]], ...]
    type_checks: tuple[tuple[int, str], ...]
    optim_aliases: frozenset[str]
    private_imports: tuple[tuple[int, list[str]], ...] = ()
    private_access: tuple[tuple[int, str, str | None, str], ...] = ()
    module_names: tuple[tuple[str, str], ...] = ()
    from_names: tuple[tuple[str, str], ...] = ()
    lines: int = 0


def scan(root: Path, packages: Iterable[str] = PACKAGES) -> list[ScannedFile]:
    """Parse every .py file of ``packages`` under ``root``."""
    files = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(root)
            importer = _module_name(root, path)
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text, filename=str(rel))
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
                    tuple(collector.private_imports),
                    tuple(collector.private_access),
                    tuple(sorted(collector.module_names.items())),
                    tuple(sorted(collector.from_names.items())),
                    text.count("\n"),
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


# --- structure (issue 11): cycles, private names, module and class size ----------------------

#: at most this many `from … import _name` lines in samlab, landscape and kernels together
MAX_PRIVATE_IMPORT_LINES = 15
#: a module past this many lines wants a seam (DESIGN.md §2: about 300)
MAX_MODULE_LINES = 400
#: a class with this many base classes is assembled from mixins (DESIGN.md §9.9)
MAX_BASES = 2
#: torch's own private attributes that have no public accessor, read on torch objects (never
#: names of samlab's own attributes): why each is needed
TORCH_INTERNALS = {
    "_version": "a Tensor's in-place version counter: whether .grad changed since a pass",
    "_per_optimizer_states": "GradScaler's per-optimizer record (unscaled or not)",
    "_opt_called": "the flag LR schedulers read to tell that optimizer.step ran",
    "_optimizer_step_pre_hooks": "an optimizer's step pre-hooks (no public getter)",
    "_optimizer_step_post_hooks": "an optimizer's step post-hooks (no public getter)",
}
#: a module-level constant written in upper case with a leading underscore
_PRIVATE_CONSTANT = re.compile(r"(^|\.)_[A-Z][A-Z0-9_]*$")


def import_graph(files: Iterable[ScannedFile]) -> dict[str, dict[str, str]]:
    """importer -> {imported project module: where}. Module- and function-level imports count,
    ``if TYPE_CHECKING:`` ones do not; ``from pkg import sub`` imports ``pkg.sub`` when that is
    a module, else ``pkg``."""
    files = list(files)
    project = {f.importer for f in files}

    def owner(dotted: str) -> str | None:
        while dotted and dotted not in project:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph: dict[str, dict[str, str]] = {f.importer: {} for f in files}
    for scanned in files:
        for ref in scanned.refs:
            if ref.type_only or (ref.from_base is not None and ref.target == ref.from_base):
                continue
            if ref.target in project:
                module = ref.target
            else:
                module = owner(ref.from_base if ref.from_base is not None else ref.target)
            if module is not None and module != ref.importer:
                graph[ref.importer].setdefault(module, ref.where())
    return graph


def _cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def cycle_violations(files: Iterable[ScannedFile]) -> list[str]:
    graph = import_graph(files)
    problems = []
    for component in _cycles(graph):
        members = set(component)
        arrows = [
            f"{a} -> {b} ({where})"
            for a in component
            for b, where in sorted(graph[a].items())
            if b in members
        ]
        problems.append("import cycle: " + "; ".join(arrows))
    return problems


def private_import_violations(files: Iterable[ScannedFile]) -> list[str]:
    lines = [
        f"{f.path.as_posix()}:{line}: from ... import {', '.join(names)}"
        for f in files
        for line, names in f.private_imports
    ]
    if len(lines) <= MAX_PRIVATE_IMPORT_LINES:
        return []
    return [
        f"{len(lines)} `from ... import _name` lines (at most {MAX_PRIVATE_IMPORT_LINES}): "
        "make the name public in its subpackage or move the code to where the name lives",
        *lines,
    ]


def private_access_violations(files: Iterable[ScannedFile]) -> list[str]:
    """``obj._name`` (read, write or through getattr) where ``obj`` is not the object itself,
    a third-party module (``torch._foreach_add_``) or a class of the same file (torch
    internals of :data:`TORCH_INTERNALS` aside). A module of this project is another object:
    its private names stay its own."""
    files = list(files)
    project = {f.importer for f in files}

    def third_party(module: str) -> bool:
        return module.split(".", 1)[0] not in PACKAGES

    problems = []
    for scanned in files:
        allowed = {name for name, module in scanned.module_names if third_party(module)}
        allowed |= {name for _, name, _ in scanned.classes}
        for name, origin in scanned.from_names:
            if third_party(origin) and _module_exists(origin, project):
                allowed.add(name)
        for line, text, root, attr in scanned.private_access:
            if (root is not None and root in allowed) or attr in TORCH_INTERNALS:
                continue
            problems.append(
                f"{scanned.path.as_posix()}:{line}: {text}: reads another object's private "
                "attribute; give that object a public method or property"
            )
    return problems


def size_violations(files: Iterable[ScannedFile]) -> list[str]:
    problems = [
        f"{f.path.as_posix()}: {f.lines} lines (at most {MAX_MODULE_LINES}; split by concept)"
        for f in files
        if f.lines > MAX_MODULE_LINES
    ]
    for scanned in files:
        for line, name, bases in scanned.classes:
            if len(bases) > MAX_BASES:
                problems.append(
                    f"{scanned.path.as_posix()}:{line}: class {name}({', '.join(bases)}) "
                    f"inherits from {len(bases)} classes: compose objects instead of mixins"
                )
    return problems


def patched_constant_violations(root: Path) -> list[str]:
    """Tests steer code through parameters, never by patching a module's ``_UPPER_CASE``: not
    through ``monkeypatch.setattr``/``setitem``/``delattr``, ``mock.patch(...)``,
    ``patch.object``/``patch.dict``, the builtin ``setattr``, nor by assigning or deleting
    ``module._NAME`` directly."""

    def private_constant(node: ast.expr) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value if _PRIVATE_CONSTANT.search(node.value) else None
        if isinstance(node, ast.Attribute) and not _own(node.value):
            return ast.unparse(node) if _PRIVATE_CONSTANT.search(node.attr) else None
        return None

    problems = []
    for path in sorted((root / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(root).as_posix()
        for node in ast.walk(tree):
            found: list[str] = []
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in {"setattr", "delattr", "setitem", "delitem", "patch", "object", "dict"}:
                    found = [
                        n.value
                        for n in node.args[:2]
                        if isinstance(n, ast.Constant) and private_constant(n)
                    ]
            elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
                targets = (
                    node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
                )
                found = [t for t in map(private_constant, targets) if t]
            problems += [
                f"{where}:{node.lineno}: patches {name!r}; make it a constructor or function "
                "parameter"
                for name in found
            ]
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
    "no-import-cycles": cycle_violations,
    "few-private-name-imports": private_import_violations,
    "no-reads-of-other-objects-private-attributes": private_access_violations,
    "modules-small-and-classes-composed": size_violations,
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


def test_tests_do_not_patch_private_module_constants():
    problems = patched_constant_violations(REPO)
    assert not problems, _report("tests-use-parameters-not-patched-constants", problems)


#: ``python -m`` commands run under ``-W error::RuntimeWarning``: (arguments, exit status)
MODULE_RUNS = {
    "forecast": (["samlab.train.forecast", "--help"], 0),
    "classify": (["samlab.train.classify", "--help"], 0),
    "forecast-no-arguments": (["samlab.train.forecast"], 2),
}


@pytest.fixture(scope="module")
def module_runs() -> dict[str, tuple[int, str, str]]:
    """Every :data:`MODULE_RUNS` command, started together (each imports torch for a few
    seconds): name -> (exit status, stdout, stderr)."""
    started = {
        name: subprocess.Popen(
            [sys.executable, "-W", "error::RuntimeWarning", "-m", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for name, (argv, _) in MODULE_RUNS.items()
    }
    done = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=120)
        done[name] = (process.returncode, out, err)
    return done


@pytest.mark.parametrize("name", ["forecast", "classify"])
def test_cli_modules_run_without_runpy_warning(name, module_runs):
    """``python -m`` runs each CLI once: no "found in sys.modules" RuntimeWarning, no second
    import of the library module."""
    code, out, err = module_runs[name]
    assert code == MODULE_RUNS[name][1], err[-2000:]
    assert "RuntimeWarning" not in err and "usage:" in out


def test_forecast_module_without_arguments_fails_cleanly(module_runs):
    code, _, err = module_runs["forecast-no-arguments"]
    assert code == MODULE_RUNS["forecast-no-arguments"][1], err[-2000:]
    assert "--output" in err and "Traceback" not in err


def test_structure_checks_catch_planted_violations(tmp_path: Path):
    big = "x = 1\n" * (MAX_MODULE_LINES + 1)
    files = _plant(
        tmp_path,
        {
            "samlab/__init__.py": "",
            "samlab/a.py": "from samlab import b\n",
            "samlab/b.py": "def f():\n    from samlab.a import thing\n",
            "samlab/c.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from samlab import d\n"
                "from samlab.e import _hidden, public\n"
                "from samlab.models._keras import init\n"
                "import torch\nfrom torch.optim import optimizer as opt_module\n"
                "class Own:\n    _k = 1\n"
                "    def f(self, other):\n"
                "        torch._foreach_add_([], 1)\n"
                "        opt_module._global_optimizer_pre_hooks\n"
                "        Own._k\n        self._x = other._y\n        getattr(other, '_z')\n"
                "        type(self)._k\n        super()._w\n        other.sam._step_index += 1\n"
                "class Mixed(A, B, C):\n    pass\n"
            ),
            "samlab/d.py": "from samlab import c\n",
            "samlab/e.py": big,
            "samlab/f.py": (
                "import samlab.e as e_module\nfrom samlab import d\nimport os\n"
                "def g():\n    return e_module._SECRET, d._helper(), os._exit\n"
            ),
            "tests/test_x.py": (
                "from unittest.mock import patch\n"
                "def test(monkeypatch):\n"
                "    monkeypatch.setattr(mod, '_BUDGET', 1)\n"
                "    monkeypatch.setattr('pkg.mod._PROBE_MIN', 1)\n"
                "    monkeypatch.setattr(mod, '_helper', 1)\n"
                "    mod._LIMIT = 2\n"
                "    setattr(mod, '_LIMIT', 3)\n"
                "    with patch('pkg.mod._LIMIT', 4):\n        pass\n"
                "    monkeypatch.setitem(vars(mod), '_LIMIT', 5)\n"
                "    self._LIMIT = 6\n"
            ),
        },
    )
    cycles = cycle_violations(files)
    assert len(cycles) == 1 and "samlab.a -> samlab.b" in cycles[0], cycles  # not c <-> d
    assert "samlab.b -> samlab.a (samlab/b.py:2)" in cycles[0]
    private = private_import_violations(files * (MAX_PRIVATE_IMPORT_LINES + 1))
    assert private and "samlab/c.py:4: from ... import _hidden" in private[1]
    assert (
        "samlab/c.py:5: from ... import (from the private module samlab.models._keras)"
        in (private[2])
    )
    assert not private_import_violations(files)
    access = [p.split(": ", 2)[1] for p in private_access_violations(files)]
    assert access == [
        "other._y",
        "getattr(other, '_z')",
        "other.sam._step_index",
        "e_module._SECRET",
        "d._helper",
    ], access
    sizes = "\n".join(size_violations(files))
    assert "samlab/e.py" in sizes and "class Mixed(A, B, C)" in sizes
    patched = [p.split(": ", 1)[0] for p in patched_constant_violations(tmp_path)]
    assert set(patched) == {f"tests/test_x.py:{n}" for n in (3, 4, 6, 7, 8, 10)}, patched
    assert len(patched) == 6
