"""Every notebook under notebooks/ is stored clean and runs top to bottom in smoke mode.

In smoke mode every notebook must finish within ``NOTEBOOK_TIMEOUT_S``, and after every cell its
open matplotlib figures are checked by ``tests/figure_checks.py`` (titles, axis labels, legends,
no all-NaN or constant data): a hidden first cell installs the check as an IPython
``post_run_cell`` callback, whose failure the kernel reports as an error output of the cell that
drew the figure.

The kernel is launched from this test's own interpreter (``sys.executable``) through a kernel
spec written for the test, never through whatever ``python3`` kernel spec Jupyter finds first:
the venv's ``python3`` spec says plain ``python``, and a user-level spec may point at another
interpreter entirely.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300
NOTEBOOK_TIMEOUT_S = 150  # per notebook in smoke mode, kernel start included
KERNEL_NAME = "samlab-test-kernel"
_STATE_DIRS = {
    "JUPYTER_RUNTIME_DIR": ".jupyter/runtime",
    "IPYTHONDIR": ".ipython",
    "MPLCONFIGDIR": ".mplconfig",
}


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_notebooks_exist():
    """An empty (or missing) notebooks folder is a failure, not a silently skipped test."""
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_stored_without_outputs(path: Path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        f"cell {index}: {'outputs' if cell.outputs else 'execution_count'}"
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"{path.relative_to(REPO)} stores outputs or execution counts ({', '.join(dirty)}); "
        "clear them before committing (Edit > Clear Outputs of All Cells, then save)"
    )
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    assert kernel == "python3", (
        f"{path.relative_to(REPO)} asks for the kernel {kernel!r}; a user's JupyterLab (make lab) "
        "has 'python3' (the venv's ipykernel): choose it (Kernel > Change Kernel) and save"
    )


@pytest.fixture
def kernel_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An async kernel manager whose kernel is ``sys.executable -m ipykernel_launcher``."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec_dir = tmp_path / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "samlab test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))

    monkeypatch.setenv("SAMLAB_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # Tiny workloads: one OpenMP thread avoids oversubscription when the suite shares the cores
    # (measured: 2 threads on 2 busy cores made a 30-step MLP loop 200x slower).
    if not os.environ.get("OMP_NUM_THREADS"):
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # Keep connection files, IPython profiles and matplotlib caches out of $HOME when pytest is
    # run directly, in the places the Makefile uses (all git-ignored).
    for var, default in _STATE_DIRS.items():
        if not os.environ.get(var):
            monkeypatch.setenv(var, str(REPO / default))

    spec_manager = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=spec_manager)


def _execute(nb, kernel_manager, cwd: Path):
    from nbclient import NotebookClient

    client = NotebookClient(
        nb,
        km=kernel_manager,
        timeout=CELL_TIMEOUT_S,
        startup_timeout=120,
        resources={"metadata": {"path": str(cwd)}},
    )
    return client.execute()


@pytest.mark.notebook
def test_kernel_runs_this_interpreter(kernel_manager, tmp_path: Path):
    """The executing kernel is this interpreter (the venv's), and sees the smoke environment."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(
        cells=[
            new_code_cell(
                "import os, sys\n"
                "print(sys.executable)\n"
                "print(os.environ['SAMLAB_SMOKE'], os.environ['MPLBACKEND'])\n"
                "print(os.getcwd())"
            )
        ]
    )
    _execute(nb, kernel_manager, tmp_path)
    lines = "".join(o.get("text", "") for o in nb.cells[0].outputs).splitlines()
    assert lines[0] == sys.executable
    assert lines[1] == "1 Agg"
    assert Path(lines[2]).resolve() == tmp_path.resolve()
    assert nbformat.validate(nb) is None


def _figure_check_cell():
    from nbformat.v4 import new_code_cell

    tests_dir = str(Path(__file__).resolve().parent)
    return new_code_cell(
        f"import sys\nsys.path.insert(0, {tests_dir!r})\n"
        "import figure_checks\nfigure_checks.install(get_ipython())\n"
        f"sys.path.remove({tests_dir!r})"
    )


def _cell_errors(nb) -> list[str]:
    """``cell N: Name: message`` for every error output (numbered as in the stored notebook)."""
    return [
        f"cell {index - 1}: {output['ename']}: {output['evalue']}"
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]


@pytest.mark.notebook
def test_figure_check_reports_the_cell(kernel_manager, tmp_path: Path):
    """A figure without labels fails in the cell that drew it; a readable one passes."""
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(
        cells=[
            _figure_check_cell(),
            new_code_cell(
                "import matplotlib.pyplot as plt\n"
                "fig, ax = plt.subplots()\nax.plot([1, 2, 3], label='a')\n"
                "ax.set(xlabel='x', ylabel='y', title='fine')"
            ),
            new_code_cell("fig, ax = plt.subplots()\nax.plot([1, 2, 3])\nax.plot([3, 1, 2])"),
        ]
    )
    _execute(nb, kernel_manager, tmp_path)
    errors = _cell_errors(nb)
    assert len(errors) == 1, errors
    assert errors[0].startswith("cell 1: FigureProblem:")
    for problem in ("no title", "no x label", "no y label", "2 lines and no legend"):
        assert problem in errors[0]


@pytest.mark.notebook
@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_executes(path: Path, kernel_manager):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, _figure_check_cell())
    # nbclient raises CellExecutionError (with the cell's traceback) on the first failing cell;
    # a figure problem is an error output of its cell (the callback runs after the cell).
    _execute(nb, kernel_manager, NOTEBOOK_DIR)
    errors = _cell_errors(nb)
    assert not errors, f"{path.name}: " + "\n".join(errors)


SAM_VARIANTS_NOTEBOOK = NOTEBOOK_DIR / "03_sgd_vs_sam_variants.ipynb"


def _cell_text(cell) -> str:
    return "".join(output.get("text", "") for output in cell.outputs)


@pytest.mark.notebook
@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S)
def test_sam_variants_notebook_takes_cifar10_when_present(
    kernel_manager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """With CIFAR-10's files under ``$SAMLAB_DATA`` (a tiny copy in the real pickle format),
    notebook 03's ``DATASET = "auto"`` picks CIFAR-10 and runs its ResNet-20 path in smoke mode
    (augmented training set, fixed Hessian batch, every figure checked), saving its figures and
    table under ``results/notebooks/03_sgd_vs_sam_variants/smoke/cifar10/``."""
    import nbformat

    from tests.image_fixtures import write_cifar10

    write_cifar10(tmp_path / "data", n_train=32, n_test=12)
    monkeypatch.setenv("SAMLAB_DATA", str(tmp_path / "data"))
    out = REPO / "results" / "notebooks" / SAM_VARIANTS_NOTEBOOK.stem / "smoke" / "cifar10"
    for name in ("accuracy.png", "cost_sharpness.png", "results.txt"):
        (out / name).unlink(missing_ok=True)
    nb = nbformat.read(SAM_VARIANTS_NOTEBOOK, as_version=4)
    nb.cells.insert(0, _figure_check_cell())
    _execute(nb, kernel_manager, NOTEBOOK_DIR)
    errors = _cell_errors(nb)
    assert not errors, f"{SAM_VARIANTS_NOTEBOOK.name} on CIFAR-10: " + "\n".join(errors)
    printed = "\n".join(_cell_text(cell) for cell in nb.cells if cell.cell_type == "code")
    found = f"dataset: cifar10 (CIFAR-10 found under {(tmp_path / 'data').resolve()}"
    assert found in printed
    assert "model resnet20_cifar" in printed
    assert "32 training and 12 test samples, Hessian on 4" in printed
    # the printed study commands: one per optimizer, each a valid command line of the trainer
    from samlab.optim import get_optimizer_info, list_optimizers
    from samlab.train.classify.cli import build_run, parse

    prefix = "python -m samlab.train.classify --dataset CIFAR10_cutout --model resnet20_cifar"
    commands = [line.split("#")[0] for line in printed.splitlines() if line.startswith(prefix)]
    sam_family = [name for name in list_optimizers() if get_optimizer_info(name).sam_family]
    assert len(commands) == 1 + len(sam_family), commands
    for command in commands:
        run = build_run(parse(command.split()[3:]))
        assert (run.config.dataset, run.config.augment) == ("cifar10", "cutout")
        assert run.config.model == "resnet20_cifar" and run.seeds == (0, 1, 2) and run.sharpness
    assert [build_run(parse(c.split()[3:])).config.optimizer for c in commands] == [
        "sgd",
        *sam_family,
    ]
    assert (out / "accuracy.png").stat().st_size > 0
    assert (out / "cost_sharpness.png").stat().st_size > 0
    table = (out / "results.txt").read_text()
    assert table.startswith("CIFAR-10 (ResNet-20), 2 seeds")
    for optimizer in ("sgd", "sam", "asam", "gsam", "looksam", "onestep-sam", "ssamf"):
        assert f"\n{optimizer} " in table, f"{optimizer} missing from the table:\n{table}"
