"""Market data: the built-in S&P 500 daily series (shipped inside ``arch``), other daily series that
ship inside packages (for evaluation on instruments the models never saw, and pooled training), and
users' OHLCV CSVs.

All come out as :class:`MarketData` (numpy arrays), checked by :func:`server.core.bars.validate_ohlcv`.
Nothing here touches the network: every series is a file inside an installed package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt

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


def load_nasdaq() -> MarketData:
    """NASDAQ Composite daily bars 1999-01-04 .. 2018-12-31 (5,031 bars) from ``arch``."""
    from arch.data import nasdaq

    frame = nasdaq.load()
    ohlcv = frame[["Open", "High", "Low", "Close", "Volume"]].to_numpy(dtype=np.float64)
    times = frame.index.to_numpy().astype("datetime64[s]")
    validate_ohlcv(ohlcv, times)
    return MarketData("NASDAQ", times, ohlcv)


def adjusted(
    symbol: str,
    times: npt.NDArray[np.datetime64],
    ohlcv: npt.NDArray[np.float64],
    adj_close: npt.NDArray[np.float64],
) -> MarketData:
    """Split- and dividend-adjusted bars from raw ones and the source's adjusted close: prices are
    scaled by adj_close / close and volume by its inverse (the traded value is unchanged). Raw
    prices would show a split as a -50 % day, which no model should be scored on."""
    factor = adj_close / ohlcv[:, 3]
    out = ohlcv.copy()
    out[:, :4] *= factor[:, None]
    out[:, 4] /= factor
    validate_ohlcv(out, times)
    return MarketData(symbol, times, out)


#: Tickers of ``bokeh_sampledata.stocks`` (daily, 2000-03-01 .. 2013-03-01; GOOG from 2004-08-19).
BOKEH_TICKERS: tuple[str, ...] = ("AAPL", "IBM", "MSFT", "GOOG")


def load_bokeh_stock(ticker: str) -> MarketData:
    """One of :data:`BOKEH_TICKERS` from the ``bokeh-sampledata`` package (Quandl WIKI prices,
    public domain), adjusted with the source's adjusted close."""
    if ticker not in BOKEH_TICKERS:
        raise ValueError(f"unknown ticker {ticker!r}; expected one of {', '.join(BOKEH_TICKERS)}")
    from bokeh_sampledata import stocks

    raw = getattr(stocks, ticker)
    times = np.array(raw["date"], dtype="datetime64[D]").astype("datetime64[s]")
    ohlcv = np.column_stack(
        [np.asarray(raw[c], dtype=np.float64) for c in ("open", "high", "low", "close", "volume")]
    )
    return adjusted(ticker, times, ohlcv, np.asarray(raw["adj_close"], dtype=np.float64))


def load_apple_2019() -> MarketData:
    """Apple daily bars 2019-01-02 .. 2024-12-30 (1,509 bars) from the ``hvsampledata`` package,
    adjusted with its adjusted close: the one series here that starts after the S&P 500 ends."""
    from hvsampledata import apple_stocks

    frame = apple_stocks("pandas")
    ohlcv = frame[["open", "high", "low", "close", "volume"]].to_numpy(dtype=np.float64)
    times = frame["date"].to_numpy().astype("datetime64[s]")
    return adjusted("AAPL-2019", times, ohlcv, frame["adj_close"].to_numpy(dtype=np.float64))


#: Every built-in series by name: what ``--series`` and ``--pool`` accept.
SERIES: dict[str, Callable[[], MarketData]] = {
    BUILTIN_SYMBOL: load_sp500,
    "NASDAQ": load_nasdaq,
    **{ticker: partial(load_bokeh_stock, ticker) for ticker in BOKEH_TICKERS},
    "AAPL-2019": load_apple_2019,
}


def load_series(names: Sequence[str]) -> list[MarketData]:
    """Built-in series by name (see :data:`SERIES`)."""
    unknown = [n for n in names if n not in SERIES]
    if unknown:
        raise ValueError(f"unknown series {', '.join(unknown)}; known: {', '.join(SERIES)}")
    return [SERIES[name]() for name in names]


def load_csv(path: str | Path, symbol: str | None = None) -> MarketData:
    """An OHLCV CSV with a header naming ``date`` (or ``time``/``timestamp``) and ``open, high,
    low, close, volume`` (case-insensitive, other columns ignored). Errors name the CSV line and
    the column."""
    # pandas only here: MarketData must import on a serving-only install (Python 3.12/3.13 tests).
    import pandas as pd

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
