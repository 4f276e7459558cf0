"""``python -m samlab.demo``: the command line of :mod:`samlab.demo.cli`."""

from samlab.demo.cli import main

raise SystemExit(main())
