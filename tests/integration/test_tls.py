"""TLS and mTLS on the gRPC port through real channels, certificate rotation without a restart,
and the shard connections' sslmode floor."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from simplu_grpc.adapters.citrus.client import CitrusClient
from simplu_grpc.adapters.postgres.shard_tls import ShardTlsPolicy
from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.errors import ShardUnavailable
from simplu_grpc.metrics import Metrics
from simplu_grpc.settings import Settings, SettingsError
from tests.fixtures.certs import ThrowawayCA, write
from tests.fixtures.citrus import CITRUS_API_KEY
from tests.fixtures.server import BASE_ENV, MakeServer

pytestmark = pytest.mark.integration


def _check(port: int, credentials: grpc.ChannelCredentials | None) -> int:
    """Health/Check over a fresh channel (TLS when ``credentials``); the status, or raises."""
    target = f"127.0.0.1:{port}"
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)


def test_tls_serves_clients_that_trust_the_ca_and_refuses_plaintext(
    make_server: MakeServer, tmp_path: Path
) -> None:
    """With GRPC_TLS_CERT_FILE/KEY_FILE the port speaks TLS: a client trusting the CA is served, a
    plaintext client is not."""
    ca = ThrowawayCA()
    cert, key = write(tmp_path, "server", ca.issue("localhost", server=True))
    server = make_server(grpc_tls_cert_file=str(cert), grpc_tls_key_file=str(key))
    assert _check(server.port, grpc.ssl_channel_credentials(ca.pem)) == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as caught:
        _check(server.port, None)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_a_client_without_a_certificate(make_server: MakeServer, tmp_path: Path) -> None:
    """With GRPC_TLS_CLIENT_CA_FILE a client must present a certificate the client CA signed: one
    without, or with one from another CA, is refused at the handshake."""
    server_ca, client_ca, stranger_ca = (
        ThrowawayCA("servers"),
        ThrowawayCA("clients"),
        ThrowawayCA("strangers"),
    )
    cert, key = write(tmp_path, "server", server_ca.issue("localhost", server=True))
    (tmp_path / "clients.pem").write_bytes(client_ca.pem)
    server = make_server(
        grpc_tls_cert_file=str(cert),
        grpc_tls_key_file=str(key),
        grpc_tls_client_ca_file=str(tmp_path / "clients.pem"),
    )
    good = client_ca.issue("billing-service", server=False)
    allowed = grpc.ssl_channel_credentials(server_ca.pem, good.key_pem, good.cert_pem)
    assert _check(server.port, allowed) == health_pb2.HealthCheckResponse.SERVING
    forged = stranger_ca.issue("billing-service", server=False)
    for credentials in (
        grpc.ssl_channel_credentials(server_ca.pem),
        grpc.ssl_channel_credentials(server_ca.pem, forged.key_pem, forged.cert_pem),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            _check(server.port, credentials)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_rotated_certificate_is_served_without_a_restart(make_server: MakeServer, tmp_path: Path) -> None:
    """Replacing the certificate files (a new CA's certificate) is picked up by the next connection:
    clients trusting only the new CA connect, with no restart."""
    old_ca, new_ca = ThrowawayCA("old"), ThrowawayCA("new")
    cert, key = write(tmp_path, "server", old_ca.issue("localhost", server=True))
    server = make_server(grpc_tls_cert_file=str(cert), grpc_tls_key_file=str(key))
    assert (
        _check(server.port, grpc.ssl_channel_credentials(old_ca.pem))
        == health_pb2.HealthCheckResponse.SERVING
    )
    with pytest.raises(grpc.RpcError):
        _check(server.port, grpc.ssl_channel_credentials(new_ca.pem))
    rotated = new_ca.issue("localhost", server=True)
    # As a mounted Secret is updated: new files renamed into place (never half-written).
    for path, content in ((cert, rotated.cert_pem), (key, rotated.key_pem)):
        staged = path.with_suffix(".new")
        staged.write_bytes(content)
        os.replace(staged, path)
    assert (
        _check(server.port, grpc.ssl_channel_credentials(new_ca.pem))
        == health_pb2.HealthCheckResponse.SERVING
    )


def test_tls_settings_are_checked_at_start(tmp_path: Path) -> None:
    """A certificate without its key, a client CA without a certificate, or an unreadable file stop
    the start with messages naming the variables."""
    cert = tmp_path / "server.crt"
    cert.write_text("x")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(
            {
                **BASE_ENV,
                "GRPC_TLS_CERT_FILE": str(cert),
                "GRPC_TLS_CLIENT_CA_FILE": str(tmp_path / "missing.pem"),
                "SHARD_SSLMODE_MIN": "sometimes",
            }
        )
    message = str(caught.value)
    assert "GRPC_TLS_KEY_FILE" in message
    assert "GRPC_TLS_CLIENT_CA_FILE names a file that cannot be read" in message
    assert "SHARD_SSLMODE_MIN must be one of" in message


def test_a_citrus_string_below_the_sslmode_floor_is_refused() -> None:
    """Under SHARD_SSLMODE_MIN=require, a connection string with sslmode=disable (or allow/prefer)
    is refused with SHARD_TLS_REFUSED; one without sslmode gets the floor; a stronger one is kept."""
    policy = ShardTlsPolicy(minimum="require", root_cert="/etc/ssl/shards.pem")
    for weak in ("disable", "allow", "prefer"):
        with pytest.raises(ShardUnavailable) as caught:
            policy.connect_kwargs("shard-01", f"postgresql://u:pw@db:5432/s1?sslmode={weak}")
        assert caught.value.reason == "SHARD_TLS_REFUSED"
        assert "pw" not in caught.value.message
    assert policy.connect_kwargs("shard-01", "postgresql://u:pw@db:5432/s1") == {
        "sslmode": "require",
        "sslrootcert": "/etc/ssl/shards.pem",
    }
    assert policy.connect_kwargs("shard-01", "host=db dbname=s1 sslmode=verify-full") == {
        "sslrootcert": "/etc/ssl/shards.pem"
    }
    assert ShardTlsPolicy().connect_kwargs("shard-01", "postgresql://u:pw@db/s1?sslmode=disable") == {}


def test_citrus_strings_below_the_floor_are_refused_and_others_get_it(citrus: CitrusEmulator) -> None:
    """Under a require floor the Citrus client refuses a route whose string says sslmode=disable
    (UNAVAILABLE, SHARD_TLS_REFUSED, no password in the message), lists that shard with no
    connection string (so ShardAdmin's short-lived reads cannot connect in plaintext either), and
    puts the floor into strings that name no sslmode."""
    client = CitrusClient(
        base_url=citrus.url,
        api_key=CITRUS_API_KEY,
        timeout_ms=2000,
        retry_attempts=1,
        metrics=Metrics(),
        sleep=lambda _seconds: None,
        tls=ShardTlsPolicy(minimum="require"),
    )
    first = client.register("bizT", "loc-1", "dental")
    assert "sslmode=require" in first.connection_string
    plain = citrus.shard(first.shard_id).connection_string
    citrus.move_shard(first.shard_id, f"{plain}?sslmode=disable")
    with pytest.raises(ShardUnavailable) as caught:
        client.get_shard("bizT", "loc-1")
    assert caught.value.reason == "SHARD_TLS_REFUSED"
    assert citrus.shard_password not in caught.value.message
    listed = {s.shard_id: s for s in client.shards_health()}
    assert listed[first.shard_id].connection_string == ""
