"""``python -m landscape COMMAND ...``: surface, plot, project, vtk, hessian, sharpness."""

import sys

from landscape.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m landscape"))
