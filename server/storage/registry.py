"""The model repository and registry.

Which version serves is recorded in the database (``ModelVersionRow.stage``), so several replicas
agree on it. The files (model file, serving graph) live in a store (server/storage/artifacts.py):
on SQLite a plain directory, ``<root>/<kind>/<version>/`` with ``manifest.json``; on PostgreSQL the
database itself, with ``<root>`` as this machine's cache, so that replicas need no shared
filesystem. Every file is checked against the SHA-256 its registered row gives, when written and
when loaded; a file that does not match is refused. Nothing on this path unpickles.
"""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from server.core.config import StorageConfig
from server.core.manifest import (
    STAGES,
    FeatureSpec,
    MalformedManifest,
    Manifest,
    check_kind,
)
from server.storage.artifacts import MANIFEST as MANIFEST
from server.storage.artifacts import METRICS as METRICS
from server.storage.artifacts import (
    MODES,
    ArtifactStore,
    DatabaseStore,
    DirectoryStore,
    resolve_mode,
)
from server.storage.artifacts import IntegrityError as IntegrityError
from server.storage.artifacts import ModelNotFoundError as ModelNotFoundError
from server.storage.artifacts import RegistryError as RegistryError
from server.storage.artifacts import sha256_bytes as sha256_bytes
from server.storage.schema import ModelVersionRow, utcnow, write_transaction


def new_version(now: dt.datetime | None = None) -> str:
    """Sortable and unique: UTC time to the second plus random hex."""
    now = now or utcnow()
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class ModelRepository:
    """Versions' rows in the database (which must be open) and their files in a store chosen by
    ``artifacts`` (``storage.artifacts``): "auto" picks the database store on PostgreSQL and the
    directory on SQLite, by the database open at each call."""

    def __init__(self, root: str | Path, artifacts: str = "auto") -> None:
        if artifacts not in MODES:
            raise ValueError(f"artifacts must be one of {', '.join(MODES)}, not {artifacts!r}")
        self.root = Path(root)
        self.artifacts = artifacts
        self._stores: dict[str, ArtifactStore] = {
            "database": DatabaseStore(self.root),
            "directory": DirectoryStore(self.root),
        }

    @classmethod
    def from_config(cls, storage: StorageConfig) -> ModelRepository:
        return cls(storage.model_repository, storage.artifacts)

    @property
    def mode(self) -> str:
        """Where the bytes live now: "database" or "directory"."""
        return resolve_mode(self.artifacts)

    @property
    def store(self) -> ArtifactStore:
        return self._stores[self.mode]

    def directory(self, kind: str, version: str) -> Path:
        """This machine's files of a version: the version itself (directory mode) or its cache."""
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
        """Stores a model file (and its manifest), then registers it (as candidate, or deployed),
        in one transaction: a registered version always has its bytes."""
        check_kind(kind)
        version = version or new_version()
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
        store = self.store
        with write_transaction():
            if self._row(kind, version) is not None:
                raise RegistryError(f"{kind} version {version} already exists")
            store.add_version(manifest, payload)
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
        return self.store.manifest(kind, version)

    def load_verified(self, kind: str, version: str) -> tuple[Manifest, bytes]:
        """The manifest and the model bytes, after checking the bytes against both the manifest
        and the registry row (a swapped manifest alone must not pass)."""
        check_kind(kind)
        store = self.store
        manifest = store.manifest(kind, version)
        row = self._row(kind, version)
        if row is None:
            raise ModelNotFoundError(f"{kind} version {version} is not registered")
        if manifest.sha256 != row.sha256:
            raise IntegrityError(
                f"{kind} version {version}: SHA-256 of {manifest.file} is "
                f"{manifest.sha256[:12]}… by its manifest, registered {row.sha256[:12]}…; "
                "refusing to load"
            )
        return manifest, store.read(kind, version, manifest.file, row.sha256)

    def write_file(self, kind: str, version: str, name: str, payload: bytes) -> None:
        """Adds a file to a registered version, whole or not at all. Its SHA-256 must be the one
        the registered manifest gives ``name``: the model file's, or that of an ``info`` entry
        ``{"file": name, "sha256": ...}`` (the serving graph's)."""
        self.store.write(kind, version, name, payload, self._registered_digest(kind, version, name))

    def read_file(self, kind: str, version: str, name: str) -> bytes:
        """A file of a registered version, checked against the SHA-256 its registered manifest
        gives (see :meth:`write_file`). Raises :class:`IntegrityError` when it does not match,
        :class:`ModelNotFoundError` or ``OSError`` when it is missing."""
        return self.store.read(kind, version, name, self._registered_digest(kind, version, name))

    def _row(self, kind: str, version: str) -> ModelVersionRow | None:
        return ModelVersionRow.get_or_none(
            (ModelVersionRow.kind == kind) & (ModelVersionRow.version == version)
        )

    def _registered_digest(self, kind: str, version: str, name: str) -> str:
        check_kind(kind)
        row = self._row(kind, version)
        if row is None:
            raise ModelNotFoundError(f"{kind} version {version} is not registered")
        try:
            manifest = Manifest.from_json(row.manifest)
        except MalformedManifest as exc:
            raise IntegrityError(f"{kind} version {version}: {exc}") from None
        if name == manifest.file:
            return str(row.sha256)
        for entry in manifest.info.values():
            if (
                isinstance(entry, dict)
                and entry.get("file") == name
                and isinstance(entry.get("sha256"), str)
            ):
                return str(entry["sha256"])
        raise RegistryError(f"{kind} version {version} registers no SHA-256 for {name}")

    def deploy(self, kind: str, version: str) -> None:
        """Marks ``version`` deployed and the previously deployed one a backup, atomically."""
        self.deploy_set({kind: version})

    def deploy_set(self, versions: Mapping[str, str]) -> None:
        """Deploys one version per kind in one transaction: the server's poller sees the whole
        set or none of it, never a mix that was not validated together."""
        for kind in versions:
            check_kind(kind)
        # Each kind's deploy lock: two replicas deploying at once cannot leave two "deployed".
        with write_transaction(*(f"deploy:{kind}" for kind in versions)):
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
        """Retires backups that became backups before ``older_than`` and deletes their bytes (the
        directory, or the database's blobs and this machine's cache)."""
        pruned: list[str] = []
        store = self.store
        rows = ModelVersionRow.select().where(
            (ModelVersionRow.stage == "backup") & (ModelVersionRow.stage_changed_at < older_than)
        )
        for row in list(rows):
            # Under the kind's deploy lock, and only if still a backup: a rollback to it made
            # meanwhile through another replica wins.
            with write_transaction(f"deploy:{row.kind}"):
                retired = (
                    ModelVersionRow.update(stage="retired", stage_changed_at=utcnow())
                    .where(
                        (ModelVersionRow.kind == row.kind)
                        & (ModelVersionRow.version == row.version)
                        & (ModelVersionRow.stage == "backup")
                    )
                    .execute()
                )
                if retired:
                    store.remove(row.kind, row.version)
            if retired:
                pruned.append(f"{row.kind}/{row.version}")
        return pruned

    def drop_retired_from_cache(self) -> list[str]:
        """Deletes this machine's cached files of versions retired since they were cached (by a
        prune on another replica). Database mode only: in directory mode the files are the
        versions, and pruning deletes them."""
        if self.mode != "database" or not self.root.is_dir():
            return []
        cached = {
            (kind.name, version.name)
            for kind in self.root.iterdir()
            if kind.is_dir()
            for version in kind.iterdir()
            if version.is_dir() and not version.name.startswith(".")
        }
        if not cached:
            return []
        rows = ModelVersionRow.select(ModelVersionRow.kind, ModelVersionRow.version).where(
            (ModelVersionRow.stage == "retired")
            & ModelVersionRow.version.in_([version for _, version in cached])
        )
        dropped = []
        for row in rows:
            if (row.kind, row.version) in cached:
                shutil.rmtree(self.directory(row.kind, row.version), ignore_errors=True)
                dropped.append(f"{row.kind}/{row.version}")
        return dropped
