"""What a version's manifest says about it, arranged for people: the data spans it was fitted and
scored on, its validation and test metrics beside baselines, and its training settings flattened.
Pure functions over :class:`~server.core.manifest.Manifest`.

Baselines need no data: a constant P(up) = 0.5 scores log-loss ln 2, Brier 0.25 and AUC 0.5 on any
labels. Its accuracy under the served rule (up when P(up) >= 0.5) is the span's up-rate, which
manifests record only as ``{span}_up_rate`` when training wrote it; without it accuracy has no
baseline. The Kelly component is also compared with the uncalibrated fused probability it starts
from (``{span}_uncalibrated_*``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from server.core.manifest import Manifest

#: Scores of a constant P(up) = 0.5, whatever the labels.
COIN_FLIP: dict[str, float] = {"log_loss": math.log(2.0), "brier": 0.25, "auc": 0.5}
COMPARED_METRICS = ("accuracy", "log_loss", "brier", "auc")
SCORED_SPANS = ("val", "test")
#: Info keys shown as spans or as the job, not again as settings.
_NOT_SETTINGS = frozenset({"fitted_on", "held_out", "job"})


@dataclass(frozen=True)
class Span:
    name: str
    #: ISO dates of the first and last bar.
    start: str
    end: str


@dataclass(frozen=True)
class Comparison:
    span: str
    metric: str
    value: float
    baseline: str
    baseline_value: float


@dataclass(frozen=True)
class ModelCard:
    spans: tuple[Span, ...]
    comparisons: tuple[Comparison, ...]
    settings: tuple[tuple[str, str], ...]
    #: The retraining job that trained the version; "" for ``minhos-train``.
    job_id: str


def _pair(value: Any) -> tuple[str, str] | None:
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, str) for v in value)
    ):
        return str(value[0]), str(value[1])
    return None


def flatten_settings(info: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested manifest info as sorted ("a.b", "value") pairs; lists joined with commas."""
    out: list[tuple[str, str]] = []
    for key in sorted(info):
        if not prefix and key in _NOT_SETTINGS:
            continue
        name = f"{prefix}{key}"
        value = info[key]
        if isinstance(value, Mapping):
            out.extend(flatten_settings(value, f"{name}."))
        elif isinstance(value, list | tuple):
            out.append((name, ", ".join(str(v) for v in value)))
        elif isinstance(value, float):
            out.append((name, f"{value:g}"))
        else:
            out.append((name, value if isinstance(value, str) else json.dumps(value)))
    return out


def fitting_span(kelly: Manifest) -> tuple[str, str] | None:
    """The span a Kelly component was fitted on: its feature spec's span (training writes the
    validation span there), or ``info.fitted_on`` when that is a pair of dates."""
    spec = kelly.feature_spec
    if spec.train_start and spec.train_end:
        return spec.train_start, spec.train_end
    return _pair(kelly.info.get("fitted_on"))


def validation_span(manifest: Manifest, kelly_manifests: Iterable[Manifest]) -> Span | None:
    """A model's validation span is the one the Kelly component trained beside it (the model's
    version in its ``info.models``) was fitted on."""
    for kelly in kelly_manifests:
        models = kelly.info.get("models")
        if isinstance(models, Mapping) and models.get(manifest.kind) == manifest.version:
            span = fitting_span(kelly)
            if span is not None:
                return Span("validation", *span)
    return None


def spans(manifest: Manifest, kelly_manifests: Iterable[Manifest] = ()) -> list[Span]:
    """The spans the manifest (and, for a model, its Kelly companion) records, oldest first."""
    spec = manifest.feature_spec
    out: list[Span] = []
    if manifest.kind == "kelly":
        fitted = fitting_span(manifest)
        if fitted is not None:
            out.append(Span("fitted on", *fitted))
    else:
        if spec.train_start and spec.train_end:
            out.append(Span("train", spec.train_start, spec.train_end))
        validation = validation_span(manifest, kelly_manifests)
        if validation is not None:
            out.append(validation)
    held_out = _pair(manifest.info.get("held_out"))
    if held_out is not None:
        out.append(Span("test", *held_out))
    return out


def comparisons(manifest: Manifest) -> list[Comparison]:
    """Validation and test metrics beside each baseline the manifest allows."""
    metrics = manifest.metrics
    out: list[Comparison] = []
    for span in SCORED_SPANS:
        for metric in COMPARED_METRICS:
            value = metrics.get(f"{span}_{metric}")
            if value is None:
                continue
            baselines: list[tuple[str, float]] = []
            if metric in COIN_FLIP:
                baselines.append(("coin flip", COIN_FLIP[metric]))
            elif f"{span}_up_rate" in metrics:
                baselines.append(("always up", metrics[f"{span}_up_rate"]))
            uncalibrated = metrics.get(f"{span}_uncalibrated_{metric}")
            if uncalibrated is not None:
                baselines.append(("uncalibrated fused", uncalibrated))
            if not baselines:
                baselines.append(("", math.nan))
            out.extend(Comparison(span, metric, value, name, base) for name, base in baselines)
    return out


def model_card(manifest: Manifest, kelly_manifests: Iterable[Manifest] = ()) -> ModelCard:
    job = manifest.info.get("job")
    return ModelCard(
        spans=tuple(spans(manifest, kelly_manifests)),
        comparisons=tuple(comparisons(manifest)),
        settings=tuple(flatten_settings(manifest.info)),
        job_id=job if isinstance(job, str) else "",
    )
