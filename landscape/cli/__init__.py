"""Command line: ``python -m landscape {surface,plot,project,vtk,hessian,sharpness}``
(console script ``samlab-landscape``).

The flags are those of tomgoldstein/loss-landscape's ``plot_surface.py``, ``plot_2D.py``,
``plot_1D.py``, ``plot_trajectory.py`` and ``h52vtp.py``, with the same meaning, so an old
command runs with the script name changed and the model / data given as importable factories::

    python -m landscape surface --model mymodels:resnet --model_file ckpt.pt \\
        --data mydata:train --x -1:1:51 --y -1:1:51 --surf_file surf.h5 --plot
    mpiexec -n 2 python -m mpi4py -m landscape surface ... --mpi
    python -m landscape plot --surf_file surf.h5
    python -m landscape project --trajectory checkpoints/ --surf_file surf.h5
    python -m landscape vtk --surf_file surf.h5 --log
    python -m landscape hessian --model mymodels:resnet --model_file ckpt.pt --data mydata:train \\
        --topk 3 --trace --output hessian.json
    mpiexec -n 2 python -m mpi4py -m landscape hessian ... --topk 3 --trace --mpi
    python -m landscape hessian --model ... --data ... --eigmap --x=-1:1:11 --y=-1:1:11
    python -m landscape sharpness --model ... --data ... --measure worst_case --rho 0.05

Models and data come from ``MODULE:FACTORY`` names resolved with importlib at run time (the
current directory is put on ``sys.path``), e.g. ``samlab.models:digits_cnn``, or from bare names
that installed packages register as entry points (groups ``landscape.models`` and
``landscape.datasets``, :mod:`~landscape.cli.named`): ``--model samformer --model_file best.pt
--dataset samformer_datasets --dataset_name ETTh1`` with samlab installed. This package never
imports them itself. ``--data`` wins over ``--dataset``/``--dataset_name``.

Devices (the rule of every command line here, :mod:`landscape.devices`): ``--device cuda[:N]``
that this machine lacks is an error; the habit flag ``--cuda`` without a GPU prints ``note:
--cuda: no CUDA device, running on CPU`` and runs on the CPU.

Checkpoints load with ``torch.load(weights_only=True)`` (a dict with a ``model`` entry, or a
plain state_dict); direction and surface files are plain HDF5. Code runs only from a factory
the user names or an installed package registers.

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

Every command ends in one line, never a traceback (:mod:`~landscape.cli.exits`): user mistakes
(unknown module or factory, missing or damaged files, malformed flags, mismatching files, empty
data, a full disk) print an ``error:`` line and exit with status 1, malformed flag syntax with 2,
anything unexpected ``error: <type>: ... (run with SAMLAB_DEBUG=1 for the traceback)`` with 1;
Ctrl-C exits with 130 and SIGTERM with 143, leaving a surface file resumable.
``SAMLAB_DEBUG=1`` (or ``LANDSCAPE_TRACEBACK=1``) shows the traceback instead.

The code: :mod:`~landscape.cli.entry` (:func:`main`), :mod:`~landscape.cli.parser` (the argparse
parser, :func:`parse_range`), :mod:`~landscape.cli.options` (its shared argument groups and
argument types), :mod:`~landscape.cli.inputs` (:class:`CLIError`, the run's context, factories,
checkpoints, data), :mod:`~landscape.cli.named` (registered names),
:mod:`~landscape.cli.directions` (the directions of a run and the default
file names), :mod:`~landscape.cli.ranks` (MPI ranks and devices), :mod:`~landscape.cli.figures`
(reading surfaces and drawing figures), :mod:`~landscape.cli.exits` (exit statuses, the one-line
error, SIGTERM), :mod:`~landscape.cli.budget` (grids too large for the machine),
:mod:`~landscape.cli.sidecar` (``<surf_file>.json``) and one module per subcommand:
:mod:`~landscape.cli.surface`, :mod:`~landscape.cli.plot`, :mod:`~landscape.cli.project`,
:mod:`~landscape.cli.vtk`, :mod:`~landscape.cli.hessian` (with :mod:`~landscape.cli.hessian_mpi`
for ``--mpi`` and :mod:`~landscape.cli.eigmap` for ``--eigmap``) and
:mod:`~landscape.cli.sharpness`, the last two sharing :mod:`~landscape.cli.curvature`.
"""

from landscape.cli.directions import FLAG_DEFAULTS, default_dir_file, default_surf_file
from landscape.cli.entry import main
from landscape.cli.inputs import CLIError, build_data, build_model, load_state, resolve_factory
from landscape.cli.named import NamedFactories
from landscape.cli.options import IGNORE_CHOICES, NORM_CHOICES
from landscape.cli.parser import build_parser, parse_range
from landscape.cli.plot import cmd_plot
from landscape.cli.project import cmd_project
from landscape.cli.surface import cmd_surface
from landscape.cli.vtk import cmd_vtk

__all__ = [
    "FLAG_DEFAULTS",
    "IGNORE_CHOICES",
    "NORM_CHOICES",
    "NamedFactories",
    "CLIError",
    "build_data",
    "build_model",
    "build_parser",
    "cmd_plot",
    "cmd_project",
    "cmd_surface",
    "cmd_vtk",
    "default_dir_file",
    "default_surf_file",
    "load_state",
    "main",
    "parse_range",
    "resolve_factory",
]
