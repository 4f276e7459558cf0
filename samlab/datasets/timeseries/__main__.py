"""``python -m samlab.datasets.timeseries``: a benchmark's rows, splits and window counts, or
a standard copy of its CSV fetched.

    python -m samlab.datasets.timeseries --info ETTh1 [--data-dir DIR] [--seq-len L]
    python -m samlab.datasets.timeseries --download weather [--data-dir DIR] [--overwrite]
"""

from __future__ import annotations

import argparse

from landscape.cli.exits import run_command
from samlab.datasets.timeseries.files import (
    HORIZONS,
    download,
    download_dir,
    find_dataset_file,
    get_dataset_spec,
)
from samlab.datasets.timeseries.reader import read_cached
from samlab.datasets.timeseries.windows import split_borders

DESCRIPTION = (
    "Long-horizon forecasting benchmarks (ETT, weather, exchange_rate, electricity, traffic)."
)


def _print_info(name: str, data_dir, seq_len: int) -> None:
    spec = get_dataset_spec(name)
    path = find_dataset_file(spec.name, data_dir)
    columns, values = read_cached(path)
    borders = split_borders(spec, len(values), seq_len)
    print(f"{spec.name}: {path}")
    print(f"rows {len(values)}, {len(columns)} channels: {', '.join(columns)}")
    print(
        f"split {spec.split}, seq_len {seq_len}: "
        + ", ".join(f"{k} [{a}, {b}) = {b - a} rows" for k, (a, b) in borders.items())
    )
    for h in HORIZONS:
        counts = [max(b - a - seq_len - h + 1, 0) for a, b in borders.values()]
        print(f"H={h}: windows train/val/test = " + "/".join(map(str, counts)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m samlab.datasets.timeseries", description=DESCRIPTION
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--download", metavar="NAME", help="fetch a dataset's CSV")
    action.add_argument("--info", metavar="NAME", help="rows, columns, splits, window counts")
    parser.add_argument("--data-dir", help="folder (default: $SAMLAB_DATA, else repo data/)")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.download:
            print(download(args.download, download_dir(args.data_dir), overwrite=args.overwrite))
        else:
            _print_info(args.info, args.data_dir, args.seq_len)
        return 0

    # one line for a missing file, bad data or the network (exit 1), 130/143 on interrupts
    return run_command(body, lambda status: "interrupted; rerun the same command")


if __name__ == "__main__":
    raise SystemExit(main())
