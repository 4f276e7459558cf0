"""``python -m landscape {surface,plot,project,vtk,hessian,sharpness} ...`` (:mod:`landscape.cli`)."""

import sys

from landscape.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m landscape"))
