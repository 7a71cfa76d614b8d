"""The model repository and registry.

Files live in a plain directory, ``<root>/<kind>/<version>/`` holding the model file and its
``manifest.json`` (version, SHA-256, metrics, feature spec); which version serves is recorded in the
database (``ModelVersionRow.stage``), so several replicas agree on it. A file whose SHA-256 does not
match its manifest is refused at load. Nothing on this path unpickles.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from server.core.manifest import (
    STAGES,
    FeatureSpec,
    MalformedManifest,
    Manifest,
    check_kind,
)
from server.storage.schema import ModelVersionRow, utcnow, write_transaction

MANIFEST = "manifest.json"
METRICS = "metrics.json"


class RegistryError(Exception):
    """Base of registry errors."""


class ModelNotFoundError(RegistryError):
    """No such kind, version, or no deployed version."""


class IntegrityError(RegistryError):
    """A model file does not match the SHA-256 of its manifest, or the manifest is malformed."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_version(now: dt.datetime | None = None) -> str:
    """Sortable and unique: UTC time to the second plus random hex."""
    now = now or utcnow()
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class ModelRepository:
    """Files under ``root`` plus their rows in the database (which must be open)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def directory(self, kind: str, version: str) -> Path:
        return self.root / kind / version

    def publish(
        self,
        kind: str,
        payload: bytes,
        *,
        file: str,
        feature_spec: FeatureSpec,
        metrics: Mapping[str, float] | None = None,
        info: Mapping[str, Any] | None = None,
        version: str | None = None,
        deploy: bool = False,
    ) -> Manifest:
        """Writes a model file and its manifest, then registers it (as candidate, or deployed)."""
        check_kind(kind)
        version = version or new_version()
        target = self.directory(kind, version)
        if target.exists():
            raise RegistryError(f"{kind} version {version} already exists")
        manifest = Manifest(
            kind=kind,
            version=version,
            sha256=sha256_bytes(payload),
            file=file,
            created_at=utcnow().isoformat(timespec="seconds") + "Z",
            feature_spec=feature_spec,
            metrics={k: float(v) for k, v in (metrics or {}).items()},
            info=dict(info or {}),
        )
        # Write into a sibling temp dir and rename, so a reader never sees half a version.
        staging = target.with_name(f".{version}.tmp")
        staging.mkdir(parents=True, exist_ok=False)
        (staging / file).write_bytes(payload)
        (staging / MANIFEST).write_text(manifest.to_json())
        # The metrics again on their own, for people and tools that only want the scores.
        (staging / METRICS).write_text(json.dumps(manifest.metrics, indent=2, sort_keys=True))
        staging.rename(target)
        with write_transaction():
            ModelVersionRow.create(
                kind=kind,
                version=version,
                sha256=manifest.sha256,
                stage="candidate",
                path=str(Path(kind) / version),
                manifest=manifest.to_json(),
            )
            if deploy:
                self.deploy(kind, version)
        return manifest

    def read_manifest(self, kind: str, version: str) -> Manifest:
        check_kind(kind)
        path = self.directory(kind, version) / MANIFEST
        try:
            return Manifest.from_json(path.read_text())
        except FileNotFoundError:
            raise ModelNotFoundError(f"{kind} version {version}: no manifest at {path}") from None
        except MalformedManifest as exc:
            raise IntegrityError(f"{kind} version {version}: {exc}") from None

    def load_verified(self, kind: str, version: str) -> tuple[Manifest, bytes]:
        """The manifest and the model bytes, after checking the bytes against both the manifest
        and the registry row (a swapped manifest alone must not pass)."""
        manifest = self.read_manifest(kind, version)
        row = ModelVersionRow.get_or_none(
            (ModelVersionRow.kind == kind) & (ModelVersionRow.version == version)
        )
        if row is None:
            raise ModelNotFoundError(f"{kind} version {version} is not registered")
        payload = (self.directory(kind, version) / manifest.file).read_bytes()
        digest = sha256_bytes(payload)
        if digest != manifest.sha256 or digest != row.sha256:
            raise IntegrityError(
                f"{kind} version {version}: SHA-256 of {manifest.file} is {digest[:12]}…, "
                f"registered {row.sha256[:12]}…; refusing to load"
            )
        return manifest, payload

    def deploy(self, kind: str, version: str) -> None:
        """Marks ``version`` deployed and the previously deployed one a backup, atomically."""
        self.deploy_set({kind: version})

    def deploy_set(self, versions: Mapping[str, str]) -> None:
        """Deploys one version per kind in one transaction: the server's poller sees the whole
        set or none of it, never a mix that was not validated together."""
        for kind in versions:
            check_kind(kind)
        with write_transaction():
            for kind, version in versions.items():
                self._deploy_one(kind, version)

    def _deploy_one(self, kind: str, version: str) -> None:
        row = ModelVersionRow.get_or_none(
            (ModelVersionRow.kind == kind) & (ModelVersionRow.version == version)
        )
        if row is None:
            raise ModelNotFoundError(f"{kind} version {version} is not registered")
        (
            ModelVersionRow.update(stage="backup", stage_changed_at=utcnow())
            .where(
                (ModelVersionRow.kind == kind)
                & (ModelVersionRow.stage == "deployed")
                & (ModelVersionRow.version != version)
            )
            .execute()
        )
        row.stage = "deployed"
        row.deployed_at = row.stage_changed_at = utcnow()
        row.save()

    def set_stage(self, kind: str, version: str, stage: str) -> None:
        if stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r}")
        updated = (
            ModelVersionRow.update(stage=stage, stage_changed_at=utcnow())
            .where((ModelVersionRow.kind == kind) & (ModelVersionRow.version == version))
            .execute()
        )
        if not updated:
            raise ModelNotFoundError(f"{kind} version {version} is not registered")

    def deployed(self) -> dict[str, str]:
        """Deployed version per kind (kinds with none deployed are absent)."""
        rows = ModelVersionRow.select(ModelVersionRow.kind, ModelVersionRow.version).where(
            ModelVersionRow.stage == "deployed"
        )
        return {row.kind: row.version for row in rows}

    def versions(
        self, kind: str | None = None, stage: str | None = None
    ) -> Sequence[ModelVersionRow]:
        """Registered versions, newest first."""
        query = ModelVersionRow.select()
        if kind:
            query = query.where(ModelVersionRow.kind == kind)
        if stage:
            query = query.where(ModelVersionRow.stage == stage)
        return list(
            query.order_by(ModelVersionRow.created_at.desc(), ModelVersionRow.version.desc())
        )

    def prune_backups(self, older_than: dt.datetime) -> list[str]:
        """Retires backups that became backups before ``older_than`` and deletes their files."""
        pruned: list[str] = []
        rows = ModelVersionRow.select().where(
            (ModelVersionRow.stage == "backup") & (ModelVersionRow.stage_changed_at < older_than)
        )
        for row in rows:
            shutil.rmtree(self.root / row.path, ignore_errors=True)
            row.stage = "retired"
            row.stage_changed_at = utcnow()
            row.save()
            pruned.append(f"{row.kind}/{row.version}")
        return pruned
