"""NATS credentials and TLS, against a real nats-server configured for each: the
gateway becomes ready and delivers, and the publisher connects with the same settings
(redaction of secrets is tests/unit/test_config.py)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.signing
import nkeys
import pytest

from gateway.embedded_nats import EmbeddedNats
from publisher import Publisher
from shared.config import NatsSettings
from tests.helpers import GatewayProcess, quiet

pytestmark = pytest.mark.integration


async def wait_ready(gw: GatewayProcess, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while gw.http_status("/readyz") != 200:
        assert time.monotonic() < deadline, "gateway never became ready"
        await asyncio.sleep(0.1)


async def deliver_through(
    gw: GatewayProcess, settings: NatsSettings, prefix: str, client_factory: Any
) -> None:
    await wait_ready(gw)
    client = await client_factory(gw)
    async with await Publisher.connect(prefix=prefix, nats_settings=settings) as pub:
        await pub.sockets.join(client.sid, "secure")
        await pub.sockets.broadcast("secure", "hello", {"ok": True})
        await quiet([client], pub)
    assert client.events == [("hello", {"ok": True})]


async def test_nkey_authentication(
    tmp_path: Path,
    gateway_factory: Callable[..., GatewayProcess],
    prefix: str,
    client_factory: Any,
) -> None:
    raw = bytes(nacl.signing.SigningKey.generate())
    seed = nkeys.encode_seed(raw, nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed)
    conf = tmp_path / "nats.conf"
    conf.write_text(f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n')
    with EmbeddedNats(jetstream=False, extra_args=("-c", str(conf))) as nats:
        gw = gateway_factory("nk", nats_url=nats.url, nats_nkey_seed=str(seed_file))
        settings = NatsSettings(servers=(nats.url,), nkey_seed=str(seed_file))
        await deliver_through(gw, settings, prefix, client_factory)
        # without the key the server refuses, and says so
        from publisher import TransportError

        with pytest.raises(TransportError, match=r"cannot connect.*[Aa]uthoriz"):
            await Publisher.connect(nats.url, prefix=prefix, connect_timeout_s=2)


def make_tls_files(d: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1, made with openssl."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.pem")  # fmt: skip
    return d / "ca.pem", d / "server.pem", d / "server.key"


async def test_tls_with_a_private_ca_and_a_token(
    tmp_path: Path,
    gateway_factory: Callable[..., GatewayProcess],
    prefix: str,
    client_factory: Any,
) -> None:
    ca, cert, key = make_tls_files(tmp_path)
    args = ("--tls", "--tlscert", str(cert), "--tlskey", str(key), "--auth", "s3cr3t-tok")
    with EmbeddedNats(jetstream=False, extra_args=args) as nats:
        url = f"tls://127.0.0.1:{nats.port}"
        gw = gateway_factory("tls", nats_url=url, nats_tls_ca=str(ca), nats_token="s3cr3t-tok")
        settings = NatsSettings(servers=(url,), tls_ca=str(ca), token="s3cr3t-tok")
        await deliver_through(gw, settings, prefix, client_factory)
