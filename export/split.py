"""Walk-forward splits by time: train, then validation, then test, never shuffled across time.

A sample is a bar index ``t``: its inputs use bars up to ``t``, its label the close of ``t + 1``.
Spans are separated by ``gap`` bars (at least the model's window) so that no training label is
computed from a bar that a later span's samples are built from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IndexArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class Split:
    train: IndexArray
    validation: IndexArray
    test: IndexArray

    def describe(self, times: npt.NDArray[np.datetime64]) -> dict[str, str]:
        def span(ix: IndexArray) -> str:
            if ix.size == 0:
                return "empty"
            return f"{str(times[ix[0]])[:10]} .. {str(times[ix[-1]])[:10]} ({ix.size} samples)"

        return {
            "train": span(self.train),
            "validation": span(self.validation),
            "test": span(self.test),
        }


def walk_forward_split(
    times: npt.NDArray[np.datetime64],
    *,
    first_sample: int,
    validation_start: str | np.datetime64,
    test_start: str | np.datetime64,
    gap: int,
    end: int | None = None,
) -> Split:
    """Samples ``first_sample .. end - 2`` (the last bar has no label) cut at two dates.

    ``first_sample`` is the first bar with a complete input window; ``end`` (exclusive) lets a
    retraining job stop at the bars seen so far."""
    if gap < 1:
        raise ValueError("gap must be at least 1 bar")
    n = len(times) if end is None else end
    v = int(np.searchsorted(times, np.datetime64(validation_start)))
    s = int(np.searchsorted(times, np.datetime64(test_start)))
    if not first_sample < v - gap < v < s - gap < s < n - 1:
        raise ValueError(
            f"spans do not fit: first sample {first_sample}, validation from bar {v}, "
            f"test from bar {s}, last labelled bar {n - 2}, gap {gap}"
        )
    return Split(
        train=np.arange(first_sample, v - gap, dtype=np.intp),
        validation=np.arange(v, s - gap, dtype=np.intp),
        test=np.arange(s, n - 1, dtype=np.intp),
    )


def trailing_split(
    n: int, *, first_sample: int, validation_bars: int, test_bars: int, gap: int
) -> Split:
    """The same discipline counted from the end of the data, for retraining on the bars seen so far:
    the last ``test_bars`` labelled samples are the held-out span the champion/challenger gate uses."""
    last = n - 2  # last labelled bar
    test = np.arange(last - test_bars + 1, last + 1, dtype=np.intp)
    validation = np.arange(test[0] - gap - validation_bars, test[0] - gap, dtype=np.intp)
    train = np.arange(first_sample, validation[0] - gap, dtype=np.intp)
    if train.size < 2 * validation_bars:
        raise ValueError(f"too little data: {n} bars leave {max(train.size, 0)} training samples")
    return Split(train=train, validation=validation, test=test)
