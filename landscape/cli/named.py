"""Bare names for ``--model`` and ``--dataset``: factories that installed packages register.

A package registers a model factory in the entry-point group ``landscape.models`` and a data
factory in ``landscape.datasets`` (``[project.entry-points."landscape.models"]`` in its
``pyproject.toml``; samlab registers its models and data this way). ``--model NAME`` then calls
the model entry as::

    factory(config=<the --model_file checkpoint's config, or None>, **model_kwargs)

and ``--dataset NAME`` (``--dataset_name N`` naming the data set inside the family) the data
entry as::

    factory(name=N or None, config=<the checkpoint's config or None>, split="train"|"test",
            **data_kwargs)

A ``MODULE:FACTORY`` name is still resolved by import (:func:`landscape.cli.inputs.
resolve_factory`) and called with the keyword arguments alone. This package never imports the
registering packages itself: the names are looked up in the installed distributions' metadata
(``importlib.metadata``) when a command runs, or in a table given to :class:`NamedFactories`
(tests).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["DATA_GROUP", "MODEL_GROUP", "NamedFactories", "is_factory_spec", "is_name"]

MODEL_GROUP = "landscape.models"
DATA_GROUP = "landscape.datasets"

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def is_factory_spec(text: str) -> bool:
    """``MODULE:FACTORY`` (resolved by import), as opposed to a registered name."""
    return ":" in text


def is_name(text: str) -> bool:
    """A bare name as entry points spell them (letters, digits, ``_``, ``.``, ``-``)."""
    return bool(NAME.match(text))


class NamedFactories:
    """The factories registered under the entry-point groups, by name.

    ``table`` (for tests): ``{group: {name: factory}}`` where a factory is a callable or a
    ``"module:attr"`` string; ``None`` reads the installed distributions' entry points.
    """

    def __init__(self, table: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._table = table

    def entries(self, group: str) -> dict[str, Any]:
        """``{name: callable, "module:attr" string or EntryPoint}`` of ``group``."""
        if self._table is not None:
            return dict(self._table.get(group, {}))
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group=group)}

    def names(self, group: str) -> list[str]:
        """The registered names of ``group``, sorted."""
        return sorted(self.entries(group))

    def load(self, group: str, name: str, flag: str) -> Callable[..., Any]:
        """The factory registered as ``name``; a ``ValueError`` (a one-line CLI error) listing
        the registered names when there is none, or naming the entry when it cannot be
        loaded."""
        entries = self.entries(group)
        if name not in entries:
            known = ", ".join(sorted(entries)) or "none (no installed package registers any)"
            raise ValueError(
                f"{flag} {name}: no such registered name (entry-point group {group}); "
                f"registered: {known}. Or give an importable MODULE:FACTORY"
            )
        entry = entries[name]
        try:
            if isinstance(entry, str):
                module, _, attr = entry.partition(":")
                target: Any = importlib.import_module(module)
                for part in attr.split("."):
                    target = getattr(target, part)
            elif callable(entry) and not hasattr(entry, "load"):
                target = entry
            else:
                target = entry.load()
        except (ImportError, AttributeError) as err:
            value = getattr(entry, "value", entry)
            raise ValueError(
                f"{flag} {name}: the registered factory {value} cannot be loaded: {err}"
            ) from None
        if not callable(target):
            raise ValueError(f"{flag} {name}: the registered entry is not callable")
        return target


def call_named(factory: Callable[..., Any], flag: str, name: str, kwargs: Mapping[str, Any]):
    """``factory(**kwargs)``; its ``ValueError`` / ``TypeError`` become one ``ValueError``
    naming the flag once (the CLI reports it in one line)."""
    try:
        return factory(**kwargs)
    except (ValueError, TypeError) as err:
        prefix = f"{flag} {name}:"
        message = str(err)
        raise ValueError(message if message.startswith(prefix) else f"{prefix} {message}") from None
