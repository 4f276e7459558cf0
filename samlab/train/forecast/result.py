"""What a forecasting run returns: :class:`ForecastResult`, frozen and a read-only mapping."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, eq=False)
class ForecastResult(Mapping[str, Any]):
    """One finished seed of :func:`~samlab.train.forecast.train_forecaster`, as written to
    ``result.json``.

    Also a read-only mapping over the keys of that file, in its order (``result["test_mse"]``,
    ``dict(result)``): the fields below, then any keys added later to the file (``lambda_max``,
    ``lambda_max_windows`` and ``lambda_max_method`` once
    :func:`~samlab.train.sharpness.run_top_eigenvalue` measured the run), which :attr:`extra`
    holds. It compares equal to a mapping with the same items (``history`` as a list or a
    tuple), e.g. the ``json.load`` of ``result.json``; it pickles and deep-copies (a process
    pool returns it) and :meth:`to_dict` gives the plain dict for ``json.dumps``. Frozen is
    shallow: ``history`` is a tuple of dicts and ``config`` a dict, plain JSON values;
    :meth:`with_items` gives a copy with keys added or changed.
    """

    seed: int
    dataset: str  # as the config names it
    horizon: int
    model: str
    optimizer: str  # "sam" (Adam inside SAM) or "adam"
    rho: float  # the resolved SAM radius (0 for plain Adam)
    lr: float  # the resolved Adam learning rate
    test_mse: float  # of the best-validation weights, on the standardised scale
    test_mae: float
    val_mse: float
    val_mae: float
    best_epoch: int  # 1-based epoch of the lowest validation MSE
    epochs_run: int
    seconds: float  # training and validation time over all epochs (resumed ones included)
    seconds_per_epoch: float
    n_parameters: int
    history: tuple[dict[str, float], ...]  # per epoch: epoch, lr, train_loss, val_mse, ...
    config: dict[str, Any]  # ForecastConfig.to_dict() of the run
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)  # later keys (see above)

    def __post_init__(self) -> None:
        object.__setattr__(self, "history", tuple(self.history))
        clash = set(self.extra) & {*RESULT_KEYS, "extra"}
        if clash:
            raise ValueError(f"extra keys {sorted(clash)} are fields of ForecastResult")
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ForecastResult:
        """The result of a ``result.json`` (keys beyond the fields go to :attr:`extra`)."""
        missing = [k for k in RESULT_KEYS if k not in values]
        if missing:
            raise ValueError(f"a forecasting result needs the keys {missing}")
        extra = {k: v for k, v in values.items() if k not in RESULT_KEYS}
        return cls(**{k: values[k] for k in RESULT_KEYS}, extra=extra)

    def with_items(self, **items: Any) -> ForecastResult:
        """A copy with these keys set (fields replaced, other keys added to :attr:`extra`)."""
        fields = {k: v for k, v in items.items() if k in RESULT_KEYS}
        extra = {**self.extra, **{k: v for k, v in items.items() if k not in RESULT_KEYS}}
        return dataclasses.replace(self, **fields, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON values, in :meth:`keys` order (``history`` as a list)."""
        out = dict(self)
        out["history"] = list(self.history)
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return _comparable(self) == _comparable(other)

    __hash__ = None  # a mapping, like dict

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        # pickle and deepcopy through the plain dict (extra is a read-only mappingproxy)
        return (ForecastResult.from_dict, (self.to_dict(),))

    def __getitem__(self, key: str) -> Any:
        if key in RESULT_KEYS:
            return getattr(self, key)
        return self.extra[key]

    def __iter__(self) -> Iterator[str]:
        yield from RESULT_KEYS
        yield from self.extra

    def __len__(self) -> int:
        return len(RESULT_KEYS) + len(self.extra)


def _comparable(mapping: Mapping[str, Any]) -> dict[str, Any]:
    items = dict(mapping.items())
    if isinstance(items.get("history"), tuple):
        items["history"] = list(items["history"])
    return items


#: the keys of a result (its fields but ``extra``), in the order of ``result.json``
RESULT_KEYS = tuple(f.name for f in dataclasses.fields(ForecastResult) if f.name != "extra")
