"""A trained set is deployed in one transaction, so the server's poller never loads a mix."""

from __future__ import annotations

import sqlite3

import pytest

from export.train import publish_set
from server.core.manifest import KINDS
from server.storage.registry import ModelNotFoundError, ModelRepository
from server.storage.schema import database, open_database
from tests.conftest import Trained, deployed_as_fitted


def test_publishing_a_trained_set_deploys_it_in_one_transaction(trained: Trained) -> None:
    open_database(trained.database_url)
    repository = ModelRepository(trained.root / "models")
    before = repository.deployed()
    statements: list[str] = []
    connection = database.connection()
    assert isinstance(connection, sqlite3.Connection)
    connection.set_trace_callback(statements.append)
    try:
        manifests = publish_set(
            repository, deployed_as_fitted(repository), {k: f"v2-{k}" for k in KINDS}, deploy=True
        )
    finally:
        connection.set_trace_callback(None)
    assert repository.deployed() == {k: m.version for k, m in manifests.items()} != before
    # each kind: the old version becomes a backup, the new one deployed
    deploys = [i for i, s in enumerate(statements) if s.startswith("UPDATE") and "'deployed'" in s]
    assert len(deploys) == 2 * len(KINDS)
    commits = [i for i, s in enumerate(statements) if s.strip().upper() == "COMMIT"]
    # no commit between the first and the last deploy
    assert not [c for c in commits if deploys[0] < c < deploys[-1]], statements


def test_a_set_with_a_missing_version_deploys_nothing(trained: Trained) -> None:
    open_database(trained.database_url)
    repository = ModelRepository(trained.root / "models")
    before = repository.deployed()
    fitted = deployed_as_fitted(repository)
    publish_set(repository, fitted[:2], {f.kind: f"v3-{f.kind}" for f in fitted}, deploy=False)
    with pytest.raises(ModelNotFoundError):
        repository.deploy_set({fitted[0].kind: f"v3-{fitted[0].kind}", "kelly": "nope"})
    assert repository.deployed() == before
