"""Market data: the built-in S&P 500 daily series (shipped inside ``arch``) and users' OHLCV CSVs.

Both come out as :class:`MarketData` (numpy arrays), checked by :func:`server.core.bars.validate_ohlcv`.
Nothing here touches the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from server.core.bars import COLUMNS, BarError, validate_ohlcv

BUILTIN_SYMBOL = "SPX"


@dataclass(frozen=True)
class MarketData:
    symbol: str
    #: Bar times, ``datetime64[s]``, strictly increasing.
    times: npt.NDArray[np.datetime64]
    #: (n, 5) float64: open, high, low, close, volume.
    ohlcv: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.times)

    def slice(self, start: int, stop: int) -> MarketData:
        return MarketData(self.symbol, self.times[start:stop], self.ohlcv[start:stop])


def load_sp500() -> MarketData:
    """S&P 500 daily bars 1999-01-04 .. 2018-12-31 (5,031 bars) from the ``arch`` package."""
    from arch.data import sp500

    frame = sp500.load()
    ohlcv = frame[["Open", "High", "Low", "Close", "Volume"]].to_numpy(dtype=np.float64)
    times = frame.index.to_numpy().astype("datetime64[s]")
    validate_ohlcv(ohlcv, times)
    return MarketData(BUILTIN_SYMBOL, times, ohlcv)


def load_csv(path: str | Path, symbol: str | None = None) -> MarketData:
    """An OHLCV CSV with a header naming ``date`` (or ``time``/``timestamp``) and ``open, high,
    low, close, volume`` (case-insensitive, other columns ignored). Errors name the CSV line and
    the column."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise BarError(f"{path}: cannot read as CSV: {exc}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    time_column = next((c for c in ("date", "time", "timestamp", "datetime") if c in frame), None)
    missing = [c for c in COLUMNS if c not in frame]
    if time_column is None:
        missing.insert(0, "date")
    if missing:
        raise BarError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)}",
            column=missing[0],
        )
    # Line numbers as a spreadsheet shows them: the header is line 1.
    lines = [f"{path.name} line {i + 2}" for i in range(len(frame))]
    times = pd.to_datetime(frame[time_column], errors="coerce", utc=True)
    bad = np.flatnonzero(times.isna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raise BarError(
            f"{lines[row]}: {time_column} {frame[time_column].iloc[row]!r} is not a date",
            row=row,
            column=time_column,
        )
    values = np.empty((len(frame), len(COLUMNS)))
    for j, column in enumerate(COLUMNS):
        numeric = pd.to_numeric(frame[column], errors="coerce")
        bad = np.flatnonzero(numeric.isna().to_numpy() & frame[column].notna().to_numpy())
        if bad.size:
            row = int(bad[0])
            raise BarError(
                f"{lines[row]}: {column} {frame[column].iloc[row]!r} is not a number",
                row=row,
                column=column,
            )
        values[:, j] = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
    stamps = times.dt.tz_localize(None).to_numpy().astype("datetime64[s]")
    validate_ohlcv(values, stamps, row_labels=lines)
    return MarketData(symbol or path.stem.upper(), stamps, values)
