"""Model artifacts that machines share without a shared filesystem: on PostgreSQL the registry keeps
each file's bytes in the database and every replica caches them in its own directory, checked by
SHA-256 both ways; on SQLite the directory is the repository, as before."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from export import serving_graph as SG
from export.train import publish_set
from server.core.config import ConfigError, load_config
from server.core.manifest import KINDS
from server.serving.models import ModelHolder
from server.storage.artifacts import MANIFEST, METRICS, sha256_bytes
from server.storage.registry import (
    IntegrityError,
    ModelRepository,
    RegistryError,
)
from server.storage.schema import (
    ArtifactRow,
    ModelVersionRow,
    close_database,
    open_database,
    utcnow,
)
from tests.conftest import Trained, deployed_as_fitted, register_in
from tests.postgres_cluster import Cluster, need_postgres, postgres_cluster


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# --- SQLite: the directory, as before -------------------------------------------------------------


def test_sqlite_keeps_the_version_directories(trained: Trained) -> None:
    open_database(trained.database_url)
    repository = ModelRepository(trained.root / "models")
    assert repository.mode == "directory"
    deployed = repository.deployed()
    for kind, version in deployed.items():
        manifest, payload = repository.load_verified(kind, version)
        folder = repository.directory(kind, version)
        assert {p.name for p in folder.iterdir()} >= {manifest.file, MANIFEST, METRICS}
        assert (folder / manifest.file).read_bytes() == payload
    graph = repository.read_file("lstm", deployed["lstm"], SG.FILE)
    assert graph == (repository.directory("lstm", deployed["lstm"]) / SG.FILE).read_bytes()
    assert ArtifactRow.select().count() == 0  # no bytes in the database


def test_a_file_is_checked_against_its_manifest_when_written(trained: Trained) -> None:
    open_database(trained.database_url)
    repository = ModelRepository(trained.root / "models")
    version = repository.deployed()["lstm"]
    path = repository.directory("lstm", version) / SG.FILE
    before = path.read_bytes()
    with pytest.raises(IntegrityError, match="refusing to store"):
        repository.write_file("lstm", version, SG.FILE, before[:-1])
    with pytest.raises(RegistryError, match=r"no SHA-256 for notes\.txt"):
        repository.write_file("lstm", version, "notes.txt", b"hello")
    assert path.read_bytes() == before
    repository.write_file("lstm", version, SG.FILE, before)  # the registered bytes pass


def test_the_database_store_can_be_forced_on_sqlite(trained: Trained, tmp_path: Path) -> None:
    open_database(trained.database_url)
    source = ModelRepository(trained.root / "models")
    manifest, payload = source.load_verified("kelly", source.deployed()["kelly"])
    forced = ModelRepository(tmp_path / "cache", artifacts="database")
    copy = forced.publish(
        "kelly", payload, file=manifest.file, feature_spec=manifest.feature_spec, version="in-db"
    )
    assert ArtifactRow.get(ArtifactRow.version == "in-db").size == len(payload)
    assert not (
        tmp_path / "cache" / "kelly" / "in-db" / MANIFEST
    ).exists()  # the row is the manifest
    (tmp_path / "cache" / "kelly" / "in-db" / manifest.file).unlink()
    assert forced.load_verified("kelly", "in-db") == (copy, payload)


def test_the_setting_is_validated() -> None:
    assert load_config(env={}).storage.artifacts == "auto"
    assert load_config(env={"MINHOS_STORAGE_ARTIFACTS": "database"}).storage.artifacts == "database"
    with pytest.raises(ConfigError, match="artifacts"):
        load_config(env={"MINHOS_STORAGE_ARTIFACTS": "nfs"})
    with pytest.raises(ValueError, match="artifacts"):
        ModelRepository("anywhere", artifacts="nfs")


# --- PostgreSQL: the database, a cache per replica ------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    need_postgres()
    with postgres_cluster() as running:
        yield running


@pytest.fixture
def postgres_url(cluster: Cluster) -> Iterator[str]:
    """A fresh database on the module's cluster."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    subprocess.run(
        [
            str(cluster.bin / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(cluster.port),
            "-U",
            "minhos",
            name,
        ],
        check=True,
    )
    yield cluster.url.rsplit("/", 1)[0] + "/" + name
    close_database()


def test_a_replica_with_an_empty_cache_loads_the_published_bytes(
    postgres_url: str, trained: Trained, tmp_path: Path
) -> None:
    register_in(postgres_url, trained, tmp_path / "a")
    open_database(postgres_url)
    a, b = ModelRepository(tmp_path / "a"), ModelRepository(tmp_path / "b")
    assert a.mode == b.mode == "database"
    deployed = b.deployed()
    expected = {kind: a.load_verified(kind, version) for kind, version in deployed.items()}
    graph = a.read_file("lstm", deployed["lstm"], SG.FILE)
    # Nothing shared: the publisher's cache is gone before the other replica reads.
    for file in (tmp_path / "a").glob("*/*/*"):
        file.unlink()
    for kind, version in deployed.items():
        manifest, payload = b.load_verified(kind, version)
        assert (manifest, payload) == expected[kind]
        assert sha256_bytes(payload) == manifest.sha256
        cached = b.directory(kind, version)
        assert {p.name for p in cached.iterdir()} == {manifest.file}  # bytes only; no manifest
        assert (cached / manifest.file).read_bytes() == payload
        # the same bytes the SQLite registry they came from holds
        assert payload == (trained.root / "models" / kind / version / manifest.file).read_bytes()
    assert b.read_file("lstm", deployed["lstm"], SG.FILE) == graph
    stored = {(r.kind, r.name): r.size for r in ArtifactRow.select()}
    assert stored == {
        **{(k, m.file): len(p) for k, (m, p) in expected.items()},
        ("lstm", SG.FILE): len(graph),
    }


def test_a_corrupted_cache_file_is_fetched_again(
    postgres_url: str, trained: Trained, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    register_in(postgres_url, trained, tmp_path / "a")
    open_database(postgres_url)
    b = ModelRepository(tmp_path / "b")
    deployed = b.deployed()
    manifest, payload = b.load_verified("ensemble", deployed["ensemble"])
    graph = b.read_file("lstm", deployed["lstm"], SG.FILE)
    cached = b.directory("ensemble", deployed["ensemble"]) / manifest.file
    cached_graph = b.directory("lstm", deployed["lstm"]) / SG.FILE
    _flip(cached)
    cached_graph.write_bytes(graph[:100])
    with caplog.at_level(logging.WARNING, logger="minhos.registry"):
        assert b.load_verified("ensemble", deployed["ensemble"]) == (manifest, payload)
        assert b.read_file("lstm", deployed["lstm"], SG.FILE) == graph
    assert caplog.text.count("fails its SHA-256; fetching it from the database") == 2
    assert cached.read_bytes() == payload and cached_graph.read_bytes() == graph  # repaired
    # Bytes that are not the registered ones are not stored over them.
    with pytest.raises(IntegrityError, match="refusing to store"):
        b.write_file("lstm", deployed["lstm"], SG.FILE, graph[:-1])
    assert bytes(ArtifactRow.get(ArtifactRow.name == SG.FILE).data) == graph


def test_a_corrupted_database_blob_is_refused(
    postgres_url: str, trained: Trained, tmp_path: Path
) -> None:
    register_in(postgres_url, trained, tmp_path / "a")
    open_database(postgres_url)
    b = ModelRepository(tmp_path / "b")
    version = b.deployed()["lstm"]
    row = ArtifactRow.get((ArtifactRow.version == version) & (ArtifactRow.name == "model.onnx"))
    data = bytearray(bytes(row.data))
    data[len(data) // 2] ^= 0xFF
    ArtifactRow.update(data=bytes(data)).where(
        (ArtifactRow.version == version) & (ArtifactRow.name == "model.onnx")
    ).execute()
    with pytest.raises(IntegrityError, match=r"SHA-256 of model\.onnx in the database"):
        b.load_verified("lstm", version)
    assert not (b.directory("lstm", version) / "model.onnx").exists()  # never cached
    # A replica that cached the good bytes before keeps serving them: they match the registry.
    kept = ModelRepository(tmp_path / "a").load_verified("lstm", version)[1]
    assert sha256_bytes(kept) == ModelVersionRow.get(ModelVersionRow.version == version).sha256


def test_two_replicas_follow_a_deploy_and_a_rollback(
    postgres_url: str, trained: Trained, tmp_path: Path
) -> None:
    register_in(postgres_url, trained, tmp_path / "publisher")
    open_database(postgres_url)
    config = dataclasses.replace(
        trained.config(),
        storage=dataclasses.replace(trained.config().storage, database_url=postgres_url),
    )
    replicas = [ModelHolder(ModelRepository(tmp_path / f"replica-{i}"), config) for i in (1, 2)]
    assert all(holder.reload() for holder in replicas)
    first = replicas[0].current.versions
    assert replicas[1].current.versions == first and all(h.current.one_run for h in replicas)

    # A worker on a third machine (its own cache) publishes and deploys a set.
    worker = ModelRepository(tmp_path / "worker")
    nxt = {k: f"next-{k}" for k in KINDS}
    publish_set(worker, deployed_as_fitted(worker), nxt, deploy=True)
    assert all(holder.reload() for holder in replicas)
    for i, holder in enumerate(replicas, 1):
        assert holder.current.versions == nxt and holder.current.one_run  # graph from the database
        assert (tmp_path / f"replica-{i}" / "lstm" / nxt["lstm"] / SG.FILE).is_file()

    # A rollback through replica 1: the backups deployed again; replica 2 follows.
    replicas[0].repository.deploy_set(first)
    assert all(holder.reload() for holder in replicas)
    assert all(holder.current.versions == first for holder in replicas)
    assert not any(holder.reload() for holder in replicas)  # nothing more to do

    # Pruning the (now backup) set through replica 1 deletes the blobs and its cache; replica 2
    # drops its cached copies at its next swap.
    pruned = replicas[0].repository.prune_backups(utcnow() + dt.timedelta(days=1))
    assert sorted(pruned) == sorted(f"{k}/{v}" for k, v in nxt.items())
    assert not ArtifactRow.select().where(ArtifactRow.version.in_(list(nxt.values()))).exists()
    assert not (tmp_path / "replica-1" / "lstm" / nxt["lstm"]).exists()
    assert ModelVersionRow.get(ModelVersionRow.version == nxt["lstm"]).stage == "retired"
    dropped = replicas[1].repository.drop_retired_from_cache()
    assert sorted(dropped) == sorted(pruned)
    assert not (tmp_path / "replica-2" / "lstm" / nxt["lstm"]).exists()
    assert (tmp_path / "replica-2" / "lstm" / first["lstm"]).exists()
