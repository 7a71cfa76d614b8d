"""Calibration reports of a monitored source (fused, LSTM, ensemble) over a sample of resolved
predictions, with the monitoring config's settings."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np

from server.core import calibration as cal
from server.core.config import MonitoringConfig
from server.monitoring.sample import Sample

Source = Literal["fused", "lstm", "ensemble"]


def settings_of(config: MonitoringConfig) -> cal.CalibrationSettings:
    return cal.CalibrationSettings(
        min_samples=config.calibration_min_samples,
        max_ece=config.calibration_max_ece,
        min_bin_count=config.calibration_min_bin_count,
        z_threshold=config.calibration_z,
        zone_edges=(
            config.zone_low_from,
            config.zone_medium_from,
            config.zone_high_from,
            config.zone_very_high_from,
        ),
    )


def report(
    config: MonitoringConfig,
    sample: Sample,
    source: Source = "fused",
    n_bins: int = 10,
    strategy: cal.Strategy = "uniform",
) -> cal.CalibrationReport:
    """The report over the resolved predictions of ``sample``."""
    s = sample.select(sample.resolved)
    component = "fusion" if source == "fused" else source
    out = cal.calibration_report(
        source,
        s.probability(component),
        s.up.astype(np.float64),
        confidence=s.confidence_of(component),
        n_bins=n_bins,
        strategy=strategy,
        correct=s.correct(component).astype(np.float64),
        settings=settings_of(config),
    )
    return replace(
        out,
        start=s.bar_time[0] if len(s) else None,
        end=s.bar_time[-1] if len(s) else None,
    )
