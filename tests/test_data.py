"""Market data loaders and bar validation: every error names the row and the column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.data import MarketData, load_csv
from export.split import trailing_split, walk_forward_split
from server.core.bars import BarError, validate_ohlcv

HEADER = "date,open,high,low,close,volume\n"
GOOD = [
    "2020-01-02,10,11,9,10.5,100",
    "2020-01-03,10.5,12,10,11,120",
    "2020-01-06,11,11.5,10.5,11.2,90",
]


def _csv(tmp_path: Path, lines: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "bars.csv"
    path.write_text(header + "\n".join(lines) + "\n")
    return path


def test_builtin_series(sp500: MarketData) -> None:
    assert len(sp500) == 5031
    assert str(sp500.times[0])[:10] == "1999-01-04"
    assert sp500.ohlcv.shape == (5031, 5)


def test_csv_round_trip(tmp_path: Path) -> None:
    data = load_csv(_csv(tmp_path, GOOD), symbol="ABC")
    assert data.symbol == "ABC" and len(data) == 3
    np.testing.assert_array_equal(data.ohlcv[1], [10.5, 12, 10, 11, 120])


@pytest.mark.parametrize(
    ("lines", "header", "expected"),
    [
        (GOOD, "date,open,high,low,volume\n", "missing column(s) close"),
        ([GOOD[0], "2020-01-03,10.5,12,10,,120", GOOD[2]], HEADER, "line 3: close is nan"),
        ([GOOD[0], "2020-01-03,10.5,12,10,abc,120"], HEADER, "line 3: close 'abc' is not a number"),
        (
            [GOOD[0], "2020-01-03,0,12,10,11,120"],
            HEADER,
            "line 3: open is 0.0 (prices must be > 0)",
        ),
        ([GOOD[0], "2020-01-03,10.5,9,10,9.5,120"], HEADER, "line 3: high 9.0 is below low 10.0"),
        ([GOOD[1], GOOD[0]], HEADER, "line 3: time"),
        ([GOOD[0], GOOD[0]], HEADER, "duplicates"),
        ([GOOD[0], "yesterday,1,1,1,1,1"], HEADER, "line 3: date 'yesterday' is not a date"),
    ],
)
def test_csv_errors_name_row_and_column(
    tmp_path: Path, lines: list[str], header: str, expected: str
) -> None:
    with pytest.raises(BarError) as info:
        load_csv(_csv(tmp_path, lines, header))
    assert expected in str(info.value)


def test_validate_reports_the_column() -> None:
    ohlcv = np.array([[10, 11, 9, 10, 5], [10, 11, 9, np.inf, 5]], dtype=np.float64)
    with pytest.raises(BarError) as info:
        validate_ohlcv(ohlcv)
    assert (info.value.row, info.value.column) == (1, "close")


def test_walk_forward_split_is_ordered_with_gaps(sp500: MarketData) -> None:
    split = walk_forward_split(
        sp500.times, first_sample=68, validation_start="2011-01-01", test_start="2013-01-01", gap=21
    )
    assert split.train[-1] + 21 < split.validation[0]
    assert split.validation[-1] + 21 < split.test[0]
    assert split.test[-1] == len(sp500) - 2  # the last bar has no label
    assert sp500.times[split.validation[0]] >= np.datetime64("2011-01-01")
    recent = trailing_split(len(sp500), first_sample=68, validation_bars=200, test_bars=100, gap=21)
    assert recent.test[-1] == len(sp500) - 2 and recent.test.size == 100
    assert recent.validation[-1] == recent.test[0] - 22
    assert recent.train[-1] == recent.validation[0] - 22


def test_the_fast_validity_check_agrees_with_the_diagnosis() -> None:
    """``all_valid`` (the request path's check, and validate_ohlcv's shortcut) says True exactly
    when the per-bar rule ``valid_rows`` does, and when it says False the diagnosis names a
    problem; over bars with every kind of defect planted, alone and together."""
    from export.feature_graph import planted_defects
    from server.core.bars import all_valid, valid_rows, validate_ohlcv

    disagreements = []
    for trial, bars in enumerate(planted_defects(np.random.default_rng(5), 3000, 40)):
        valid = bool(valid_rows(bars).all())
        if all_valid(bars) != valid:
            disagreements.append((trial, bars.tolist()))
        if not valid:
            with pytest.raises(BarError):
                validate_ohlcv(bars)
    assert not disagreements, disagreements[:3]
