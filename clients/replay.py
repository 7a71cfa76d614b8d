"""The replay client, the trading "brain": streams a market-data span to PredictStream as live bars.

Each bar goes to the server, which resolves the previous prediction of the symbol from it (so the
outcomes land in the database exactly as in live trading) and predicts the next bar. The client
keeps a running summary: predictions, hit rate, mean confidence, agreement, and the return of the
Kelly-sized positions against buy-and-hold over the same bars; at the end, the figures of
:mod:`server.core.signal_report` over the resolved predictions: return, Sharpe, drawdown and IC.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
from tqdm import tqdm

from clients.client import DEFAULT_TARGET, MinhosClient, bar
from minhos.v1 import common_pb2, inference_pb2
from server.core.signal_report import SignalReport, signal_report, strategy_report

DEFAULT_START = "2013-01-01"  # first bar of the default walk-forward test span (export.split)


@dataclass
class ReplaySummary:
    bars_sent: int = 0
    predictions: int = 0
    resolved: int = 0
    hits: int = 0
    confidence_sum: float = 0.0
    agree_count: int = 0
    #: Compounded growth of 1 unit of capital.
    kelly_equity: float = 1.0
    buy_hold_equity: float = 1.0
    seconds: float = 0.0
    #: Per resolved prediction, in order: served P(up), signed Kelly stake, realized return, and
    #: when it was realized (seconds since the epoch).
    p_up: list[float] = field(default_factory=list)
    positions: list[float] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    realized_at: list[int] = field(default_factory=list)
    #: Predictions awaiting their outcome: id -> (P(up), signed stake).
    pending: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.resolved if self.resolved else math.nan

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.predictions if self.predictions else math.nan

    @property
    def agreement_rate(self) -> float:
        return self.agree_count / self.predictions if self.predictions else math.nan

    def update(self, response: inference_pb2.StreamResponse) -> None:
        self.bars_sent += 1
        if response.HasField("resolved"):
            outcome = response.resolved
            self.resolved += 1
            self.hits += int(outcome.hit)
            self.kelly_equity *= 1.0 + outcome.position_return
            self.buy_hold_equity *= 1.0 + outcome.realized_return
            made = self.pending.pop(outcome.prediction_id, None)
            if made is not None:
                self.p_up.append(made[0])
                self.positions.append(made[1])
                self.returns.append(outcome.realized_return)
                self.realized_at.append(response.bar_time.seconds)
        if response.HasField("prediction"):
            p = response.prediction
            sign = 1.0 if p.direction == common_pb2.DIRECTION_UP else -1.0
            self.pending[p.prediction_id] = (p.probability_up, sign * p.kelly_fraction)
            self.predictions += 1
            self.confidence_sum += p.confidence
            same_side = (p.lstm.probability_up >= 0.5) == (p.ensemble.probability_up >= 0.5)
            self.agree_count += int(same_side)

    def postfix(self) -> dict[str, str]:
        return {
            "hit": f"{self.hit_rate:.3f}",
            "conf": f"{self.mean_confidence:.3f}",
            "kelly": f"{self.kelly_equity - 1:+.2%}",
            "b&h": f"{self.buy_hold_equity - 1:+.2%}",
        }

    def signal(self) -> SignalReport | None:
        """IC of the served P(up) and the Kelly-sized strategy over the resolved predictions."""
        if len(self.returns) < 2:
            return None
        times = np.array(self.realized_at, dtype="datetime64[s]")
        return signal_report("served", self.p_up, self.returns, self.positions, times=times)

    def signal_rows(self) -> list[tuple[str, str]]:
        report = self.signal()
        if report is None:
            return []
        s, ic = report.strategy, report.ic
        times = np.array(self.realized_at, dtype="datetime64[s]")
        hold = strategy_report(np.ones(len(self.returns)), self.returns, times=times)

        def drawdown(depth: float, peak: str, trough: str) -> str:
            return f"{-depth:.2%} ({peak} .. {trough})" if depth > 0 else "none"

        return [
            (
                "Kelly annualized return",
                f"{s.annualized_return:+.2%} (volatility {s.annualized_volatility:.2%})",
            ),
            ("Kelly Sharpe", f"{s.sharpe:.2f} ± {s.sharpe_se:.2f}"),
            ("Kelly max drawdown", drawdown(s.max_drawdown, s.drawdown_peak, s.drawdown_trough)),
            ("Kelly hit rate / in market", f"{s.hit_rate:.4f} / {s.exposure:.3f}"),
            ("buy-and-hold Sharpe", f"{hold.sharpe:.2f} ± {hold.sharpe_se:.2f}"),
            (
                "buy-and-hold max drawdown",
                drawdown(hold.max_drawdown, hold.drawdown_peak, hold.drawdown_trough),
            ),
            ("IC Spearman (t)", f"{ic.spearman:+.4f} ({ic.spearman_t:+.2f})"),
            ("IC Pearson (t)", f"{ic.pearson:+.4f} ({ic.pearson_t:+.2f})"),
        ]

    def table(self) -> str:
        rows = [
            ("bars streamed", f"{self.bars_sent}"),
            ("predictions", f"{self.predictions}"),
            ("resolved outcomes", f"{self.resolved}"),
            ("hit rate", f"{self.hit_rate:.4f}"),
            ("mean confidence", f"{self.mean_confidence:.4f}"),
            ("model agreement rate", f"{self.agreement_rate:.4f}"),
            ("Kelly-sized return", f"{self.kelly_equity - 1:+.2%}"),
            ("buy-and-hold return", f"{self.buy_hold_equity - 1:+.2%}"),
            *self.signal_rows(),
            (
                "wall time",
                f"{self.seconds:.1f} s ({self.bars_sent / max(self.seconds, 1e-9):.0f} bars/s)",
            ),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _bars(
    symbol: str,
    times: np.ndarray,
    ohlcv: np.ndarray,
    speed: float,
) -> Iterator[inference_pb2.StreamRequest]:
    interval = 1.0 / speed if speed > 0 else 0.0
    for t, row in zip(times, ohlcv, strict=True):
        if interval:
            time.sleep(interval)
        yield inference_pb2.StreamRequest(symbol=symbol, bar=bar(t, *map(float, row)))


def replay(
    client: MinhosClient,
    symbol: str,
    times: np.ndarray,
    ohlcv: np.ndarray,
    *,
    start_index: int,
    speed: float = 0.0,
    progress: bool = True,
) -> ReplaySummary:
    """Streams bars from ``start_index - bars_required + 1`` (warm-up) to the end; the first
    prediction is made on bar ``start_index``."""
    need = client.serving_info().bars_required
    first = max(0, start_index - need + 1)
    summary = ReplaySummary()
    began = time.perf_counter()
    stream = client.predict_stream(_bars(symbol, times[first:], ohlcv[first:], speed))
    with tqdm(
        total=len(times) - first, unit="bar", disable=not progress, file=sys.stderr
    ) as bar_progress:
        try:
            for response in stream:
                summary.update(response)
                bar_progress.update(1)
                if summary.bars_sent % 50 == 0:
                    bar_progress.set_postfix(summary.postfix(), refresh=False)
        except KeyboardInterrupt:
            stream.cancel()  # type: ignore[no-untyped-call]
            print("\ninterrupted: the summary covers the bars streamed so far", file=sys.stderr)
    summary.seconds = time.perf_counter() - began
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minhos-replay", description=__doc__)
    parser.add_argument(
        "--target",
        default=os.environ.get("MINHOS_TARGET", DEFAULT_TARGET),
        help="host:port, a comma-separated list of replicas (balanced round-robin), or a gRPC "
        "name such as dns:///minhos-headless:50051 (default: $MINHOS_TARGET, then %(default)s)",
    )
    parser.add_argument("--token", default=os.environ.get("MINHOS_TOKEN") or None)
    parser.add_argument("--csv", help="OHLCV CSV to replay instead of the built-in S&P 500")
    parser.add_argument("--symbol", default=None)
    parser.add_argument("--start", default=DEFAULT_START, help="first date to predict")
    parser.add_argument("--limit", type=int, default=0, help="stop after this many bars (0: all)")
    parser.add_argument("--speed", type=float, default=0.0, help="bars per second (0: max)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from export.data import load_csv, load_sp500  # pandas and arch live on the client side

    data = load_csv(args.csv, symbol=args.symbol) if args.csv else load_sp500()
    symbol = args.symbol or data.symbol
    start_index = int(np.searchsorted(data.times, np.datetime64(args.start)))
    if start_index >= len(data.times):
        parser.error(f"--start {args.start} is after the last bar ({data.times[-1]})")
    end = len(data.times) if not args.limit else min(len(data.times), start_index + args.limit)
    with MinhosClient(args.target, token=args.token) as client:
        try:
            client.wait_ready(timeout=10)
            summary = replay(
                client,
                symbol,
                data.times[:end],
                data.ohlcv[:end],
                start_index=start_index,
                speed=args.speed,
                progress=not args.no_progress,
            )
        except grpc.RpcError as exc:
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            print(f"error: {detail}", file=sys.stderr)
            return 1
        except grpc.FutureTimeoutError:
            print(f"error: no server at {args.target}", file=sys.stderr)
            return 1
    print(summary.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
