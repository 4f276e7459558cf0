"""Command line: ``python -m landscape {surface,plot,project,vtk}`` (console script
``samlab-landscape``).

The flags are those of tomgoldstein/loss-landscape's ``plot_surface.py``, ``plot_2D.py``,
``plot_1D.py``, ``plot_trajectory.py`` and ``h52vtp.py``, with the same meaning, so an old
command runs with the script name changed and the model / data given as importable factories::

    python -m landscape surface --model mymodels:resnet --model_file ckpt.pt \\
        --data mydata:train --x -1:1:51 --y -1:1:51 --surf_file surf.h5 --plot
    mpiexec -n 2 python -m mpi4py -m landscape surface ... --mpi
    python -m landscape plot --surf_file surf.h5
    python -m landscape project --trajectory checkpoints/ --surf_file surf.h5
    python -m landscape vtk --surf_file surf.h5 --log

Models and data come from ``MODULE:FACTORY`` names resolved with importlib at run time (the
current directory is put on ``sys.path``), e.g. ``samlab.models:digits_cnn``; this package never
imports them itself. Checkpoints load with ``torch.load(weights_only=True)`` (a dict with a
``model`` entry, or a plain state_dict); direction and surface files are plain HDF5. Code runs
only from a factory the user names.

Deviations from loss-landscape (each recorded where it matters):

- ``--xnorm/--ynorm`` default to ``filter`` and ``--xignore/--yignore`` to ``biasbn`` (the
  paper's setting; loss-landscape's empty defaults give raw N(0, 1) directions and move every
  1-D tensor by a copy of itself). An explicit empty value (``--xnorm ""``) still means "none".
  The surface file records the values used (``directions``) and these defaults
  (``flag_defaults``).
- ``--seed`` is honoured (loss-landscape hard-codes 123) and ``--idx N`` draws another direction
  (seed + N; loss-landscape's ``--idx`` only changes the file name).
- ``--data_split S --split_idx I`` takes part I of a seeded random split into S parts
  (loss-landscape ignores ``--split_idx``).
- ``--x``/``--y`` need an integer count and accept ranges starting or ending at 0.
- ``--threads`` sets torch's intra-op threads (loss-landscape: DataLoader workers; here the
  data are materialised once). Under ``--mpi`` a rank uses 1 thread unless told otherwise.
- Direction and surface files are validated, never silently reused: an existing surface file is
  resumed only when its grid, directions, model and data match, and is otherwise refused
  unless ``--overwrite``. Figures, projections and ``.vtp`` files are regenerated freely.
- Beside the surface file, ``<surf_file>.json`` keeps the resolved command (DESIGN.md §6), one
  entry per run with the per-rank share of the points.

User mistakes (unknown module or factory, missing files, malformed flags, mismatching files,
empty data) end with a one-line ``error:`` message and exit status 1 (2 for flag syntax);
``LANDSCAPE_TRACEBACK=1`` shows the traceback instead.

The code: this module holds :func:`main`; the parser and the commands are defined in private
modules beside it, their public names re-exported here: ``_cli_parser.py`` (the argparse parser,
:func:`parse_range`), ``_cli_options.py`` (its shared argument groups and argument types),
``_cli_inputs.py`` (:class:`CLIError`, the run's context, factories, checkpoints, data, file
names and directions), ``_cli_surface.py`` (``surface``) and ``_cli_plot.py`` (``plot``,
``project``, ``vtk`` and the figures of ``surface --plot``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

# Defined in the private modules, importable from here as before.
from landscape._cli_inputs import FLAG_DEFAULTS as FLAG_DEFAULTS
from landscape._cli_inputs import CLIError as CLIError
from landscape._cli_inputs import _Context
from landscape._cli_inputs import build_data as build_data
from landscape._cli_inputs import build_model as build_model
from landscape._cli_inputs import default_dir_file as default_dir_file
from landscape._cli_inputs import default_surf_file as default_surf_file
from landscape._cli_inputs import load_state as load_state
from landscape._cli_inputs import resolve_factory as resolve_factory
from landscape._cli_options import IGNORE_CHOICES as IGNORE_CHOICES
from landscape._cli_options import NORM_CHOICES as NORM_CHOICES
from landscape._cli_parser import _join_negative_values
from landscape._cli_parser import build_parser as build_parser
from landscape._cli_parser import parse_range as parse_range
from landscape._cli_plot import cmd_plot as cmd_plot
from landscape._cli_plot import cmd_project as cmd_project
from landscape._cli_plot import cmd_vtk as cmd_vtk
from landscape._cli_surface import cmd_surface as cmd_surface

__all__ = ["CLIError", "build_parser", "main", "parse_range"]


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run the command line; returns the exit status (0 on success)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if prog is None:
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "samlab-landscape"
        if prog in ("__main__.py", "-m", "-c", ""):
            prog = "python -m landscape"
    parser = build_parser(prog)
    try:
        args = parser.parse_args(_join_negative_values(argv))
    except SystemExit as exit_:  # argparse: usage errors (2) and --help (0)
        return int(exit_.code or 0)
    args.argv = argv
    context = _Context()
    commands: dict[str, Callable[[argparse.Namespace, _Context], None]] = {
        "surface": cmd_surface,
        "plot": cmd_plot,
        "project": cmd_project,
        "vtk": cmd_vtk,
    }
    try:
        commands[args.command](args, context)
    except (CLIError, ValueError, FileNotFoundError, FileExistsError) as err:
        if os.environ.get("LANDSCAPE_TRACEBACK", "") not in ("", "0"):
            raise
        message = " ".join(str(err).split())
        where = f"[rank {context.rank}] " if context.size > 1 else ""
        sys.stdout.flush()
        sys.stderr.write(f"{prog} {args.command}: {where}error: {message}\n")
        sys.stderr.flush()
        if context.comm is not None and context.size > 1:
            try:
                context.comm.Abort(1)
            finally:
                os._exit(1)
        return 1
    except BaseException:
        if context.comm is not None and context.size > 1:
            from landscape.distributed import _abort

            _abort(context.comm)
        raise
    return 0
