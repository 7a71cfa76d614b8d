"""What a model version is: its kind, its stage, its manifest and the features it reads. Plain
types, shared by training (which writes manifests), the registry (which stores them) and serving
(which loads them)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from server.core.errors import InvalidArgument

#: The three components a deployed set is made of. The Kelly component is "kelly" everywhere
#: (registry, jobs, monitoring); the fused prediction it sizes is reported under its name too.
KINDS = ("lstm", "ensemble", "kelly")
STAGES = ("candidate", "deployed", "backup", "rejected", "retired")
#: The monitored component each kind answers for: the Kelly component sizes (and calibrates) the
#: fused prediction, which monitoring and the contract call "fusion". The one translation.
COMPONENT_OF_KIND = {"lstm": "lstm", "ensemble": "ensemble", "kelly": "fusion"}
KIND_OF_COMPONENT = {v: k for k, v in COMPONENT_OF_KIND.items()}
#: The manifest metric each kind's live accuracy is expected to match: the monitor's reference
#: and the retraining probation's. The fused pair's lives in the Kelly component's manifest.
REFERENCE_METRIC = {
    "lstm": "val_accuracy",
    "ensemble": "val_accuracy",
    "kelly": "val_uncalibrated_accuracy",
}


class MalformedManifest(ValueError):
    """A manifest that does not parse into :class:`Manifest`."""


def check_kind(kind: str, field_name: str = "kind") -> None:
    """The one check of a model kind named by a caller."""
    if kind not in KINDS:
        raise InvalidArgument(f"{kind!r} is not one of {', '.join(KINDS)}", field=field_name)


@dataclass(frozen=True)
class FeatureSpec:
    feature_names: tuple[str, ...]
    #: Feature vectors the model reads per prediction (1 for the ensemble).
    window: int
    #: Raw bars a request must carry to build that window.
    bars_required: int
    train_start: str  # ISO date of the first training bar
    train_end: str


@dataclass(frozen=True)
class Manifest:
    kind: str
    version: str
    sha256: str
    file: str
    created_at: str
    feature_spec: FeatureSpec
    metrics: dict[str, float] = field(default_factory=dict)
    #: Free-form, JSON-serialisable facts (seed, hyper-parameters, input/output names).
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Manifest:
        try:
            raw = json.loads(text)
            spec = raw.pop("feature_spec")
            spec["feature_names"] = tuple(spec["feature_names"])
            return Manifest(feature_spec=FeatureSpec(**spec), **raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedManifest(f"malformed manifest: {exc}") from None
