"""``python -m samlab.train.classify``: see :mod:`samlab.train.classify.cli.main`."""

from samlab.train.classify.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
