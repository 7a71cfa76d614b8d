"""The serving model set (both ONNX sessions plus the Kelly component) and its hot swap.

A request reads :attr:`ModelHolder.current` once and uses that one :class:`ModelSet` to the end, so
a swap (a single reference assignment, atomic under the GIL) can never mix two versions in one
response, and no request waits for a load: the new set is loaded and verified before it is swapped.

A set whose LSTM or ensemble version carries the serving graph of exactly the deployed pair
(export/serving_graph.py: bars -> features -> both models, composed at publication) scores a request
in that one ``session.run``, which releases the GIL for the whole of it; otherwise it computes the
features in numpy and runs the two sessions. Both give the same probabilities (a parity test holds
the graph to server/core/features.py and to the sessions); fusion and Kelly sizing follow in numpy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from server.core.calibrator import KellyComponent
from server.core.config import Config
from server.core.features import FEATURE_NAMES, bars_required, window_features_batch
from server.core.fusion import Fused, FusedOne, fuse, fuse_one
from server.core.kelly import size_positions, stake_one
from server.core.manifest import KINDS, Manifest
from server.storage import queries
from server.storage.registry import (
    IntegrityError,
    ModelNotFoundError,
    ModelRepository,
    RegistryError,
)

log = logging.getLogger("minhos.inference")
FloatArray = npt.NDArray[np.float64]

INPUT = "features"  # the names export/onnx_export.py gives the graphs
LSTM_OUTPUT = "probability_up"
ENSEMBLE_OUTPUT = "probabilities"
# The serving graph, as export/serving_graph.py writes it and names its parts.
SERVING_FILE = "serving.onnx"
SERVING_INFO = "serving_graph"
BARS = "bars"
P_LSTM = "p_lstm"
P_ENSEMBLE = "p_ensemble"
BAR_CHECK = "bar_check"


class BarsRefused(Exception):
    """The serving graph found a window that breaks the request rule (server/core/bars.py's bar
    rule, and a finite sum); numpy validation says which field."""


def _session(payload: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # Two sessions with default threading spin on the same 2 cores and starve each other; one
    # thread each and no spinning keeps batch-1 latency low and leaves cores to gRPC.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])


class ScoredOne(NamedTuple):
    """Model outputs for one window, as Python values."""

    p_lstm: float
    p_ensemble: float
    fused: FusedOne
    kelly_fraction: float


@dataclass(frozen=True)
class Scored:
    """Model outputs for a batch of windows, with the versions that produced them."""

    p_lstm: FloatArray
    p_ensemble: FloatArray
    fused: Fused
    kelly_fraction: FloatArray
    versions: dict[str, str]


class ModelSet:
    """One immutable set of deployed versions, ready to score."""

    def __init__(
        self,
        manifests: dict[str, Manifest],
        payloads: dict[str, bytes],
        config: Config,
        serving: bytes | None = None,
    ) -> None:
        self.manifests = manifests
        self.versions = {kind: m.version for kind, m in manifests.items()}
        self.config = config
        lstm, ensemble = manifests["lstm"].feature_spec, manifests["ensemble"].feature_spec
        if lstm.feature_names != ensemble.feature_names:
            raise ModelNotFoundError(
                "deployed LSTM and ensemble were trained on different features"
            )
        if lstm.feature_names != FEATURE_NAMES:
            # A model for features this server does not compute would score garbage silently.
            raise ModelNotFoundError(
                f"the models read features {list(lstm.feature_names)}; this server computes "
                f"{list(FEATURE_NAMES)}"
            )
        self.feature_names = lstm.feature_names
        self.window = lstm.window
        self.bars_required = bars_required(lstm.window)
        self._lstm = _session(payloads["lstm"])
        self._ensemble = _session(payloads["ensemble"])
        self.kelly = KellyComponent.from_json(payloads["kelly"].decode())
        self._serving = None if serving is None else self._serving_session(serving)
        found = set() if self._serving is None else {o.name for o in self._serving.get_outputs()}
        #: True when the serving graph checks the bars it scores (graphs built before it did
        #: not): the request path then need not check them in numpy first.
        self.checks_bars = BAR_CHECK in found
        self._outputs = [P_LSTM, P_ENSEMBLE] + ([BAR_CHECK] if self.checks_bars else [])

    @property
    def one_run(self) -> bool:
        """True when :meth:`score` runs the serving graph (else numpy features and two runs)."""
        return self._serving is not None

    def _serving_session(self, payload: bytes) -> ort.InferenceSession | None:
        """The serving graph's session, or None (logged) when it does not load or does not take
        this set's bars: the set then scores by its parts, as a set without the graph does."""
        try:
            session = _session(payload)
        except Exception as exc:  # onnxruntime raises its own unrelated exception types
            log.error("serving graph does not load; scoring by the parts: %s", exc)
            return None
        inputs = {i.name: i.shape for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        shape = inputs.get(BARS)
        if (
            shape is None
            or shape[1:] != [self.bars_required, 5]
            or not {P_LSTM, P_ENSEMBLE} <= outputs
        ):
            log.error(
                "serving graph takes %s and gives %s, not (batch, %d, 5) bars; scoring by the parts",
                inputs,
                sorted(outputs),
                self.bars_required,
            )
            return None
        return session

    def score(self, windows: FloatArray, *, check_bars: bool = False) -> Scored:
        """``windows``: (batch, >= bars_required, 5) OHLCV, already validated, or with
        ``check_bars`` (only when :attr:`checks_bars`) checked by the graph as it scores them:
        raises :class:`BarsRefused` if any window breaks the rule."""
        return self._scored(*self._probabilities(windows, check_bars))

    def score_one(self, window: FloatArray, *, check_bars: bool = False) -> ScoredOne:
        """:meth:`score` of one window ((>= bars_required, 5)), with fusion and sizing on floats:
        for a batch of one, numpy's per-call cost exceeds the arithmetic."""
        p_lstm, p_ens = self._probabilities(window[None], check_bars)
        return self._scored_one(float(p_lstm[0]), float(p_ens[0]))

    def _probabilities(
        self, windows: FloatArray, check_bars: bool
    ) -> tuple[FloatArray, FloatArray]:
        if check_bars and not self.checks_bars:
            raise ValueError("this set's bars must be checked before scoring")
        if self._serving is None:
            return self._by_parts(window_features_batch(windows, self.window))
        bars = np.ascontiguousarray(windows[:, -self.bars_required :], dtype=np.float64)
        p_lstm, p_ens, *check = self._serving.run(self._outputs, {BARS: bars})
        # A list, not numpy's all(): at a batch of one the comparison costs less than the call.
        if check_bars and not all(least >= 0.0 for least in check[0].tolist()):  # NaN fails too
            raise BarsRefused()
        return p_lstm, p_ens

    def score_features(self, sequences: FloatArray) -> Scored:
        """``sequences``: (batch, window, F) feature vectors, oldest first (a stream keeps them
        per symbol instead of recomputing the whole window for every bar)."""
        return self._scored(*self._by_parts(sequences))

    def _by_parts(self, sequences: FloatArray) -> tuple[FloatArray, FloatArray]:
        seqs = sequences.astype(np.float32)
        p_lstm = self.lstm_probability(seqs).astype(np.float64)
        p_ens = self.ensemble_probability(seqs[:, -1, :]).astype(np.float64)
        return p_lstm, p_ens

    def lstm_probability(self, sequences: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The LSTM alone: (batch, window, F) float32 features -> P(up), (batch,)."""
        out = self._lstm.run([LSTM_OUTPUT], {INPUT: sequences})[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def ensemble_probability(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The ensemble alone: (batch, F) float32 feature rows -> P(up), (batch,)."""
        out = self._ensemble.run([ENSEMBLE_OUTPUT], {INPUT: np.ascontiguousarray(rows)})[0]
        return np.asarray(out, dtype=np.float32)[:, 1]

    def _scored(self, p_lstm: FloatArray, p_ens: FloatArray) -> Scored:
        fused = fuse(p_lstm, p_ens, self.config.fusion)
        kelly = size_positions(fused.probability_up, fused.direction, self.kelly, self.config.kelly)
        return Scored(p_lstm, p_ens, fused, kelly, self.versions)

    def _scored_one(self, p_lstm: float, p_ens: float) -> ScoredOne:
        fused = fuse_one(p_lstm, p_ens, self.config.fusion)
        kelly = stake_one(fused.probability_up, fused.direction, self.kelly, self.config.kelly)
        return ScoredOne(p_lstm, p_ens, fused, kelly)


def load_model_set(
    repository: ModelRepository, versions: dict[str, str], config: Config
) -> ModelSet:
    missing = [k for k in KINDS if k not in versions]
    if missing:
        raise ModelNotFoundError(f"no deployed version of {', '.join(missing)}; run `make train`")
    manifests: dict[str, Manifest] = {}
    payloads: dict[str, bytes] = {}
    for kind in KINDS:
        manifests[kind], payloads[kind] = repository.load_verified(kind, versions[kind])
    return ModelSet(manifests, payloads, config, serving_graph_of(repository, manifests))


def serving_graph_of(repository: ModelRepository, manifests: dict[str, Manifest]) -> bytes | None:
    """The serving graph built for exactly this LSTM and ensemble (by versions and by the hashes of
    their files), checked against the SHA-256 its registered manifest gives; None when there is
    none, when it names another pair (a rollback), or when it fails a check (logged)."""
    pair = {kind: manifests[kind] for kind in ("lstm", "ensemble")}
    for kind, manifest in pair.items():
        # The registered manifest, not the file beside the model: a swapped file must not pass.
        record = queries.model_version(kind, manifest.version)
        entry = record.manifest.info.get(SERVING_INFO) if record is not None else None
        if not isinstance(entry, dict) or any(
            entry.get(k) != m.version or entry.get(f"{k}_sha256") != m.sha256
            for k, m in pair.items()
        ):
            continue
        try:
            # Checked against the same registered entry (in the cache or the database, refetched
            # when the cached copy fails).
            payload = repository.read_file(kind, manifest.version, SERVING_FILE)
        except IntegrityError:
            log.error(
                "serving graph of %s %s does not match its SHA-256; refusing it",
                kind,
                manifest.version,
            )
            return None
        except (RegistryError, OSError) as exc:
            log.error("serving graph of %s %s unreadable: %s", kind, manifest.version, exc)
            return None
        return payload
    return None


class ModelHolder:
    """Holds the current :class:`ModelSet` and swaps it when the registry deploys another."""

    def __init__(
        self,
        repository: ModelRepository,
        config: Config,
        on_swap: Callable[[ModelSet], None] | None = None,
        on_refusal: Callable[[str], None] | None = None,
    ) -> None:
        """``on_refusal`` hears why a deployed set was refused, once per set (the poller retries
        every interval)."""
        self.repository = repository
        self.config = config
        self._current: ModelSet | None = None
        self._on_swap = on_swap
        self._on_refusal = on_refusal
        self._refused: dict[str, str] | None = None
        self._lock = threading.Lock()  # one reload at a time; readers never take it
        self.last_error: str = ""

    @property
    def current(self) -> ModelSet:
        models = self._current
        if models is None:
            raise ModelNotFoundError(self.last_error or "no models loaded")
        return models

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def _drop_retired(self) -> None:
        """Keeps this machine's cache to versions that may still serve (database mode)."""
        try:
            dropped = self.repository.drop_retired_from_cache()
        except Exception as exc:  # a cache sweep must never undo a swap
            log.warning("cannot sweep the model cache: %s", exc)
            return
        if dropped:
            log.info("dropped retired versions from the cache", extra={"dropped": dropped})

    def reload(self) -> bool:
        """Loads the deployed versions if they differ from the current ones; True on a swap. A
        version that fails to load (bad SHA-256, missing file) is logged and the current one stays."""
        with self._lock:
            wanted: dict[str, str] = {}
            try:
                wanted = self.repository.deployed()
                if self._current is not None and wanted == self._current.versions:
                    return False
                models = load_model_set(self.repository, wanted, self.config)
            except Exception as exc:
                named = ", ".join(f"{k} {v}" for k, v in sorted(wanted.items()))
                self.last_error = f"cannot load deployed models ({named}): {exc}"
                log.error(self.last_error)
                if self._on_refusal is not None and wanted != self._refused:
                    self._refused = wanted
                    self._on_refusal(self.last_error)
                return False
            self._refused = None
            previous = self._current
            self._current = models
            self.last_error = ""
            log.info(
                "models swapped",
                extra={
                    "versions": models.versions,
                    "previous": previous.versions if previous else None,
                    "one_run": models.one_run,
                },
            )
            self._drop_retired()
        if self._on_swap is not None:
            self._on_swap(models)
        return True
