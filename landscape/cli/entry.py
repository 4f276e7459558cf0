"""The entry point of :mod:`landscape.cli`: :func:`main` parses the flags, runs the subcommand
and reports a user mistake in one line (exit status 1), ending every MPI rank when one fails.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from landscape.cli.hessian import cmd_hessian
from landscape.cli.inputs import CLIError, Context
from landscape.cli.parser import build_parser, join_negative_values
from landscape.cli.plot import cmd_plot
from landscape.cli.project import cmd_project
from landscape.cli.sharpness import cmd_sharpness
from landscape.cli.surface import cmd_surface
from landscape.cli.vtk import cmd_vtk

#: subcommand -> the function running it
COMMANDS: dict[str, Callable[[argparse.Namespace, Context], None]] = {
    "surface": cmd_surface,
    "plot": cmd_plot,
    "project": cmd_project,
    "vtk": cmd_vtk,
    "hessian": cmd_hessian,
    "sharpness": cmd_sharpness,
}


def main(argv: Sequence[str] | None = None, prog: str | None = None, *, names: Any = None) -> int:
    """Run the command line; returns the exit status (0 on success).

    ``names``: where bare ``--model`` / ``--dataset`` names are looked up (a
    :class:`~landscape.cli.named.NamedFactories`; default: the installed entry points)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if prog is None:
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "samlab-landscape"
        if prog in ("__main__.py", "-m", "-c", ""):
            prog = "python -m landscape"
    parser = build_parser(prog)
    try:
        args = parser.parse_args(join_negative_values(argv))
    except SystemExit as exit_:  # argparse: usage errors (2) and --help (0)
        return int(exit_.code or 0)
    args.argv = argv
    context = Context(names)
    try:
        COMMANDS[args.command](args, context)
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
            from landscape.mpi import abort

            abort(context.comm)
        raise
    return 0
