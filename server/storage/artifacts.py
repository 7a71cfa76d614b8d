"""Where a model version's files live: a plain directory, or the database with a local cache.

A version's files are its model file and, for some versions, the serving graph. On one machine
(SQLite) they live in ``<root>/<kind>/<version>/`` beside ``manifest.json`` and ``metrics.json``.
Replicas on several machines (PostgreSQL) share no filesystem, so the bytes live in the database
(``ArtifactRow``) and ``<root>`` is this process's cache of them, same layout, without a manifest:
the registry row is the one manifest. Every read is checked against the SHA-256 the registry
recorded: a cache file that fails is fetched again from the database, never trusted; a database
blob that fails is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Protocol

import peewee as pw

from server.core.manifest import MalformedManifest, Manifest
from server.storage.schema import ArtifactRow, ModelVersionRow, database, write_transaction

log = logging.getLogger("minhos.registry")

#: ``storage.artifacts``: "auto" keeps the bytes in the database on PostgreSQL, in the directory
#: on SQLite; the other two force one.
MODES = ("auto", "database", "directory")
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


def resolve_mode(mode: str) -> str:
    """ "database" or "directory" for a ``storage.artifacts`` value, by the database now open."""
    if mode not in MODES:
        raise ValueError(f"artifacts must be one of {', '.join(MODES)}, not {mode!r}")
    if mode != "auto":
        return mode
    return "database" if isinstance(database.obj, pw.PostgresqlDatabase) else "directory"


def write_atomic(path: Path, payload: bytes) -> None:
    """Whole or not at all: a reader (another serving process sharing the directory) never sees
    half a file. The temporary name is unique, so concurrent writers do not collide."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        staging.write_bytes(payload)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _mismatch(kind: str, version: str, name: str, digest: str, expected: str, where: str) -> str:
    return (
        f"{kind} version {version}: SHA-256 of {name} {where} is {digest[:12]}…, "
        f"registered {expected[:12]}…; refusing to load"
    )


class ArtifactStore(Protocol):
    """The bytes of registered versions. ``sha256`` is always the digest the registry recorded
    (the caller's registered row), never one read beside the bytes."""

    root: Path

    def add_version(self, manifest: Manifest, payload: bytes) -> None:
        """The model file of a new version (and its manifest, where this store keeps one); called
        inside the transaction that registers it."""
        ...

    def manifest(self, kind: str, version: str) -> Manifest: ...

    def write(self, kind: str, version: str, name: str, payload: bytes, sha256: str) -> None: ...

    def read(self, kind: str, version: str, name: str, sha256: str) -> bytes: ...

    def remove(self, kind: str, version: str) -> None:
        """Deletes a version's bytes (called inside the transaction that retires it)."""
        ...


class DirectoryStore:
    """``<root>/<kind>/<version>/``: the model file, ``manifest.json`` and ``metrics.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add_version(self, manifest: Manifest, payload: bytes) -> None:
        target = self.root / manifest.kind / manifest.version
        if target.exists():
            raise RegistryError(f"{manifest.kind} version {manifest.version} already exists")
        # Written into a sibling temp dir and renamed, so a reader never sees half a version.
        staging = target.with_name(f".{manifest.version}.tmp")
        staging.mkdir(parents=True, exist_ok=False)
        (staging / manifest.file).write_bytes(payload)
        (staging / MANIFEST).write_text(manifest.to_json())
        # The metrics again on their own, for people and tools that only want the scores.
        (staging / METRICS).write_text(_metrics_json(manifest))
        staging.rename(target)

    def manifest(self, kind: str, version: str) -> Manifest:
        path = self.root / kind / version / MANIFEST
        try:
            return Manifest.from_json(path.read_text())
        except FileNotFoundError:
            raise ModelNotFoundError(f"{kind} version {version}: no manifest at {path}") from None
        except MalformedManifest as exc:
            raise IntegrityError(f"{kind} version {version}: {exc}") from None

    def write(self, kind: str, version: str, name: str, payload: bytes, sha256: str) -> None:
        _check_payload(kind, version, name, payload, sha256)
        write_atomic(self.root / kind / version / name, payload)

    def read(self, kind: str, version: str, name: str, sha256: str) -> bytes:
        payload = (self.root / kind / version / name).read_bytes()
        digest = sha256_bytes(payload)
        if digest != sha256:
            raise IntegrityError(_mismatch(kind, version, name, digest, sha256, "on disk"))
        return payload

    def remove(self, kind: str, version: str) -> None:
        shutil.rmtree(self.root / kind / version, ignore_errors=True)


class DatabaseStore:
    """Blobs in ``ArtifactRow``, cached under ``<root>/<kind>/<version>/<name>`` per machine."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add_version(self, manifest: Manifest, payload: bytes) -> None:
        self.write(manifest.kind, manifest.version, manifest.file, payload, manifest.sha256)

    def manifest(self, kind: str, version: str) -> Manifest:
        row = ModelVersionRow.get_or_none(
            (ModelVersionRow.kind == kind) & (ModelVersionRow.version == version)
        )
        if row is None:
            raise ModelNotFoundError(f"{kind} version {version} is not registered")
        try:
            return Manifest.from_json(row.manifest)
        except MalformedManifest as exc:
            raise IntegrityError(f"{kind} version {version}: {exc}") from None

    def write(self, kind: str, version: str, name: str, payload: bytes, sha256: str) -> None:
        _check_payload(kind, version, name, payload, sha256)
        key = _key(kind, version, name)
        with write_transaction():
            ArtifactRow.delete().where(key).execute()
            ArtifactRow.create(
                kind=kind,
                version=version,
                name=name,
                sha256=sha256,
                size=len(payload),
                data=payload,
            )
            # The bytes as the database holds them, not as they were handed over.
            stored = _stored_digest(key)
            if stored != sha256:
                raise IntegrityError(_mismatch(kind, version, name, stored, sha256, "as stored"))
        self._cache(kind, version, name, payload)

    def read(self, kind: str, version: str, name: str, sha256: str) -> bytes:
        path = self.root / kind / version / name
        try:
            cached = path.read_bytes()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cache file %s unreadable (%s); fetching it from the database", path, exc)
        else:
            if sha256_bytes(cached) == sha256:
                return cached
            log.warning("cache file %s fails its SHA-256; fetching it from the database", path)
        row = (
            ArtifactRow.select(ArtifactRow.sha256, ArtifactRow.data)
            .where(_key(kind, version, name))
            .get_or_none()
        )
        if row is None:
            raise ModelNotFoundError(f"{kind} version {version}: no {name} in the database")
        payload = bytes(row.data)
        digest = sha256_bytes(payload)
        if digest != sha256 or row.sha256 != sha256:
            raise IntegrityError(_mismatch(kind, version, name, digest, sha256, "in the database"))
        self._cache(kind, version, name, payload)
        return payload

    def remove(self, kind: str, version: str) -> None:
        ArtifactRow.delete().where(
            (ArtifactRow.kind == kind) & (ArtifactRow.version == version)
        ).execute()
        shutil.rmtree(self.root / kind / version, ignore_errors=True)

    def _cache(self, kind: str, version: str, name: str, payload: bytes) -> None:
        # A cache that cannot be written (full or read-only disk) costs a fetch per load, no more.
        try:
            write_atomic(self.root / kind / version / name, payload)
        except OSError as exc:
            log.warning("cannot cache %s %s %s: %s", kind, version, name, exc)


def _key(kind: str, version: str, name: str) -> pw.Expression:
    return (
        (ArtifactRow.kind == kind) & (ArtifactRow.version == version) & (ArtifactRow.name == name)
    )


def _stored_digest(key: pw.Expression) -> str:
    if isinstance(database.obj, pw.PostgresqlDatabase):
        # Hashed where the bytes are: no second transfer of the blob.
        digest = pw.fn.encode(pw.fn.sha256(ArtifactRow.data), "hex")
        return str(ArtifactRow.select(digest).where(key).scalar())
    return sha256_bytes(bytes(ArtifactRow.select(ArtifactRow.data).where(key).scalar()))


def _check_payload(kind: str, version: str, name: str, payload: bytes, sha256: str) -> None:
    digest = sha256_bytes(payload)
    if digest != sha256:
        raise IntegrityError(
            f"{kind} version {version}: {name} has SHA-256 {digest[:12]}…, its manifest says "
            f"{sha256[:12]}…; refusing to store it"
        )


def _metrics_json(manifest: Manifest) -> str:
    return json.dumps(manifest.metrics, indent=2, sort_keys=True)
