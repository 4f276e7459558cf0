"""``<surf_file>.json`` beside a surface (or eigenvalue map) file: the resolved command and one
entry per run (DESIGN.md §6).

The record is checked before any work starts (:func:`read_runs`): a file that is not valid JSON,
or holds something other than ``{"config": ..., "runs": [...]}`` (a list, a number, ...), is
refused with a one-line error naming it rather than being silently replaced, so no earlier run
is lost; ``--overwrite`` starts a new record. It is written with
:func:`landscape.io.atomic.atomic_write` (never half-written).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from landscape.cli.inputs import CLIError
from landscape.io.atomic import atomic_write


def sidecar_path(surf_file: Path) -> Path:
    """``<surf_file>.json``."""
    return surf_file.with_name(surf_file.name + ".json")


def read_runs(surf_file: Path, *, replace_bad: bool = False) -> list[Any]:
    """The runs recorded beside ``surf_file`` (``[]`` when there is no record yet).

    A record that is not one raises :class:`CLIError` naming it, unless ``replace_bad``
    (``--overwrite``): then it is treated as empty and replaced when the run ends.
    """
    sidecar = sidecar_path(surf_file)
    if not sidecar.exists():
        return []
    hint = "move it away (or repair it) and rerun, or pass --overwrite to start a new record"
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        if replace_bad:
            return []
        detail = " ".join(str(err).split())
        raise CLIError(
            f"{sidecar} (the record of the runs of {surf_file.name}) is not readable JSON "
            f"({detail}); {hint}"
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("runs", []), list):
        if replace_bad:
            return []
        held = type(record).__name__ if not isinstance(record, dict) else "a non-list 'runs'"
        raise CLIError(
            f"{sidecar} (the record of the runs of {surf_file.name}) holds {held}, not "
            f'{{"config": ..., "runs": [...]}}; {hint}'
        )
    return list(record.get("runs", []))


def write_sidecar(
    path: Path, config: dict[str, Any], run: dict[str, Any], *, replace_bad: bool = False
) -> Path:
    """Append ``run`` to ``<surf_file>.json`` (with the resolved ``config``), atomically."""
    runs = read_runs(path, replace_bad=replace_bad)
    runs.append(run)
    text = json.dumps({"config": config, "runs": runs}, indent=2, default=str)
    return atomic_write(sidecar_path(path), text + "\n")
