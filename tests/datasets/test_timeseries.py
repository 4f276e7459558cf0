"""Forecasting CSV readers: the standard splits and their window counts, the
train-only scaler, vectorised windows, error messages and the (offline) download flow."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from samlab.datasets import timeseries as ts
from samlab.datasets.timeseries import (
    FORECAST_DATASETS,
    StandardScaler,
    WindowDataset,
    find_dataset_file,
    get_dataset_spec,
    load_forecast_data,
    read_series,
    split_borders,
)
from samlab.datasets.timeseries import __main__ as ts_cli
from samlab.datasets.timeseries import files as ts_files
from samlab.datasets.timeseries import reader as ts_reader

REPO = Path(__file__).resolve().parents[2]
EMBEDDED = REPO / "data"
SHARED = REPO.parent / "shared" / "data"
ETTH1_SHA256 = "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066"
HORIZONS = (96, 192, 336, 720)

# The standard splits' train/val/test window counts at L=512, per horizon (12/4/4 months for ETT).
WINDOWS = {
    "ETTh": ((8033, 2785, 2785), (7937, 2689, 2689), (7793, 2545, 2545), (7409, 2161, 2161)),
    "ETTm": ((33953, 11425, 11425), (33857, 11329, 11329), (33713, 11185, 11185),
             (33329, 10801, 10801)),
    "exchange_rate": ((4704, 665, 1422), (4608, 569, 1326), (4464, 425, 1182), (4080, 41, 798)),
    "weather": ((36280, 5175, 10444), (36184, 5079, 10348), (36040, 4935, 10204),
                (35656, 4551, 9820)),
}  # fmt: skip


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-6) -> None:
    # numpy's check: torch.testing.assert_close costs ~1.5 s of imports on its first call
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=tol, atol=tol)


def _counts(data) -> tuple[int, int, int]:
    return len(data.train), len(data.val), len(data.test)


def _write_series(path: Path, header: str, n: int, step_min: int, *, newline="\n", seed=0):
    """An Autoformer-format CSV of ``n`` rows: dates every ``step_min`` minutes, random values."""
    width = header.count(",")
    values = np.random.default_rng(seed).normal(size=(n, width)) * 3 + np.arange(width)
    start = np.datetime64("2016-07-01T00:00", "m")
    dates = np.datetime_as_string(start + np.arange(n) * step_min, unit="s")
    buf = io.StringIO()
    np.savetxt(buf, values, fmt="%.4f", delimiter=",")
    rows = [f"{d.replace('T', ' ')},{v}" for d, v in zip(dates, buf.getvalue().splitlines())]
    text = newline.join([header, *rows]) + newline
    path.write_bytes(text.encode("utf-8").replace(b"<B2>", b"\xb2"))  # one invalid UTF-8 byte
    return path


def _gzip_copy(src: Path, dest: Path) -> Path:
    with src.open("rb") as fin, gzip.open(dest, "wb", compresslevel=1) as fout:
        shutil.copyfileobj(fin, fout)
    return dest


@pytest.fixture(scope="module")
def ettm_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ettm")
    return _write_series(folder / "ETTm1.csv", "date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT", 69680, 15)


@pytest.fixture(scope="module")
def weather_file(tmp_path_factory) -> Path:
    names = [f"v{i} (\ufffdmol/m\ufffd/s)" for i in range(19)] + ["rain (mm<B2>)", "OT"]
    header = ",".join(["date", *names])
    folder = tmp_path_factory.mktemp("weather")
    return _write_series(folder / "weather.csv", header, 52696, 10, newline="\r\n")


def _shared(relative: str) -> Path:
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared benchmark data lives beside the repository)")
    return path


# --- specs and file search -----------------------------------------------------------------


def test_specs_and_case_insensitive_lookup() -> None:
    assert list(FORECAST_DATASETS) == [
        "ETTh1", "ETTh2", "ETTm1", "ETTm2", "weather", "exchange_rate", "electricity", "traffic"
    ]  # fmt: skip
    channels = [s.n_channels for s in FORECAST_DATASETS.values()]
    assert channels == [7, 7, 7, 7, 21, 8, 321, 862]
    assert get_dataset_spec("etth1") is FORECAST_DATASETS["ETTh1"]
    assert get_dataset_spec("Exchange_Rate").lr == 1e-3
    assert get_dataset_spec("TRAFFIC").tsmixer == {"n_block": 8, "dropout": 0.7, "ff_dim": 64}
    assert {get_dataset_spec(n).lr for n in ("weather", "electricity", "traffic")} == {1e-4}
    assert get_dataset_spec("ETTm2").split == "ett_minute"
    assert all(s.url.startswith("https://") for s in FORECAST_DATASETS.values())
    hash(get_dataset_spec("ETTh1"))  # frozen and hashable despite the tsmixer dict
    with pytest.raises(ValueError, match=r"unknown dataset 'ETTh3'.*ETTh1, ETTh2.*traffic"):
        get_dataset_spec("ETTh3")


def test_embedded_etth1_is_found_without_configuration(monkeypatch) -> None:
    monkeypatch.delenv("SAMLAB_DATA", raising=False)
    path = find_dataset_file("etth1")
    assert path == EMBEDDED / "ETTh1.csv"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ETTH1_SHA256


def test_search_order_and_subfolders(tmp_path, monkeypatch) -> None:
    first, second = tmp_path / "arg", tmp_path / "env"
    (first / "nested").mkdir(parents=True)
    (second).mkdir()
    _gzip_copy(EMBEDDED / "ETTh1.csv", first / "nested" / "ETTh1.csv.gz")
    shutil.copy(EMBEDDED / "ETTh1.csv", second / "ETTh1.csv")
    monkeypatch.setenv("SAMLAB_DATA", str(second))
    assert find_dataset_file("ETTh1", first) == first / "nested" / "ETTh1.csv.gz"
    assert find_dataset_file("ETTh1") == second / "ETTh1.csv"


def test_a_named_location_without_the_file_is_an_error(tmp_path, monkeypatch) -> None:
    """A data_dir lacking the file, naming a file or missing, and a missing $SAMLAB_DATA
    folder, are errors: the embedded ETTh1 is never read instead of the data asked for."""
    monkeypatch.delenv("SAMLAB_DATA", raising=False)
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileNotFoundError, match="data_dir .*mine.* has no ETTh1.csv.*not read"):
        find_dataset_file("ETTh1", tmp_path / "mine")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_dataset_file("ETTh1", tmp_path / "absent")
    shutil.copy(EMBEDDED / "ETTh1.csv", tmp_path / "ETTh1.csv")
    with pytest.raises(ValueError, match=r"is a file; .*names the folder"):
        find_dataset_file("ETTh1", tmp_path / "ETTh1.csv")
    monkeypatch.setenv("SAMLAB_DATA", str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match=r"\$SAMLAB_DATA names .*gone.*not a folder"):
        find_dataset_file("ETTh1")
    monkeypatch.setenv("SAMLAB_DATA", str(tmp_path / "mine"))  # exists, lacks it: a search path
    assert find_dataset_file("ETTh1") == EMBEDDED / "ETTh1.csv"


def test_missing_file_lists_every_path_tried(tmp_path, monkeypatch) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "arg").mkdir()
    monkeypatch.setenv("SAMLAB_DATA", str(tmp_path / "env"))
    for data_dir, folders in (
        (tmp_path / "arg", [tmp_path / "arg"]),
        (None, [tmp_path / "env", EMBEDDED]),
    ):
        with pytest.raises(FileNotFoundError) as info:
            find_dataset_file("ETTm2", data_dir)
        message = str(info.value)
        for folder in folders:
            assert str(folder / "ETTm2.csv") in message and str(folder / "ETTm2.csv.gz") in message
            assert str(folder / "*" / "ETTm2.csv") in message
        assert "--data-dir" in message and "SAMLAB_DATA" in message
        assert "--download ETTm2" in message
    assert str(EMBEDDED) not in message.split("tried")[0]


# --- standard splits and window counts -----------------------------------------------------


def test_etth1_borders_and_segments() -> None:
    data = load_forecast_data("ETTh1", 96, data_dir=EMBEDDED)
    assert data.borders == {"train": (0, 8640), "val": (8128, 11520), "test": (11008, 14400)}
    assert [len(d.series) for d in (data.train, data.val, data.test)] == [8640, 3392, 3392]
    assert data.n_channels == 7 and data.columns[-1] == "OT" and data.path.name == "ETTh1.csv"
    assert data.train.series.dtype == torch.float32


@pytest.mark.parametrize("h, counts", list(zip(HORIZONS, WINDOWS["ETTh"])))
def test_etth1_window_counts(h, counts) -> None:
    assert _counts(load_forecast_data("ETTh1", h, data_dir=EMBEDDED)) == counts


SHARED_FILES = [("ETTh2", "ett/ETTh2.csv"), ("exchange_rate", "exchange_rate/exchange_rate.csv")]


@pytest.mark.parametrize("name, relative", SHARED_FILES)
def test_shared_window_counts(name, relative) -> None:
    path = _shared(relative)
    assert find_dataset_file(name, SHARED) == path
    table = WINDOWS["ETTh" if name == "ETTh2" else name]
    for h, counts in zip(HORIZONS, table):
        assert _counts(load_forecast_data(name, h, data_dir=SHARED)) == counts


def test_gzip_reading_matches_plain(tmp_path) -> None:
    plain = _shared("exchange_rate/exchange_rate.csv")  # no trailing newline
    packed = _gzip_copy(plain, tmp_path / "exchange_rate.csv.gz")
    assert find_dataset_file("exchange_rate", tmp_path) == packed
    columns, values = read_series(packed)
    assert columns == ["0", "1", "2", "3", "4", "5", "6", "OT"] and values.shape == (7588, 8)
    assert read_series(plain)[0] == columns
    np.testing.assert_array_equal(read_series(plain)[1], values)
    assert _counts(load_forecast_data("exchange_rate", 720, data_dir=tmp_path)) == (4080, 41, 798)


def test_ettm_shaped_file_plain_and_gzip(ettm_file, tmp_path) -> None:
    for h, counts in zip(HORIZONS, WINDOWS["ETTm"]):
        assert _counts(load_forecast_data("ETTm1", h, path=ettm_file)) == counts
    packed = _gzip_copy(ettm_file, tmp_path / "ETTm1.csv.gz")
    data = load_forecast_data("ettm1", 96, data_dir=tmp_path)
    assert data.path == packed and data.borders["test"] == (46080 - 512, 57600)
    np.testing.assert_array_equal(read_series(packed)[1], read_series(ettm_file)[1])


def test_weather_shaped_file_crlf_and_replacement_characters(weather_file) -> None:
    assert b"\r\n" in weather_file.read_bytes()[:2000]
    for h, counts in zip(HORIZONS, WINDOWS["weather"]):
        data = load_forecast_data("weather", h, path=weather_file)
        assert _counts(data) == counts
    assert data.n_channels == 21 and data.columns[-1] == "OT"
    assert data.columns[0] == "v0 (\ufffdmol/m\ufffd/s)" and data.columns[19] == "rain (mm\ufffd)"


def test_split_borders_ratio_rounding() -> None:
    assert split_borders("exchange_rate", 7588, 512) == {
        "train": (0, 5311), "val": (4799, 6071), "test": (5559, 7588)
    }  # fmt: skip
    borders = split_borders(get_dataset_spec("traffic"), 17544, 0)
    assert [b - a for a, b in borders.values()] == [12280, 1756, 3508]
    assert split_borders("ETTm2", 69680, 96)["val"] == (34560 - 96, 46080)


# --- scaling -------------------------------------------------------------------------------


def test_scaler_is_fitted_on_train_rows_only(tmp_path) -> None:
    lines = (EMBEDDED / "ETTh1.csv").read_text().splitlines(keepends=True)
    for row in (9000, 12000, 17000):  # val, test and unused rows
        fields = lines[row + 1].split(",")
        lines[row + 1] = ",".join([fields[0], "1e6", *fields[2:]])
    changed = tmp_path / "ETTh1.csv"
    changed.write_text("".join(lines))
    original = load_forecast_data("ETTh1", 96, data_dir=EMBEDDED)
    edited = load_forecast_data("ETTh1", 96, path=changed)
    raw_train = read_series(EMBEDDED / "ETTh1.csv")[1][:8640]
    for data in (original, edited):
        np.testing.assert_allclose(data.scaler.mean, raw_train.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(data.scaler.std, raw_train.std(axis=0), rtol=1e-12)
    _assert_close(original.train.series, edited.train.series)
    expected = torch.from_numpy((raw_train - raw_train.mean(0)) / raw_train.std(0)).float()
    _assert_close(original.train.series, expected)
    assert edited.val.series.abs().max() > 1e3  # the edit is there, scaled with train stats


def test_scaler_round_trip_and_state_dict() -> None:
    rows = np.random.default_rng(1).normal(5.0, 2.0, size=(200, 4))
    rows[:, 2] = 7.0  # a constant column: std 0 becomes 1
    scaler = StandardScaler().fit(rows)
    assert scaler.std[2] == 1.0
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(rows)), rows)
    as_tensor = torch.from_numpy(rows).float()
    back = scaler.inverse_transform(scaler.transform(as_tensor))
    assert back.dtype == torch.float32
    _assert_close(back, as_tensor)
    clone = StandardScaler.from_state_dict(scaler.state_dict())
    np.testing.assert_array_equal(clone.mean, scaler.mean)
    np.testing.assert_array_equal(clone.std, scaler.std)
    with pytest.raises(RuntimeError, match="not fitted"):
        StandardScaler().transform(rows)


# --- windows -------------------------------------------------------------------------------


def _index_series(t: int = 50, d: int = 3) -> torch.Tensor:
    """Row r holds r, r + 1000, r + 2000, ...: a window's first value is its index."""
    return torch.arange(t, dtype=torch.float32)[:, None] + 1000 * torch.arange(d)


def test_windows_equal_stacked_getitem() -> None:
    data = load_forecast_data("ETTh1", 192, data_dir=EMBEDDED)
    index = torch.tensor([0, 5, 4, len(data.val) - 1, 17])
    x, y = data.val.windows(index)
    assert x.shape == (5, 512, 7) and y.shape == (5, 192, 7)
    assert x.is_contiguous() and y.is_contiguous() and x.dtype == torch.float32
    _assert_close(x, torch.stack([data.val[int(i)][0] for i in index]))
    _assert_close(y, torch.stack([data.val[int(i)][1] for i in index]))
    x0, y0 = data.val[0]
    _assert_close(x0, data.val.series[:512])
    _assert_close(y0, data.val.series[512:704])


def test_getitem_and_windows_bounds() -> None:
    ds = WindowDataset(_index_series(), seq_len=8, horizon=4)
    assert len(ds) == 50 - 8 - 4 + 1
    _assert_close(ds[-1][1], ds[len(ds) - 1][1])
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(IndexError):
        ds.windows(torch.tensor([0, len(ds)]))
    with pytest.raises(ValueError, match="horizon must be a positive integer"):
        WindowDataset(_index_series(), seq_len=8, horizon=0)


@pytest.mark.gpu
def test_windows_on_cuda_match_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    ds = WindowDataset(_index_series(200, 5), seq_len=32, horizon=16)
    on_gpu = ds.to("cuda")
    index = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:40]
    for cpu, gpu in zip(ds.windows(index), on_gpu.windows(index)):
        assert gpu.device.type == "cuda" and gpu.is_contiguous()
        assert torch.equal(gpu.cpu(), cpu)
    batches = list(on_gpu.batches(64, shuffle=True, generator=torch.Generator().manual_seed(1)))
    starts = torch.cat([x[:, 0, 0] for x, _ in batches]).long().cpu()
    assert sorted(starts.tolist()) == list(range(len(ds)))


def test_batches_shuffle_is_reproducible_and_covers_every_window() -> None:
    ds = WindowDataset(_index_series(), seq_len=8, horizon=4)

    def starts(**kw):
        return [x[:, 0, 0].long() for x, _ in ds.batches(5, **kw)]

    ordered = torch.cat(starts())
    assert ordered.tolist() == list(range(len(ds)))
    first = starts(shuffle=True, generator=torch.Generator().manual_seed(3))
    again = starts(shuffle=True, generator=torch.Generator().manual_seed(3))
    assert [b.tolist() for b in first] == [b.tolist() for b in again]
    assert sorted(torch.cat(first).tolist()) == list(range(len(ds)))
    assert torch.cat(first).tolist() != list(range(len(ds)))
    assert torch.equal(
        torch.cat(first), torch.randperm(len(ds), generator=torch.Generator().manual_seed(3))
    )
    kept = starts(drop_last=True)
    assert [len(b) for b in kept] == [5] * (len(ds) // 5)
    for x, y in ds.batches(7):
        _assert_close(y[:, 0, 0], x[:, 0, 0] + 8)  # targets follow the inputs


# --- bad input -----------------------------------------------------------------------------


def _hour(i: int) -> str:
    """The ``date`` cell of hourly row ``i`` (from 2000-01-01 00:00:00)."""
    return str(np.datetime64("2000-01-01T00:00:00") + np.timedelta64(i, "h")).replace("T", " ")


def _small_csv(tmp_path: Path, body: str, header: str = "date,a,b,OT") -> Path:
    path = tmp_path / "bad.csv"
    path.write_text(header + "\n" + body)
    return path


@pytest.mark.parametrize(
    "header, body, message",
    [
        ("time,a,b,OT", "t0,1,2,3\n", r"first column must be 'date'"),
        ("a,b,OT", "1,2,3\n", r"first column must be 'date'"),
        ("date,a,b,OT", "t0,1,2,3\nt1,1,nan,3\n", r"NaN or infinite .* data row 2 .*column 'b'"),
        ("date,a,b,OT", "t0,1,2,3\nt1,1,2,\n", r"empty cell at data row 2 .*column 'OT'"),
        ("date,a,b,OT", "t0,1,x7,3\n", r"non-numeric cell 'x7' at data row 1 .*column 'b'"),
        ("date,a,b,OT", "t0,1,2,3\nt1,1,2\n", r"data row 2 .* has 3 fields, the header has 4"),
        ("date,a,b,OT", "t0,1,2,3,4\n", r"data row 1 .* has 5 fields"),
        ("date,a,b,OT", "\n", r"no data rows"),
        ("date", "t0\n", r"no numeric columns"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, header, body, message) -> None:
    path = _small_csv(tmp_path, body, header)
    with pytest.raises(ValueError, match=message) as info:
        read_series(path)
    assert str(path) in str(info.value)


def test_too_few_rows(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"too few rows for L\+H: .* = 112 rows, .* has 100"):
        WindowDataset(torch.zeros(100, 2), seq_len=16, horizon=96)
    rows = "".join(f"{_hour(i)},{i},{i},{i},{i},{i},{i},{i},{i}\n" for i in range(1000))
    path = _small_csv(tmp_path, rows, "date,0,1,2,3,4,5,6,OT")
    with pytest.raises(ValueError, match=r"bad.csv: val split: too few .* = 166 rows, .* has 116"):
        load_forecast_data("exchange_rate", 150, seq_len=16, path=path)
    path.write_text("\n".join(path.read_text().splitlines()[:101]))
    with pytest.raises(ValueError, match=r"train split has 70 rows, fewer than seq_len=512"):
        load_forecast_data("exchange_rate", 1, path=path)
    lines = [line[: line.rindex(",")] for line in path.read_text().splitlines()]
    path.write_text("\n".join(["date,0,1,2,3,4,5,OT", *lines[1:]]))  # 7 channels, OT last
    with pytest.raises(ValueError, match=r"ETTh1: the split needs at least 14400 rows, got 100"):
        load_forecast_data("ETTh1", 1, path=path)


def test_argument_validation(tmp_path) -> None:
    for bad in (0, -96, 1.5, True, "96"):
        with pytest.raises(ValueError, match="horizon must be a positive integer"):
            load_forecast_data("ETTh1", bad, data_dir=EMBEDDED)
    with pytest.raises(ValueError, match="seq_len must be a positive integer"):
        load_forecast_data("ETTh1", 96, seq_len=0, data_dir=EMBEDDED)
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load_forecast_data("nope", 96)
    with pytest.raises(ValueError, match="weather has 21 channels, file has 7"):
        load_forecast_data("weather", 96, path=EMBEDDED / "ETTh1.csv")


def test_parsed_files_are_cached_per_mtime(tmp_path, monkeypatch) -> None:
    path = shutil.copy(EMBEDDED / "ETTh1.csv", tmp_path / "ETTh1.csv")
    calls = []
    real = ts.read_series
    # the cache calls read_series where both are defined (samlab/datasets/timeseries/reader.py)
    monkeypatch.setattr(ts_reader, "read_series", lambda p: calls.append(p) or real(p))
    for h in (96, 192, 336):
        load_forecast_data("ETTh1", h, data_dir=tmp_path)
    assert len(calls) == 1
    stat = Path(path).stat()

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_forecast_data("ETTh1", 96, data_dir=tmp_path)
    assert len(calls) == 2


# --- download (offline) and CLI -------------------------------------------------------------


class _FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes, dest: Path) -> None:
        super().__init__(payload)
        self.dest = dest

    def read(self, size=-1):
        assert not self.dest.exists(), "the destination must appear only after the check"
        return super().read(size)


def _fake_urlopen(monkeypatch, payload: bytes, dest: Path) -> list[str]:
    seen: list[str] = []

    def urlopen(request, timeout=None):
        seen.append(request.full_url)
        return _FakeResponse(payload, dest)

    monkeypatch.setattr(ts_files.urllib.request, "urlopen", urlopen)
    return seen


def test_download_lands_atomically_and_checks_rows(tmp_path, monkeypatch) -> None:
    spec = get_dataset_spec("ETTh1")
    payload = b"date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT\n" + b"".join(
        f"{_hour(i)},1,2,3,4,5,6,7\n".encode() for i in range(5)
    )
    dest = tmp_path / "data" / "ETTh1.csv"
    seen = _fake_urlopen(monkeypatch, payload, dest)
    with pytest.raises(ValueError, match=r"got 5 rows, expected 17420; not saved"):
        ts.download("etth1", dest.parent)
    assert seen == [spec.url] and list(dest.parent.iterdir()) == []  # no file, no temp left
    monkeypatch.setitem(FORECAST_DATASETS, "ETTh1", dataclasses.replace(spec, expected_rows=5))
    assert ts.download("ETTh1", dest.parent) == dest
    assert dest.read_bytes() == payload and [p.name for p in dest.parent.iterdir()] == ["ETTh1.csv"]
    dest.write_bytes(b"kept")
    assert ts.download("ETTh1", dest.parent) == dest and dest.read_bytes() == b"kept"
    assert len(seen) == 2  # an existing file is not fetched again without overwrite


def test_download_rejects_a_page_that_is_not_the_csv(tmp_path, monkeypatch) -> None:
    _fake_urlopen(monkeypatch, b"<!DOCTYPE html><html>rate limited</html>\n", tmp_path / "x")
    with pytest.raises(ValueError, match=r"not a valid weather CSV: .*first column must be 'date'"):
        ts.download("weather", tmp_path, overwrite=True)
    assert list(tmp_path.iterdir()) == []


def test_cli_info(capsys) -> None:
    assert ts_cli.main(["--info", "etth1", "--data-dir", str(EMBEDDED)]) == 0
    out = capsys.readouterr().out
    assert "rows 17420, 7 channels" in out
    assert "H=96: windows train/val/test = 8033/2785/2785" in out
    assert "H=720: windows train/val/test = 7409/2161/2161" in out


def test_cli_reports_a_missing_file_without_traceback(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("SAMLAB_DATA", raising=False)
    assert ts_cli.main(["--info", "traffic", "--data-dir", str(tmp_path)]) == 1  # bad files
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "has no traffic.csv" in err
    assert "--download traffic" in err and len(err.strip().splitlines()) == 1


def test_cli_reports_a_damaged_gzip_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("SAMLAB_DATA", raising=False)
    (tmp_path / "ETTh1.csv.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 12)  # cut short
    assert ts_cli.main(["--info", "ETTh1", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_the_package_exports_its_modules_public_names() -> None:
    """``samlab.datasets.timeseries`` is a package: ``files`` (specs, search, download),
    ``reader`` (the CSV parser), ``windows`` (splits, scaler, windows), ``load`` and the command
    line in ``__main__``; its public names are the objects defined there, and
    ``samlab.datasets`` exports the same objects."""
    import samlab.datasets
    from samlab.datasets.timeseries import load as ts_load
    from samlab.datasets.timeseries import windows as ts_windows

    for module, names in (
        (ts_files, ("EMBEDDED_DATA_DIR", "HORIZONS", "DatasetSpec", "FORECAST_DATASETS")),
        (ts_files, ("get_dataset_spec", "find_dataset_file", "download_dir", "download")),
        (ts_reader, ("read_series",)),
        (ts_windows, ("split_borders", "StandardScaler", "WindowDataset", "ForecastData")),
        (ts_load, ("load_forecast_data",)),
    ):
        for name in names:
            assert getattr(ts, name) is getattr(module, name), name
    assert ts.HORIZONS == HORIZONS and callable(ts_cli.main)
    assert ts_files.EMBEDDED_DATA_DIR == EMBEDDED
    assert ts.__all__ == [
        "EMBEDDED_DATA_DIR", "FORECAST_DATASETS", "HORIZONS", "DatasetSpec", "ForecastData",
        "StandardScaler", "WindowDataset", "download", "download_dir", "find_dataset_file",
        "get_dataset_spec", "load_forecast_data", "read_series", "split_borders",
    ]  # fmt: skip
    shared = [name for name in samlab.datasets.__all__ if name in ts.__all__]
    assert len(shared) == 10
    for name in shared:
        assert getattr(samlab.datasets, name) is getattr(ts, name), name
