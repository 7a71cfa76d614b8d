"""Transport security (issue 11): TLS with a self-signed CA made at test time (the ``openssl``
command line), a plaintext or wrongly trusting client refused, and the start-up warnings of a
server without TLS (server/app.py ``plaintext_warnings``). Message-size and stream limits are
tests/test_reliability_fuzz.py, tests/test_server.py and tests/test_request_rules.py."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.client import MinhosClient, predict_request
from export.data import MarketData
from minhos.v1 import inference_pb2_grpc
from server.app import MinhosServer, plaintext_warnings
from server.core.config import ServerConfig
from tests.conftest import Trained
from tests.reliability_record import record
from tests.server_harness import live_index, server_config, window
from tests.server_process import serving

pytestmark = pytest.mark.serving

TOKEN = "tls-token"
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="no openssl command line")


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that did not sign the server's certificate


def _openssl(*args: str | Path, cwd: Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *map(str, args)], cwd=cwd, check=True, capture_output=True)


def _ca(name: str, cwd: Path) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=cwd,
    )  # fmt: skip


def make_pki(into: Path) -> Pki:
    """A CA, a server certificate it signs for 127.0.0.1 and localhost, and an unrelated CA."""
    _ca("ca", into)
    _ca("other", into)
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
        cwd=into,
    )  # fmt: skip
    (into / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "san.cnf",
        cwd=into,
    )  # fmt: skip
    return Pki(into / "ca.pem", into / "server.pem", into / "server.key", into / "other.pem")


@contextmanager
def tls_server(trained: Trained, pki: Pki) -> Iterator[MinhosServer]:
    config = server_config(
        trained.config(),
        tls_cert_file=str(pki.cert),
        tls_key_file=str(pki.key),
        token=TOKEN,
    )
    srv = MinhosServer(config).start()
    try:
        yield srv
    finally:
        srv.stop(grace=1.0)


def _code(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@needs_openssl
def test_tls_with_a_self_signed_ca(
    trained: Trained, sp500: MarketData, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = make_pki(tmp_path)
    caplog.set_level(logging.WARNING, logger="minhos.server")
    with tls_server(trained, pki) as srv:
        started = [r.getMessage() for r in caplog.records if "TLS is off" in r.getMessage()]
        served: dict[str, str] = {}
        for host in ("127.0.0.1", "localhost"):
            target = f"{host}:{srv.port}"
            with MinhosClient(target, tls_ca_file=str(pki.ca), token=TOKEN, max_attempts=1) as c:
                need = c.serving_info(timeout=10).bars_required
                bars = window(sp500, live_index(sp500), need)
                reply = c.predict("SPX", bars, timeout=10)
                assert reply.prediction_id
                assert c.health(timeout=10).status
                served[host] = reply.prediction_id
            with grpc.secure_channel(
                target, grpc.ssl_channel_credentials(pki.ca.read_bytes())
            ) as ch:
                check = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=10
                )
                assert check.status == health_pb2.HealthCheckResponse.SERVING
        target = f"127.0.0.1:{srv.port}"
        request = predict_request("SPX", bars)
        # Over TLS the token is still required.
        with MinhosClient(target, tls_ca_file=str(pki.ca), max_attempts=1) as anonymous:
            no_token = _code(lambda: anonymous.predict("SPX", bars, timeout=10))
        # A plaintext client, even with the token, gets no answer from a TLS port.
        with grpc.insecure_channel(target) as plain:
            stub = inference_pb2_grpc.InferenceServiceStub(plain)
            metadata = (("authorization", f"Bearer {TOKEN}"),)
            plaintext = _code(lambda: stub.Predict(request, timeout=5, metadata=metadata))
        # A client trusting another CA refuses the server's certificate.
        with MinhosClient(
            target, tls_ca_file=str(pki.other_ca), token=TOKEN, max_attempts=1
        ) as wrong:
            wrong_ca = _code(lambda: wrong.predict("SPX", bars, timeout=5))
        # And the server still serves the right client after those refusals.
        with MinhosClient(target, tls_ca_file=str(pki.ca), token=TOKEN, max_attempts=1) as c:
            assert c.predict("SPX", bars, timeout=10).prediction_id
    assert started == []  # TLS on: no plaintext warning
    assert no_token == grpc.StatusCode.UNAUTHENTICATED
    assert plaintext == grpc.StatusCode.UNAVAILABLE
    assert wrong_ca == grpc.StatusCode.UNAVAILABLE
    record(
        "TLS, self-signed CA (made by openssl at test time)",
        "Predict, GetHealth and grpc.health over TLS with the CA and token, for 127.0.0.1 and "
        "localhost; no token over TLS; a plaintext client; a client trusting another CA",
        f"{len(served)} hosts served over TLS; no token → {no_token.name}; plaintext → "
        f"{plaintext.name}; wrong CA → {wrong_ca.name}; no plaintext warning at start",
    )


def test_a_token_in_clear_is_warned_about_at_start(trained: Trained, tmp_path: Path) -> None:
    settings = {
        "MINHOS_STORAGE_DATABASE_URL": trained.database_url,
        "MINHOS_STORAGE_MODEL_REPOSITORY": str(trained.root / "models"),
        "MINHOS_SERVER_TOKEN": TOKEN,
    }
    with serving(settings, tmp_path / "server.log") as server:
        server.stop()
        log = server.log_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    warned = [e for e in lines if "the bearer token travels in clear" in e.get("message", "")]
    assert len(warned) == 1, log[-3000:]
    assert warned[0]["level"] == "warning" and "server.token" in warned[0]["message"]
    assert TOKEN not in log  # the warning names the setting, never the secret
    assert "not a loopback address" not in log  # 127.0.0.1: no host warning
    record(
        "token without TLS",
        "a real server process with server.token and no TLS warns at start; the log holds no token",
        "1 warning naming server.token; token absent from the log",
    )


def test_a_host_off_loopback_without_tls_is_warned_about() -> None:
    """Checked on the configuration, not by binding: tests bind loopback only."""
    plain = ServerConfig()
    off = ["0.0.0.0", "", "::", "[::]", "10.1.2.3", "minhos.example.com"]
    on = ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"]
    for host in off:
        (warning,) = plaintext_warnings(dataclasses.replace(plain, host=host))
        assert f"server.host={host!r}" in warning and "TLS is off" in warning
    for host in on:
        assert plaintext_warnings(dataclasses.replace(plain, host=host)) == []
    tls = dataclasses.replace(plain, tls_cert_file="c.pem", tls_key_file="k.pem", token="t")
    assert plaintext_warnings(dataclasses.replace(tls, host="0.0.0.0")) == []
    both = plaintext_warnings(dataclasses.replace(plain, host="0.0.0.0", token="t"))
    assert len(both) == 2
