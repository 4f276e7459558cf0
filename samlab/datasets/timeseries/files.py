"""The forecasting benchmarks' files: specs, search, download.

:class:`DatasetSpec` and the registry :data:`FORECAST_DATASETS` (split rule, the paper's learning
rate, channel count, TSMixer settings, source URL and row count of each benchmark), looked up
case-insensitively by :func:`get_dataset_spec`; :func:`find_dataset_file` searches
``data_dir`` alone when given, else ``$SAMLAB_DATA`` and the repository's
:data:`EMBEDDED_DATA_DIR` (one level of subfolders included); :func:`download_dir` and
:func:`download` fetch a standard copy atomically and check it with
:func:`~samlab.datasets.timeseries.read_series`.
"""

from __future__ import annotations

import os
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from samlab.datasets.timeseries.reader import read_series

#: The data folder shipped with the repository (holds ETTh1.csv).
EMBEDDED_DATA_DIR = Path(__file__).resolve().parents[3] / "data"
#: The benchmark horizons H of the SAMformer and TSMixer papers.
HORIZONS = (96, 192, 336, 720)
_ETT_URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/{}.csv"
# The Autoformer bundle as kept in MOMENT's Time-Series Pile (its exchange_rate.csv has the
# 630,212 bytes); seen at revision af93f4d4b3ce93d2e0011a1a528636471afd9bff.
_PILE_URL = (
    "https://huggingface.co/datasets/AutonLab/Timeseries-PILE/resolve/main/"
    "forecasting/autoformer/{}.csv"
)


@dataclass(frozen=True)
class DatasetSpec:
    """One benchmark: how to split it, the paper's learning rate, and where to get it.

    Attributes:
        name: canonical name, also the file stem (``ETTh1`` -> ``ETTh1.csv``).
        split: ``"ett_hour"``, ``"ett_minute"`` (fixed month borders) or ``"ratio"`` (70/10/20).
        lr: learning rate of SAMformer's ``run_script.sh`` (paper table).
        n_channels: numeric columns after ``date``.
        tsmixer: TSMixer baseline settings ``n_block``, ``dropout``, ``ff_dim``.
        url: a standard public copy of the CSV, used by :func:`download`.
        expected_rows: data rows of the standard file (checked after a download).
        target: the forecast target, the file's last column.
    """

    name: str
    split: str
    lr: float
    n_channels: int
    tsmixer: dict = field(hash=False)
    url: str
    expected_rows: int | None = None
    target: str = "OT"


def _spec(name, split, lr, n_channels, tsmixer, rows) -> DatasetSpec:
    n_block, dropout, ff_dim = tsmixer
    mixer = {"n_block": n_block, "dropout": dropout, "ff_dim": ff_dim}
    url = (_ETT_URL if name.startswith("ETT") else _PILE_URL).format(name)
    return DatasetSpec(name, split, lr, n_channels, mixer, url, rows)


#: name -> spec; lr and TSMixer (n_block, dropout, ff_dim) from SAMformer's run_script.sh.
FORECAST_DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        _spec("ETTh1", "ett_hour", 1e-3, 7, (2, 0.9, 64), 17420),
        _spec("ETTh2", "ett_hour", 1e-3, 7, (2, 0.9, 64), 17420),
        _spec("ETTm1", "ett_minute", 1e-3, 7, (2, 0.9, 64), 69680),
        _spec("ETTm2", "ett_minute", 1e-3, 7, (2, 0.9, 64), 69680),
        _spec("weather", "ratio", 1e-4, 21, (4, 0.3, 32), 52696),
        _spec("exchange_rate", "ratio", 1e-3, 8, (8, 0.7, 64), 7588),
        _spec("electricity", "ratio", 1e-4, 321, (4, 0.7, 64), 26304),
        _spec("traffic", "ratio", 1e-4, 862, (8, 0.7, 64), 17544),
    )
}


def get_dataset_spec(name: str) -> DatasetSpec:
    """The spec of ``name``, matched case-insensitively (``"etth1"`` -> ``ETTh1``)."""
    for key, spec in FORECAST_DATASETS.items():
        if key.lower() == str(name).lower():
            return spec
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(FORECAST_DATASETS)}")


def _search_dirs(data_dir) -> list[Path]:
    """``[data_dir]`` when given (only there); else the ``$SAMLAB_DATA`` folders, then the
    embedded ``data/``. A named folder that does not exist is an error."""
    if data_dir is not None:
        folder = Path(data_dir)
        if folder.is_file():
            raise ValueError(
                f"data_dir {str(data_dir)!r} is a file; --data-dir (data_dir=) names the folder "
                f"holding it (--data-dir {folder.parent}), or give the file itself as path="
            )
        if not folder.is_dir():
            raise FileNotFoundError(
                f"data_dir {str(data_dir)!r}: no such folder; pass the folder holding the CSV"
            )
        return [folder]
    env = os.environ.get("SAMLAB_DATA")
    dirs = [Path(p) for p in env.split(os.pathsep) if p] if env else []
    for folder in dirs:
        if not folder.is_dir():
            raise FileNotFoundError(
                f"$SAMLAB_DATA names {str(folder)!r}, which is not a folder; fix or unset "
                "SAMLAB_DATA, or pass --data-dir DIR"
            )
    return [*dirs, EMBEDDED_DATA_DIR]


def _match_in(folder: Path, stem: str) -> Path | None:
    """``folder/<stem>.csv`` or ``.csv.gz`` (file names compared case-insensitively)."""
    if not folder.is_dir():
        return None
    files = {p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_file()}
    for suffix in (".csv", ".csv.gz"):
        if (stem + suffix).lower() in files:
            return files[(stem + suffix).lower()]
    return None


def find_dataset_file(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Locate ``<name>.csv`` or ``<name>.csv.gz``.

    With ``data_dir``: only there (a folder; a file or a missing folder is an error, and so is
    a folder without the file: the data asked for is never replaced by other data). Without
    it: each folder of ``$SAMLAB_DATA`` (each must exist), then the repository's ``data/``. In
    each folder the file itself first, then one level of subfolders (``DIR/ett/ETTh1.csv``), so
    a folder holding ``ett/ETTh1.csv`` works as a data dir.
    """
    known = [k for k in FORECAST_DATASETS if k.lower() == str(name).lower()]
    stem = known[0] if known else str(name)
    tried: list[str] = []
    for folder in _search_dirs(data_dir):
        tried += [str(folder / f"{stem}{s}") for s in (".csv", ".csv.gz")]
        tried += [str(folder / "*" / f"{stem}{s}") for s in (".csv", ".csv.gz")]
        subdirs = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        for candidate in (folder, *subdirs):
            found = _match_in(candidate, stem)
            if found is not None:
                return found
    where = (
        f"data_dir {str(data_dir)!r} has no {stem}.csv(.gz) (the embedded data is not read instead)"
        if data_dir is not None
        else f"no data file for {stem!r}"
    )
    raise FileNotFoundError(
        f"{where}; tried:\n  " + "\n  ".join(tried) + "\n"
        "Pass --data-dir DIR (data_dir=...) or set SAMLAB_DATA, or fetch it with "
        f"`python -m samlab.datasets.timeseries --download {stem} --data-dir DIR`."
    )


def download_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Where ``--download`` saves: ``data_dir``, else the first ``$SAMLAB_DATA`` entry, else the
    repository's ``data/`` folder (all three are searched by :func:`find_dataset_file`)."""
    env = os.environ.get("SAMLAB_DATA", "").split(os.pathsep)[0]
    return Path(data_dir or env or EMBEDDED_DATA_DIR)


def download(name: str, data_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Fetch ``spec.url`` to ``data_dir/<name>.csv`` (temp file + rename; rows checked).

    An existing file is kept unless ``overwrite``. The ETT files come from
    github.com/zhouhaoyi/ETDataset, the others from the Autoformer bundle mirrored in
    huggingface.co/datasets/AutonLab/Timeseries-PILE (``forecasting/autoformer``).
    """
    spec = get_dataset_spec(name)
    folder = Path(data_dir)
    dest = folder / f"{spec.name}.csv"
    if dest.exists() and not overwrite:
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        request = urllib.request.Request(spec.url, headers={"User-Agent": "samlab"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=60) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        try:
            _, values = read_series(tmp)
        except ValueError as err:
            raise ValueError(f"{spec.url}: not a valid {spec.name} CSV: {err}") from None
        if spec.expected_rows is not None and len(values) != spec.expected_rows:
            raise ValueError(
                f"{spec.url}: got {len(values)} rows, expected {spec.expected_rows}; not saved"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
