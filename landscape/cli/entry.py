"""The entry point of :mod:`landscape.cli`: :func:`main` parses the flags, runs the subcommand
and ends in one line whatever happens (:mod:`landscape.cli.exits`: exit status 1 for bad data
or files, 2 for usage, 130 / 143 for Ctrl-C / SIGTERM), ending every MPI rank when one fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from landscape.cli import exits
from landscape.cli.hessian import cmd_hessian
from landscape.cli.inputs import Context
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


def _resumable(args: argparse.Namespace) -> bool:
    """Whether a stopped run keeps its finished points (a surface, an eigenvalue map)."""
    return args.command == "surface" or bool(getattr(args, "eigmap", False))


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
        with exits.sigterm_as_exception():
            COMMANDS[args.command](args, context)
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001 - every failure ends in one line
        return _fail(err, args, context, prog)
    return exits.EXIT_OK


def _fail(err: BaseException, args: argparse.Namespace, context: Context, prog: str) -> int:
    """Report ``err`` in one line (the traceback with ``SAMLAB_DEBUG=1``) and return the exit
    status; under MPI end every rank of the job instead of returning."""
    status = exits.interrupt_status(err)
    mpi = context.comm is not None and context.size > 1
    if status is None:
        status = exits.EXIT_FAILED
        where = f"[rank {context.rank}] " if mpi else ""
        if exits.debugging():
            if not mpi:
                raise err
            message = f"{prog} {args.command}: [rank {context.rank}]\n{traceback.format_exc()}"
        else:
            message = f"{prog} {args.command}: {where}error: {exits.error_message(err)}"
    else:
        message = f"{prog} {args.command}: {exits.interrupt_message(status, _resumable(args))}"
    if mpi:
        from landscape.mpi.failure import end_job

        if status != exits.EXIT_FAILED and context.rank != 0:
            message = ""  # every rank was signalled: rank 0 says it once
        end_job(context.comm, message, status)
    sys.stdout.flush()
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    return status
