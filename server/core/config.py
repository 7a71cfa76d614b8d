"""The one configuration of MinhOS: every threshold, schedule and setting, with its default.

Sources, later ones winning: the dataclass defaults below, a TOML file (``MINHOS_CONFIG`` or the
``path`` argument), then environment variables ``MINHOS_<SECTION>_<FIELD>`` (e.g.
``MINHOS_SERVER_PORT=50052``, ``MINHOS_KELLY_FRACTION=0.25``). ``DATABASE_URL`` is honoured as an
alias of ``MINHOS_STORAGE_DATABASE_URL`` because that is what hosting platforms set.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value is missing, malformed or out of range."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    #: Threads for the RPCs that may block (database reads, flushes, rollbacks). Predict,
    #: ModelInfer and the two streams run on the server's event loop and take none.
    workers: int = 8
    #: Largest request accepted; bigger ones get RESOURCE_EXHAUSTED.
    max_message_bytes: int = 4 * 1024 * 1024
    #: PEM files; TLS is on when both are set.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: Bearer token required in the ``authorization`` metadata when set.
    token: str = ""
    #: Comma-separated symbols this server predicts for; empty accepts any (others: NOT_FOUND).
    symbols: str = ""
    #: Symbols one PredictStream may carry (each keeps a few tens of KB of bars and features);
    #: beyond it RESOURCE_EXHAUSTED.
    stream_max_symbols: int = 1000
    #: Prometheus endpoint port on ``host``; 0 turns it off.
    metrics_port: int = 9464
    #: How often the server polls the registry for a newly deployed version (seconds).
    reload_interval_s: float = 1.0
    #: Grace period for in-flight RPCs on SIGTERM (seconds).
    shutdown_grace_s: float = 5.0
    #: Serving processes sharing the port (SO_REUSEPORT), each with its own interpreter and ONNX
    #: sessions: a number, or "auto" for one per core. They are equals, like replicas: the duties
    #: lease decides which one evaluates health and retrains; /metrics merges them all.
    processes: str = "1"

    def process_count(self) -> int:
        if self.processes.strip().lower() == "auto":
            return os.cpu_count() or 1
        return int(self.processes)


@dataclass(frozen=True)
class StorageConfig:
    #: peewee database URL: ``sqlite:///path`` (WAL mode) or ``postgresql://user:pw@host/db``.
    database_url: str = "sqlite:///var/minhos.db"
    #: Model repository: ``<root>/<kind>/<version>/`` holding the model file and manifest.json.
    #: When the bytes are kept in the database (``artifacts``, PostgreSQL by default) it is only
    #: this machine's cache of them, same layout, and need not be shared between machines.
    model_repository: str = "var/models"
    #: Where model files live: "database" (in PostgreSQL, each replica caching them under
    #: ``model_repository``: machines share no filesystem), "directory" (``model_repository``
    #: itself), or "auto" (default): the database on PostgreSQL, the directory on SQLite.
    artifacts: str = "auto"
    #: Writes are batched off the request path and flushed at least this often (seconds);
    #: a kill -9 loses at most one interval of writes plus the write in progress.
    batch_interval_s: float = 0.2
    #: A batch is flushed early once it holds this many rows.
    batch_max_rows: int = 512
    #: Store predictions, outcomes and requests. Off only to measure persistence's cost (make bench).
    persist: bool = True
    #: Backups of replaced models are kept this long, then pruned (days).
    backup_retention_days: float = 30.0


@dataclass(frozen=True)
class FusionConfig:
    #: Confidence is scaled by ``1 + agreement_boost`` when both models pick the same direction.
    agreement_boost: float = 0.10
    #: ... and by ``1 - disagreement_penalty`` when they pick opposite directions.
    disagreement_penalty: float = 0.25
    #: Weight of the LSTM in the fused probability (the ensemble gets the rest).
    lstm_weight: float = 0.5


@dataclass(frozen=True)
class KellyConfig:
    #: Fraction of the full Kelly stake (1/2 Kelly by default).
    fraction: float = 0.5
    #: Largest fraction of capital committed to one prediction.
    cap: float = 0.25
    #: Payoff ratio b assumed until enough outcomes are resolved.
    default_payoff_ratio: float = 1.0


@dataclass(frozen=True)
class MonitoringConfig:
    #: Named threshold profile: "relative" (default: against each model's own validation metrics,
    #: with a CUSUM on outcomes) or "fixed" (the absolute thresholds below).
    profile: str = "relative"
    #: Time window of the health report (hours, market time).
    window_hours: float = 24.0
    #: Count window of the health report (last N predictions).
    last_n: int = 100
    #: How often the server evaluates health and raises alerts (wall seconds). An evaluation reads
    #: the recent outcomes back from the database (about 150 ms per 10,000 predictions, on the
    #: serving process's interpreter), so it is not done often; the CUSUM sees every outcome anyway.
    evaluate_interval_s: float = 10.0
    #: Same alert kind is not raised again within this many minutes.
    alert_cooldown_minutes: float = 30.0
    #: "fixed" profile thresholds.
    fixed_min_accuracy: float = 0.65
    fixed_min_confidence: float = 0.55
    fixed_min_agreement: float = 0.6
    #: Error rate (failed / all requests) thresholds, any profile.
    warn_error_rate: float = 0.01
    critical_error_rate: float = 0.05
    #: Health score thresholds, any profile.
    warn_health_score: float = 60.0
    critical_health_score: float = 30.0
    #: Webhook that critical alerts are POSTed to (JSON); empty for none.
    critical_webhook_url: str = ""
    webhook_retries: int = 3
    webhook_timeout_s: float = 2.0
    #: Resolved outcomes needed before accuracy/confidence are scored (fewer: status "unknown").
    min_resolved_for_health: int = 30
    #: Health sub-scores fall linearly from 100 at z = 0 to 0 at z = -health_z_floor.
    health_z_floor: float = 3.0
    #: CUSUM: the drop in accuracy below the validation accuracy p0 it is tuned to detect.
    cusum_drop: float = 0.06
    #: CUSUM: in-control average run length (bars) of the warning level; sets the threshold h.
    cusum_arl0: float = 20000.0
    #: Calibration: resolved outcomes needed before calibration is judged.
    calibration_min_samples: int = 50
    #: Calibration: ECE above this is reported as out of tolerance.
    calibration_max_ece: float = 0.05
    #: Resolved outcomes the miscalibration alert is judged on: with 100, a perfectly calibrated
    #: model shows an ECE near 0.05 by chance alone; with 500, about 0.02.
    calibration_alert_last_n: int = 500
    #: Calibration: a bin is flagged over/under-confident only with this many predictions ...
    calibration_min_bin_count: int = 20
    #: ... and a binomial |z| of its gap at least this large.
    calibration_z: float = 2.0
    #: Confidence zones: lower edges of low / medium / high / very_high (very_low starts at 0.5).
    zone_low_from: float = 0.52
    zone_medium_from: float = 0.55
    zone_high_from: float = 0.60
    zone_very_high_from: float = 0.70
    #: Trends: last N predictions a slope is fitted over, and the |t| that makes it significant.
    trend_last_n: int = 200
    trend_t: float = 2.0
    #: Latency anomaly: requests per chunk, and the robust z (median/MAD) that raises an alert.
    anomaly_chunk: int = 50
    anomaly_z: float = 4.0


@dataclass(frozen=True)
class RetrainConfig:
    #: Retraining in this deployment: every replica answers triggers and rollbacks, and the one
    #: holding the duties lease runs schedules, degradation triggers and probation. The same value
    #: on every replica; no setting makes one replica special.
    enabled: bool = True
    #: Each server runs a job worker of its own (jobs as its child processes). Off when standalone
    #: ``minhos-worker`` processes run the jobs, e.g. on a machine with the training extras.
    local_worker: bool = True
    #: How often an idle worker looks for a queued job (seconds).
    worker_poll_s: float = 1.0
    #: Jobs running at once across every worker. A Kelly component is fitted on the deployed
    #: pair's outputs, so by default no job trains while another may replace that pair.
    max_running_jobs: int = 1
    #: A running job's worker writes a heartbeat this often (seconds) ...
    heartbeat_interval_s: float = 2.0
    #: ... and a job whose heartbeat is older than this is failed as lost, its worker dead or cut
    #: off (not retried: the next schedule or trigger queues a new job).
    heartbeat_timeout_s: float = 15.0
    #: The duties lease (health evaluation and alerts, schedules, probation, pruning): held this
    #: long unless renewed, and renewed at every poll (``server.reload_interval_s``), so a dead
    #: holder is replaced within this plus one poll (seconds).
    lease_ttl_s: float = 5.0
    #: Schedules per model kind, in days of market time; 0 turns a schedule off.
    lstm_every_days: float = 7.0
    ensemble_every_days: float = 3.0
    kelly_every_days: float = 14.0
    #: The challenger must beat the champion's log-loss by at least this much.
    min_log_loss_improvement: float = 0.0
    #: A job running longer than this is marked failed (seconds).
    job_timeout_s: float = 900.0
    #: A newly deployed model is rolled back if it degrades within this many resolved outcomes.
    probation_outcomes: int = 50
    #: The challenger must also beat the champion's Brier score by at least this much.
    min_brier_improvement: float = 0.0
    #: Last labelled bars of the data window held out for the champion/challenger gate (never
    #: trained on), and the validation bars before them (early stopping, Kelly fallback fit).
    holdout_bars: int = 250
    validation_bars: int = 500
    #: Training settings of retraining jobs (the LSTM window is read from the deployed LSTM).
    seed: int = 7
    lstm_epochs: int = 30
    lstm_hidden: int = 32
    lstm_patience: int = 5
    ensemble_trees: int = 200
    ensemble_boosting_iterations: int = 100
    #: Calibrator of retrained Kelly components: "platt", "isotonic" or "identity".
    calibrator: str = "platt"
    #: Resolved outcomes needed to fit the Kelly component on them (else: validation span).
    kelly_min_outcomes: int = 200
    #: History the data window starts from: an OHLCV CSV, or "" for the built-in S&P 500.
    history_csv: str = ""
    #: Symbol whose stored bars extend the history; "" for the history's own symbol.
    symbol: str = ""
    #: A degradation trigger for a kind is ignored this long after its previous one (days, same
    #: clock as the schedules), so a detector that stays high does not queue job after job.
    degradation_cooldown_days: float = 7.0
    #: Probation: one-sided z below which the new version's accuracy counts as significantly
    #: worse than its champion's validation accuracy (checked once probation_outcomes resolve).
    probation_z: float = 2.33
    #: Torch/BLAS threads of the worker; 1 leaves the other core to serving.
    worker_threads: int = 1
    #: How often the coordinator prunes expired backups (wall seconds).
    prune_interval_s: float = 3600.0


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    kelly: KellyConfig = field(default_factory=KellyConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)


def _coerce(value: Any, to: Any, where: str) -> Any:
    if isinstance(to, str):  # postponed annotations arrive as strings
        to = {"int": int, "float": float, "str": str, "bool": bool}[to]
    try:
        if to is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(value)
        if to is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return to(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: cannot read {value!r} as {to.__name__}") from None


def _section_types() -> dict[str, type[Any]]:
    hints = typing.get_type_hints(Config)
    return {name: hint for name, hint in hints.items() if isinstance(hint, type)}


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Builds the configuration from defaults, an optional TOML file and the environment."""
    env = os.environ if env is None else env
    raw: dict[str, dict[str, Any]] = {}
    path = path or env.get("MINHOS_CONFIG") or None
    if path:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
    sections = _section_types()
    for name in raw:
        if name not in sections:
            raise ConfigError(f"config file: unknown section [{name}]")
    if "DATABASE_URL" in env:
        raw.setdefault("storage", {})["database_url"] = env["DATABASE_URL"]
    for key, value in env.items():
        if not key.startswith("MINHOS_") or key == "MINHOS_CONFIG":
            continue
        section, _, fname = key[len("MINHOS_") :].lower().partition("_")
        if section in sections:
            raw.setdefault(section, {})[fname] = value
    built: dict[str, Any] = {}
    for name, cls in sections.items():
        values = raw.get(name, {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for fname, value in values.items():
            if fname not in fields:
                raise ConfigError(f"[{name}] has no setting {fname!r}")
            ftype = fields[fname].type
            if isinstance(ftype, types.UnionType):
                raise ConfigError(f"[{name}].{fname}: unsupported type")
            kwargs[fname] = _coerce(value, ftype, f"[{name}].{fname}")
        built[name] = cls(**kwargs)
    config = Config(**built)
    _validate(config)
    return config


def _processes_ok(value: str) -> bool:
    text = value.strip().lower()
    return text == "auto" or (text.isdigit() and int(text) >= 1)


def as_env(config: Config) -> dict[str, str]:
    """The configuration as ``MINHOS_<SECTION>_<FIELD>`` variables, which win over any file: a
    child process (a retraining worker, a serving process) then sees exactly this configuration."""
    env: dict[str, str] = {}
    for section in dataclasses.fields(config):
        values = getattr(config, section.name)
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            env[f"MINHOS_{section.name.upper()}_{f.name.upper()}"] = text
    return env


def _validate(config: Config) -> None:
    checks: list[tuple[bool, str]] = [
        (0 <= config.server.port <= 65535, "[server].port must be in 0..65535"),
        (config.server.workers >= 1, "[server].workers must be >= 1"),
        (_processes_ok(config.server.processes), "[server].processes must be >= 1 or 'auto'"),
        (config.server.max_message_bytes >= 1024, "[server].max_message_bytes must be >= 1024"),
        (
            bool(config.server.tls_cert_file) == bool(config.server.tls_key_file),
            "[server].tls_cert_file and tls_key_file go together",
        ),
        (config.storage.batch_interval_s > 0, "[storage].batch_interval_s must be > 0"),
        (config.storage.batch_max_rows >= 1, "[storage].batch_max_rows must be >= 1"),
        (
            config.storage.artifacts in {"auto", "database", "directory"},
            "[storage].artifacts must be 'auto', 'database' or 'directory'",
        ),
        (
            config.retrain.lease_ttl_s > config.server.reload_interval_s,
            "[retrain].lease_ttl_s must exceed [server].reload_interval_s (its renewal interval)",
        ),
        (
            0 < config.retrain.heartbeat_interval_s < config.retrain.heartbeat_timeout_s,
            "[retrain].heartbeat_interval_s must be > 0 and below heartbeat_timeout_s",
        ),
        (config.retrain.max_running_jobs >= 1, "[retrain].max_running_jobs must be >= 1"),
        (config.retrain.worker_poll_s > 0, "[retrain].worker_poll_s must be > 0"),
        (0 < config.kelly.fraction <= 1, "[kelly].fraction must be in (0, 1]"),
        (0 < config.kelly.cap <= 1, "[kelly].cap must be in (0, 1]"),
        (config.kelly.default_payoff_ratio > 0, "[kelly].default_payoff_ratio must be > 0"),
        (0 <= config.fusion.lstm_weight <= 1, "[fusion].lstm_weight must be in [0, 1]"),
        (0 <= config.fusion.disagreement_penalty < 1, "[fusion].disagreement_penalty in [0, 1)"),
        (config.fusion.agreement_boost >= 0, "[fusion].agreement_boost must be >= 0"),
        (
            config.monitoring.profile in {"relative", "fixed"},
            "[monitoring].profile must be 'relative' or 'fixed'",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
