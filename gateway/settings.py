"""The gateway's settings: one frozen dataclass built from flags, SAILCAST_* env, defaults."""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.auth import BEFORE_CONNECT_MODES, check_before_connect, check_origins
from gateway.trust_proxy import ProxyTrust
from shared.config import NATS_OPTIONS, NatsSettings, Option, add_options, redacted, resolve
from shared.envelope import DEFAULT_MAX_PAYLOAD_BYTES
from shared.errors import ConfigError
from shared.subjects import Subjects, check_gateway_id

OPTIONS: Final[tuple[Option, ...]] = (
    Option("host", str, "127.0.0.1", "Socket.IO listen address (containers: 0.0.0.0)"),
    Option("port", int, 1337, "Socket.IO listen port (0 = any free port)"),
    Option("metrics_host", str, "", "ops listener address (default: --host)"),
    Option("metrics_port", int, 9464, "ops port for /metrics, /healthz, /readyz (0 = any)"),
    *NATS_OPTIONS,
    Option("prefix", str, "sailcast", "NATS subject prefix"),
    Option("gateway_id", str, "", "unique id of this gateway (default gw-<random>)"),
    Option("log_level", str, "INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    Option("log_format", str, "text", "log format", choices=("text", "json")),
    Option("max_payload_bytes", int, DEFAULT_MAX_PAYLOAD_BYTES, "largest message in or out"),
    Option(
        "allowed_origins", str, "", "comma-separated allowed Origins; * = any; empty = same host"
    ),
    Option("ping_interval_s", float, 25.0, "Engine.IO ping interval"),
    Option("ping_timeout_s", float, 20.0, "Engine.IO ping timeout"),
    Option(
        "unsubscribe_linger_s",
        float,
        1.0,
        "keep a room's NATS interest this long after its last member",
    ),
    Option("max_connections", int, 0, "sockets this gateway accepts at once (0 = no limit)"),
    Option(
        "max_rooms_per_socket", int, 1000, "rooms one socket may be in, its own-id room included"
    ),
    Option(
        "max_buffered_bytes",
        int,
        4 * 1024 * 1024,
        "outbound bytes buffered per socket before it is cut off",
    ),
    Option(
        "max_queued_messages",
        int,
        1000,
        "outbound packets buffered per socket before it is cut off",
    ),
    Option("heartbeat_interval_s", float, 2.0, "gateway heartbeat period (peer discovery)"),
    Option("ready_check_interval_s", float, 2.0, "period of the NATS round trip behind /readyz"),
    Option(
        "drain_delay_s", float, 5.0, "on SIGTERM, seconds not-ready before disconnecting clients"
    ),
    Option("drain_timeout_s", float, 25.0, "on SIGTERM, deadline for disconnecting every client"),
    # sails.io.js clients: virtual requests and connection hooks (gateway/vrequests.py, auth.py)
    Option(
        "virtual_request_timeout_s",
        float,
        10.0,
        "answer a virtual request 504 when no worker answered it within this time",
    ),
    Option(
        "virtual_request_rate_per_s",
        float,
        100.0,
        "virtual requests one socket may send per second, sustained (0 = no limit); more → 429",
    ),
    Option("virtual_request_burst", int, 200, "virtual requests one socket may send in a burst"),
    Option(
        "virtual_request_max_inflight",
        int,
        100,
        "virtual requests of one socket in flight at once; more are answered 429",
    ),
    Option(
        "only_allow_origins",
        str,
        "",
        "comma-separated exact Origins allowed to connect, as Sails' onlyAllowOrigins",
    ),
    Option(
        "trust_proxy",
        str,
        "",
        "as Express' `trust proxy`: true, a hop count, or addresses/CIDRs/loopback/"
        "linklocal/uniquelocal; req.ip and req.ips then come from X-Forwarded-For",
    ),
    Option(
        "before_connect",
        str,
        "none",
        "check every socket before accepting it: a JWT, or ask the workers over NATS",
        choices=BEFORE_CONNECT_MODES,
    ),
    Option("before_connect_timeout_s", float, 5.0, "how long the workers may take to decide"),
    Option("jwt_secret", str, "", "HS256 key for --before-connect jwt", secret=True),
    Option("jwt_public_key_file", str, "", "PEM file of the RS256 key for --before-connect jwt"),
    Option("jwt_audience", str, "", "required JWT `aud` (empty: not checked)"),
    Option("jwt_issuer", str, "", "required JWT `iss` (empty: not checked)"),
    Option("jwt_leeway_s", float, 5.0, "clock skew tolerated on JWT exp/nbf"),
    Option("static_dir", str, "", "serve this directory's index.html at / (the live demo)"),
    Option("sails_io_js", str, "", "serve this sails.io.js bundle at /js/dependencies/sails.io.js"),
)


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 1337
    metrics_host: str = ""
    metrics_port: int = 9464
    nats: NatsSettings = field(default_factory=NatsSettings)
    prefix: str = "sailcast"
    gateway_id: str = ""
    log_level: str = "INFO"
    log_format: str = "text"
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    allowed_origins: tuple[str, ...] = ()
    ping_interval_s: float = 25.0
    ping_timeout_s: float = 20.0
    unsubscribe_linger_s: float = 1.0
    max_connections: int = 0
    max_rooms_per_socket: int = 1000
    max_queued_messages: int = 1000
    max_buffered_bytes: int = 4 * 1024 * 1024
    heartbeat_interval_s: float = 2.0
    ready_check_interval_s: float = 2.0
    drain_delay_s: float = 5.0
    drain_timeout_s: float = 25.0
    virtual_request_timeout_s: float = 10.0
    virtual_request_rate_per_s: float = 100.0
    virtual_request_burst: int = 200
    virtual_request_max_inflight: int = 100
    only_allow_origins: tuple[str, ...] = ()
    trust_proxy: str = ""
    before_connect: str = "none"
    before_connect_timeout_s: float = 5.0
    jwt_secret: str = ""
    jwt_public_key_file: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""
    jwt_leeway_s: float = 5.0
    static_dir: str = ""
    sails_io_js: str = ""

    def __post_init__(self) -> None:
        if not self.gateway_id:
            object.__setattr__(self, "gateway_id", "gw-" + secrets.token_hex(4))
        check_gateway_id(self.gateway_id)
        Subjects(self.prefix)  # validates
        if not 0 <= self.port <= 65535 or not 0 <= self.metrics_port <= 65535:
            raise ConfigError(
                "ports must be between 0 and 65535 (SAILCAST_PORT, SAILCAST_METRICS_PORT)"
            )
        if self.max_payload_bytes < 1024:
            raise ConfigError("SAILCAST_MAX_PAYLOAD_BYTES must be at least 1024")
        if self.max_queued_messages < 1:
            raise ConfigError("SAILCAST_MAX_QUEUED_MESSAGES must be at least 1")
        check_origins(self.only_allow_origins)
        if self.only_allow_origins and self.allowed_origins:
            raise ConfigError(
                "set SAILCAST_ONLY_ALLOW_ORIGINS or SAILCAST_ALLOWED_ORIGINS, not both"
            )
        check_before_connect(self)
        ProxyTrust.parse(self.trust_proxy)  # validates
        if self.virtual_request_max_inflight < 1:
            raise ConfigError("SAILCAST_VIRTUAL_REQUEST_MAX_INFLIGHT must be at least 1")

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.prefix)

    @classmethod
    def from_values(cls, v: Mapping[str, Any]) -> GatewaySettings:
        nats_names = {o.name for o in NATS_OPTIONS}
        plain = {k: val for k, val in v.items() if k not in nats_names}
        origins = tuple(o.strip() for o in plain.pop("allowed_origins").split(",") if o.strip())
        only = tuple(o.strip() for o in plain.pop("only_allow_origins", "").split(",") if o.strip())
        return cls(
            nats=NatsSettings.from_values(v),
            allowed_origins=origins,
            only_allow_origins=only,
            **plain,
        )

    def describe(self) -> dict[str, Any]:
        """Effective settings with secrets redacted (for --print-config and the start log)."""
        out = redacted(self, OPTIONS)
        out["nats"] = redacted(self.nats, ())
        for secret_field in ("password", "token", "tls_key"):
            if out["nats"][secret_field]:
                out["nats"][secret_field] = "***"
        return out


def parser(prog: str = "sailcast gateway") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Sailcast gateway: a stateless Socket.IO server fanning rooms out over NATS.",
    )
    add_options(p, OPTIONS)
    p.add_argument(
        "--print-config", action="store_true", help="print the effective config and exit"
    )
    return p


def from_argv(
    argv: Sequence[str] | None, env: Mapping[str, str] | None = None
) -> tuple[GatewaySettings, argparse.Namespace]:
    args = parser().parse_args(argv)
    return GatewaySettings.from_values(resolve(OPTIONS, args, env)), args
