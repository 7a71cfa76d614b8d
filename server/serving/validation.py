"""What a request must satisfy before it is scored: a symbol of the contract's alphabet (and of
this server's list, if it has one), and a window of valid bars long enough for the deployed set.
Errors name the request field the caller set."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NoReturn

import numpy as np
import numpy.typing as npt

from server.core.bars import BarError, all_valid, finite_sum, validate_ohlcv
from server.core.errors import InvalidArgument, NotFound

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MAX_SYMBOL_LENGTH = 32
#: The contract's symbol alphabet (inference.proto, PredictRequest.symbol).
SYMBOL_PATTERN = re.compile(r"[A-Za-z0-9.\-^_]+")


def field_of(form: str, row: int | None, column: str | None) -> str:
    """The request field a bar problem is in: ``bars[3].close`` or ``columns.close[3]``."""
    if row is None:
        return form
    if form == "columns":
        name = "time_seconds" if column in (None, "time") else column
        return f"columns.{name}[{row}]"
    if form == "raw":
        return (
            f"raw.time_seconds[{row}]" if column in (None, "time") else f"raw.ohlcv[{row}].{column}"
        )
    return f"bars[{row}]" + (f".{column}" if column else "")


class SymbolPolicy:
    """The symbols a server accepts: the contract's alphabet, and its own list if configured."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = frozenset(s.strip() for s in allowed if s.strip())

    def check(self, symbol: str, field_name: str = "symbol") -> None:
        if not symbol:
            raise InvalidArgument("must be set", field=field_name)
        if len(symbol) > MAX_SYMBOL_LENGTH:
            raise InvalidArgument(f"longer than {MAX_SYMBOL_LENGTH} characters", field=field_name)
        if not SYMBOL_PATTERN.fullmatch(symbol):
            raise InvalidArgument(
                f"{symbol!r} has characters other than letters, digits, '.', '-', '^', '_'",
                field=field_name,
            )
        if self.allowed and symbol not in self.allowed:
            raise NotFound(
                f"unknown symbol {symbol!r}; this server serves {sorted(self.allowed)}",
                field=field_name,
            )


def window_of(
    times: IntArray,
    ohlcv: FloatArray,
    need: int,
    window: int,
    form: str,
    *,
    check_bars: bool = True,
) -> tuple[IntArray, FloatArray]:
    """The last ``need`` bars of a request, checked (their bars only with ``check_bars``: the
    serving graph may check them as it scores them, and :func:`explain_window` says what it
    found). ``window``: feature vectors the models read (for the message when bars are missing).

    Beyond the bar rule of server/core/bars.py, the window's sum must be finite: bars of valid
    but huge values (volumes near 1e308) overflow the features' sums and would score NaN."""
    if len(ohlcv) < need:
        raise InvalidArgument(
            f"{len(ohlcv)} bars given; the deployed models need {need} (window of "
            f"{window} feature vectors over {need - window + 1}-bar lookbacks)",
            field=form,
        )
    base = len(ohlcv) - need
    times, ohlcv = times[base:], ohlcv[base:]
    # Sorted times with a positive first one are all set: the common case costs a few checks.
    if (
        times[0] > 0
        and (times[1:] > times[:-1]).all()
        and (not check_bars or (all_valid(ohlcv) and finite_sum(ohlcv)))
    ):
        return times, ohlcv
    explain_window(times, ohlcv, base, form)


def explain_window(times: IntArray, ohlcv: FloatArray, base: int, form: str) -> NoReturn:
    """Raises :class:`InvalidArgument` naming the first bad field of a window (bars ``base`` ..
    of the request) that a quick check refused."""
    if np.any(times <= 0):
        row = int(np.flatnonzero(times <= 0)[0])
        raise InvalidArgument("time is not set", field=field_of(form, row + base, "time"))
    try:
        validate_ohlcv(ohlcv, times.astype("datetime64[s]"))
    except BarError as exc:
        at = None if exc.row is None else exc.row + base
        raise InvalidArgument(exc.text, field=field_of(form, at, exc.column)) from None
    if not finite_sum(ohlcv):
        raise InvalidArgument("values so large that the window's sum overflows float64", field=form)
    raise RuntimeError("a window the quick check refused passes every rule")  # a bug: INTERNAL
