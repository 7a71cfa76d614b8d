"""Validation of OHLCV bars, shared by the loaders (CSV, built-in data) and the server's request path.

numpy only, so the serving process can use it without pandas. Every error names the row and the
column, because "bad data" with no location is useless on a 5,000-row file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
OPEN, HIGH, LOW, CLOSE, VOLUME = range(5)

FloatArray = npt.NDArray[np.float64]


class BarError(ValueError):
    """A bar is malformed. ``row`` is 0-based within the checked data (None when not per row)."""

    def __init__(self, message: str, *, row: int | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.row = row
        self.column = column
        #: The message without its leading location ("close is nan ..."), for callers that name
        #: the location their own way (the server says "bars[3].close").
        self.text = message.split(": ", 1)[1] if row is not None and ": " in message else message


def _first(mask: npt.NDArray[np.bool_]) -> tuple[int, int] | None:
    hits = np.argwhere(mask)
    if hits.size == 0:
        return None
    row, col = hits[0]
    return int(row), int(col)


def valid_rows(ohlcv: FloatArray) -> npt.NDArray[np.bool_]:
    """Per bar, True where :func:`validate_ohlcv` would find nothing wrong (times aside)."""
    with np.errstate(invalid="ignore"):  # NaN compares False, which is what we want here
        o, h, lo, c, v = ohlcv.T
        # low > 0 with low <= open, close <= high makes every price positive and high >= low.
        ok: npt.NDArray[np.bool_] = (
            np.isfinite(ohlcv).all(axis=1)
            & (lo > 0)
            & (v >= 0)
            & (h >= np.maximum(o, c))
            & (lo <= np.minimum(o, c))
        )
    return ok


#: Columns of ``ohlcv @ MARGINS``: high - open, high - close, open - low, close - low, low,
#: volume. A bar is valid when all six are >= 0, low > 0 and all are finite (the serving graph
#: checks bars by the same product: export/feature_graph.py).
MARGINS = np.array(
    [
        [-1.0, 0.0, 1.0, 0.0, 0.0, 0.0],  # open
        [1.0, 1.0, 0.0, 0.0, 0.0, 0.0],  # high
        [0.0, 0.0, -1.0, -1.0, 1.0, 0.0],  # low
        [0.0, -1.0, 0.0, 1.0, 0.0, 0.0],  # close
        [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # volume
    ]
)
#: The column of MARGINS that must be > 0, not only >= 0: low.
LOW_MARGIN = 4


def all_valid(ohlcv: FloatArray, times: npt.NDArray[np.datetime64] | None = None) -> bool:
    """True when :func:`validate_ohlcv` would pass, in a few array operations (the request path
    checks a window per call). The six margins are linear in a bar, so one product gives them all;
    a difference of two floats has the sign of theirs, so ">= 0" is exact. A NaN in a bar makes a
    margin NaN, which fails the minimum; an infinity makes one infinite or NaN."""
    if len(ohlcv) == 0:
        return True
    with np.errstate(all="ignore"):  # NaN and infinities in bad bars are the point, not a warning
        margins = ohlcv @ MARGINS
    least = margins.min(axis=0)
    # The product itself turns an infinity into NaN (0 * inf) in other margins, but a BLAS may
    # skip zero coefficients: the maximum does not rely on it.
    ok = bool(least.min() >= 0.0 and least[LOW_MARGIN] > 0.0 and margins.max() < np.inf)
    if ok and times is not None:
        stamps = times.view(np.int64)  # no copy: a datetime64 is an int64 count
        ok = len(times) == len(ohlcv) and bool((stamps[1:] > stamps[:-1]).all())
    return ok


def finite_sum(ohlcv: FloatArray) -> bool:
    """True when the values' sum is finite. Bars that pass the rule may still be so large (two
    volumes near 1e308) that the features' sums overflow and score NaN: the request path and the
    serving graph refuse such a window too."""
    with np.errstate(over="ignore"):  # an overflowing sum is what this looks for
        return bool(np.isfinite(ohlcv.sum()))


def validate_ohlcv(
    ohlcv: FloatArray,
    times: npt.NDArray[np.datetime64] | None = None,
    *,
    row_labels: Sequence[str] | Callable[[int], str] | None = None,
) -> None:
    """Raises :class:`BarError` on the first problem: wrong shape, NaN or inf, non-positive prices,
    negative volume, high below low / open / close, low above open / close, and (given ``times``)
    unsorted or duplicate times. ``row_labels`` (a sequence, or a function of the row, built only
    on error) replaces row indices in messages (e.g. CSV lines)."""

    def where(row: int) -> str:
        if row_labels is None:
            return f"bar {row}"
        return row_labels(row) if callable(row_labels) else row_labels[row]

    if ohlcv.ndim != 2 or ohlcv.shape[1] != len(COLUMNS):
        raise BarError(f"expected an (n, 5) array of {', '.join(COLUMNS)}; got shape {ohlcv.shape}")
    if all_valid(ohlcv, times):
        return  # the common case, in a handful of vector operations; diagnose only on failure
    bad = _first(~np.isfinite(ohlcv))
    if bad is not None:
        row, col = bad
        raise BarError(
            f"{where(row)}: {COLUMNS[col]} is {ohlcv[row, col]} (must be finite)",
            row=row,
            column=COLUMNS[col],
        )
    bad = _first(ohlcv[:, :4] <= 0)
    if bad is not None:
        row, col = bad
        raise BarError(
            f"{where(row)}: {COLUMNS[col]} is {ohlcv[row, col]} (prices must be > 0)",
            row=row,
            column=COLUMNS[col],
        )
    negative = np.flatnonzero(ohlcv[:, VOLUME] < 0)
    if negative.size:
        row = int(negative[0])
        raise BarError(
            f"{where(row)}: volume is {ohlcv[row, VOLUME]} (must be >= 0)", row=row, column="volume"
        )
    for column, other, op in (
        (HIGH, LOW, "below low"),
        (HIGH, OPEN, "below open"),
        (HIGH, CLOSE, "below close"),
    ):
        rows = np.flatnonzero(ohlcv[:, column] < ohlcv[:, other])
        if rows.size:
            row = int(rows[0])
            raise BarError(
                f"{where(row)}: high {ohlcv[row, HIGH]} is {op} {ohlcv[row, other]}",
                row=row,
                column="high",
            )
    for other, op in ((OPEN, "above open"), (CLOSE, "above close")):
        rows = np.flatnonzero(ohlcv[:, LOW] > ohlcv[:, other])
        if rows.size:
            row = int(rows[0])
            raise BarError(
                f"{where(row)}: low {ohlcv[row, LOW]} is {op} {ohlcv[row, other]}",
                row=row,
                column="low",
            )
    if times is not None:
        if len(times) != len(ohlcv):
            raise BarError(f"{len(times)} times for {len(ohlcv)} bars")
        steps = np.diff(times.astype("datetime64[ns]").astype(np.int64))
        back = np.flatnonzero(steps < 0)
        if back.size:
            row = int(back[0]) + 1
            raise BarError(
                f"{where(row)}: time {times[row]} is before the previous bar's {times[row - 1]} "
                "(bars must be sorted by time)",
                row=row,
                column="time",
            )
        dup = np.flatnonzero(steps == 0)
        if dup.size:
            row = int(dup[0]) + 1
            raise BarError(
                f"{where(row)}: time {times[row]} duplicates the previous bar",
                row=row,
                column="time",
            )
