"""``python -m samlab.demo``: the command line of :mod:`samlab.demo.cli`."""

from samlab.demo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
