"""The command line of the classification trainer (``python -m samlab.train.classify``,
``samlab-classify``): flags and their seed spellings (``flags``), dialect defaults and presets
(``presets``), flags to config (``translate``), the runs (``main``)."""

from samlab.train.classify.cli.flags import DIALECTS, OPTIONS, UsageError, build_parser, parse
from samlab.train.classify.cli.main import aggregate, load_data, main
from samlab.train.classify.cli.presets import DEFAULTS, PRESETS, Preset
from samlab.train.classify.cli.translate import Run, build_run

__all__ = [
    "DEFAULTS",
    "DIALECTS",
    "OPTIONS",
    "PRESETS",
    "Preset",
    "Run",
    "UsageError",
    "aggregate",
    "build_parser",
    "build_run",
    "load_data",
    "main",
    "parse",
]
