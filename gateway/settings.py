"""The gateway's settings: every option declared once, as a field of the slice that uses it.

Each field below is also its option (`shared.config.setting`): the field's name is the
flag (`--ping-interval-s`) and the variable (`SAILCAST_PING_INTERVAL_S`), the field's
default is the option's default, and its help and unit are what `--help` prints. The
slices are frozen dataclasses, one per consumer, each validating itself where it is
declared; `GatewaySettings` composes them (and NATS, `shared.config.NatsSettings`) into
the one settings object per process, built from flags, then `SAILCAST_*` env, then
defaults (`from_argv`).

    listen    ports and admission                gateway/app.py
    engine    Engine.IO / Socket.IO and buffers  the engine layer
    core      rooms, interest, peers, readiness  gateway/node.py
    drain     SIGTERM                            gateway/app.py
    vrequests sails.io.js virtual requests       gateway/vrequests.py
    inbound   packet rates per socket and IP     the engine layer (gateway/limits.py)
    connect   origins, before-connect, JWT       gateway/auth.py
    pages     the demo page                      gateway/pages.py
    api       the HTTP server API                gateway/api.py
    history   per-room history and recovery      gateway/history/, gateway/recovery/
    logs      level and format                   gateway/logs.py
"""

from __future__ import annotations

import argparse
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gateway.trust_proxy import ProxyTrust
from shared.config import (
    NatsSettings,
    Option,
    add_options,
    build,
    options_of,
    redact,
    redacted,
    resolve,
    setting,
    value_at,
)
from shared.envelope import DEFAULT_MAX_PAYLOAD_BYTES
from shared.errors import ConfigError
from shared.history import HistoryRules
from shared.subjects import Subjects, check_gateway_id


@dataclass(frozen=True, slots=True)
class ListenSettings:
    """Where the gateway listens, and how many sockets it admits."""

    host: str = setting("127.0.0.1", "Socket.IO listen address (containers: 0.0.0.0)")
    port: int = setting(1337, "Socket.IO listen port (0 = any free port)")
    metrics_host: str = setting("", "ops listener address (default: --host)")
    metrics_port: int = setting(9464, "ops port for /metrics, /healthz, /readyz (0 = any)")
    max_connections: int = setting(
        0, "sockets this gateway accepts at once (0 = no limit)", unit="sockets"
    )
    max_pending_connections: int = setting(
        64,
        "Engine.IO sessions still in their handshake (no Socket.IO CONNECT yet) accepted "
        "beyond --max-connections; more are answered 503 (only with --max-connections)",
        unit="sessions",
    )
    max_connections_per_ip: int = setting(
        0,
        "Engine.IO sessions (connected or in their handshake) one client IP may hold, the IP "
        "as --trust-proxy resolves it; more are answered 429 (0 = no limit)",
        unit="sessions",
    )
    handshake_timeout_s: float = setting(
        10.0,
        "close a TCP connection that sends no complete HTTP request, and a session that "
        "sends no Socket.IO CONNECT, within this time",
        unit="s",
    )
    max_header_bytes: int = setting(
        16384,
        "request line and headers of one HTTP request to the Socket.IO port (Node's "
        "default); more are answered 431",
        unit="bytes",
    )
    fd_reserve: int = setting(
        64,
        "file descriptors kept free for the ops port, NATS and files: client connections "
        "that would eat into them are closed at once",
        unit="fds",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535 or not 0 <= self.metrics_port <= 65535:
            raise ConfigError(
                "ports must be between 0 and 65535 (SAILCAST_PORT, SAILCAST_METRICS_PORT)"
            )
        if self.handshake_timeout_s <= 0:
            raise ConfigError("SAILCAST_HANDSHAKE_TIMEOUT_S must be positive")
        if self.max_header_bytes < 1024:
            raise ConfigError("SAILCAST_MAX_HEADER_BYTES must be at least 1024")
        if self.max_pending_connections < 0 or self.max_connections_per_ip < 0:
            raise ConfigError(
                "SAILCAST_MAX_PENDING_CONNECTIONS and SAILCAST_MAX_CONNECTIONS_PER_IP "
                "must not be negative"
            )
        if self.fd_reserve < 0:
            raise ConfigError("SAILCAST_FD_RESERVE must not be negative")


TRANSPORTS: Final = ("polling", "websocket")
"""Every Engine.IO transport the engine speaks; all accepted by default (docs/sails-compat.md)."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Engine.IO / Socket.IO: heartbeat, message size, CORS, per-socket outbound bounds."""

    max_payload_bytes: int = setting(
        DEFAULT_MAX_PAYLOAD_BYTES, "largest message in or out", unit="bytes"
    )
    allowed_origins: tuple[str, ...] = setting(
        (), "comma-separated allowed Origins; * = any; empty = same host"
    )
    ping_interval_s: float = setting(25.0, "Engine.IO ping interval", unit="s")
    ping_timeout_s: float = setting(60.0, "Engine.IO ping timeout (Sails' default)", unit="s")
    transports: tuple[str, ...] = setting(
        TRANSPORTS,
        "comma-separated Engine.IO transports accepted (Sails: websocket only); "
        "others are refused as engine.io does, 400 Transport unknown",
    )
    max_queued_messages: int = setting(
        1000, "outbound packets buffered per socket before it is cut off", unit="packets"
    )
    max_buffered_bytes: int = setting(
        4 * 1024 * 1024, "outbound bytes buffered per socket before it is cut off", unit="bytes"
    )
    max_attachments: int = setting(
        10, "binary attachments one inbound Socket.IO packet may announce", unit="attachments"
    )
    max_attachment_bytes: int = setting(
        DEFAULT_MAX_PAYLOAD_BYTES,
        "inbound binary attachment bytes one socket may have buffered, waiting for their "
        "packet to complete; more and the socket is cut",
        unit="bytes",
    )

    def __post_init__(self) -> None:
        if self.max_payload_bytes < 1024:
            raise ConfigError("SAILCAST_MAX_PAYLOAD_BYTES must be at least 1024")
        if self.max_queued_messages < 1:
            raise ConfigError("SAILCAST_MAX_QUEUED_MESSAGES must be at least 1")
        if self.max_attachments < 0 or self.max_attachment_bytes < 0:
            raise ConfigError(
                "SAILCAST_MAX_ATTACHMENTS and SAILCAST_MAX_ATTACHMENT_BYTES must not be negative"
            )
        object.__setattr__(self, "transports", tuple(t.lower() for t in self.transports))
        if not self.transports or not set(self.transports) <= set(TRANSPORTS):
            raise ConfigError(
                f"SAILCAST_TRANSPORTS={','.join(self.transports)!r} must name one or both of "
                + ", ".join(TRANSPORTS)
            )


@dataclass(frozen=True, slots=True)
class CoreSettings:
    """The gateway core: room interest, room limits, peer heartbeats, readiness."""

    unsubscribe_linger_s: float = setting(
        1.0, "keep a room's NATS interest this long after its last member", unit="s"
    )
    max_rooms_per_socket: int = setting(
        1000, "rooms one socket may be in, its own-id room included", unit="rooms"
    )
    heartbeat_interval_s: float = setting(
        2.0, "gateway heartbeat period (peer discovery)", unit="s"
    )
    ready_check_interval_s: float = setting(
        2.0, "period of the NATS round trip behind /readyz", unit="s"
    )


@dataclass(frozen=True, slots=True)
class DrainSettings:
    """SIGTERM: how long to stay up not-ready, then how long to disconnect everyone."""

    drain_delay_s: float = setting(
        5.0, "on SIGTERM, seconds not-ready before disconnecting clients", unit="s"
    )
    drain_timeout_s: float = setting(
        25.0, "on SIGTERM, deadline for disconnecting every client", unit="s"
    )


@dataclass(frozen=True, slots=True)
class VirtualRequestSettings:
    """sails.io.js virtual requests (`io.socket.get`): deadline and per-socket limits."""

    virtual_request_timeout_s: float = setting(
        10.0, "answer a virtual request 504 when no worker answered it within this time", unit="s"
    )
    virtual_request_rate_per_s: float = setting(
        100.0,
        "virtual requests one socket may send per second, sustained (0 = no limit); more → 429",
        unit="requests/s",
    )
    virtual_request_burst: int = setting(
        200, "virtual requests one socket may send in a burst", unit="requests"
    )
    virtual_request_max_inflight: int = setting(
        100,
        "virtual requests of one socket in flight at once; more are answered 429",
        unit="requests",
    )
    virtual_request_ip_rate_per_s: float = setting(
        0.0,
        "virtual requests all sockets of one client IP may send per second, sustained "
        "(0 = no limit; the IP as --trust-proxy decides it: behind a proxy, set that "
        "first); more → 429",
        unit="requests/s",
    )
    virtual_request_ip_burst: int = setting(
        400, "virtual requests all sockets of one client IP may send in a burst", unit="requests"
    )

    def __post_init__(self) -> None:
        if self.virtual_request_max_inflight < 1:
            raise ConfigError("SAILCAST_VIRTUAL_REQUEST_MAX_INFLIGHT must be at least 1")


@dataclass(frozen=True, slots=True)
class InboundSettings:
    """Inbound packet rates (every Engine.IO packet a client sends: events, virtual
    requests, pings): per socket and per client IP, enforced by not reading."""

    inbound_rate_per_s: float = setting(
        200.0,
        "packets one socket may send per second, sustained (0 = no limit); more are not "
        "read until the rate allows",
        unit="packets/s",
    )
    inbound_burst: int = setting(100, "packets one socket may send in a burst", unit="packets")
    inbound_ip_rate_per_s: float = setting(
        0.0,
        "packets all sockets of one client IP may send per second, sustained (0 = no "
        "limit; the IP as --trust-proxy decides it: behind a proxy, set that first)",
        unit="packets/s",
    )
    inbound_ip_burst: int = setting(
        500, "packets all sockets of one client IP may send in a burst", unit="packets"
    )
    inbound_flood_cut_s: float = setting(
        10.0,
        "disconnect a socket that has kept sending over its packet rate this long",
        unit="s",
    )

    def __post_init__(self) -> None:
        if self.inbound_burst < 1 or self.inbound_ip_burst < 1:
            raise ConfigError("SAILCAST_INBOUND_BURST and SAILCAST_INBOUND_IP_BURST must be >= 1")
        if self.inbound_flood_cut_s <= 0:
            raise ConfigError("SAILCAST_INBOUND_FLOOD_CUT_S must be positive")


BEFORE_CONNECT_MODES: Final = ("none", "jwt", "workers")
_ORIGIN: Final = re.compile(r"(https?://[^/\s?#]+|file://)")
_DEFAULT_PORTS: Final = {"http": ":80", "https": ":443"}


@dataclass(frozen=True, slots=True)
class ConnectSettings:
    """Who may connect (gateway/auth.py): Sails' onlyAllowOrigins, beforeConnect, JWT."""

    only_allow_origins: tuple[str, ...] = setting(
        (), "comma-separated exact Origins allowed to connect, as Sails' onlyAllowOrigins"
    )
    trust_proxy: str = setting(
        "",
        "as Express' `trust proxy`: true, a hop count, or addresses/CIDRs/loopback/"
        "linklocal/uniquelocal; req.ip and req.ips then come from X-Forwarded-For",
    )
    before_connect: str = setting(
        "none",
        "check every socket before accepting it: a JWT, or ask the workers over NATS",
        choices=BEFORE_CONNECT_MODES,
    )
    before_connect_timeout_s: float = setting(
        5.0, "how long the workers may take to decide", unit="s"
    )
    jwt_secret: str = setting("", "HS256 key for --before-connect jwt", secret=True)
    jwt_public_key_file: str = setting("", "PEM file of the RS256 key for --before-connect jwt")
    jwt_audience: str = setting("", "required JWT `aud` (empty: not checked)")
    jwt_issuer: str = setting("", "required JWT `iss` (empty: not checked)")
    jwt_leeway_s: float = setting(5.0, "clock skew tolerated on JWT exp/nbf", unit="s")
    # who a socket is and its rooms at connect (gateway/connect_identity.py, issue 12)
    jwt_user_claim: str = setting(
        "sub", "JWT claim holding the socket's user id (empty: no user id from the JWT)"
    )
    jwt_info_claim: str = setting(
        "", "JWT claim holding the socket's presence info, a JSON object (empty: none)"
    )
    jwt_rooms_claim: str = setting(
        "",
        "JWT claim listing rooms the socket joins before its connect is acknowledged (empty: off)",
    )
    presence_info_max_bytes: int = setting(
        1024, "largest presence info a socket may carry, JSON-encoded", unit="bytes"
    )

    def __post_init__(self) -> None:
        if self.presence_info_max_bytes < 2:
            raise ConfigError("SAILCAST_PRESENCE_INFO_MAX_BYTES must be at least 2 ({})")
        check_origins(self.only_allow_origins)
        if self.before_connect not in BEFORE_CONNECT_MODES:
            raise ConfigError(
                f"SAILCAST_BEFORE_CONNECT={self.before_connect!r} must be one of "
                + ", ".join(BEFORE_CONNECT_MODES)
            )
        if self.before_connect == "jwt" and not (self.jwt_secret or self.jwt_public_key_file):
            raise ConfigError(
                "SAILCAST_BEFORE_CONNECT=jwt needs SAILCAST_JWT_SECRET (HS256) "
                "or SAILCAST_JWT_PUBLIC_KEY_FILE (RS256)"
            )
        if self.jwt_public_key_file and not Path(self.jwt_public_key_file).is_file():
            raise ConfigError(
                f"SAILCAST_JWT_PUBLIC_KEY_FILE={self.jwt_public_key_file!r} is not a readable file"
            )
        ProxyTrust.parse(self.trust_proxy)  # validates


def check_origins(origins: Iterable[str]) -> tuple[str, ...]:
    """Sails' rules for `onlyAllowOrigins`: `http(s)://host[:port]` or `file://`, with no
    path, no trailing slash and no explicit default port."""
    out = []
    for origin in origins:
        problem = ""
        if not _ORIGIN.fullmatch(origin):
            problem = "must be http(s)://host[:port] or file://, with no path or trailing slash"
        else:
            scheme, _, rest = origin.partition("://")
            if rest.endswith(_DEFAULT_PORTS.get(scheme, "\0")):
                problem = f"must not name the default port of {scheme}"
        if problem:
            raise ConfigError(f"SAILCAST_ONLY_ALLOW_ORIGINS: {origin!r} {problem}")
        out.append(origin)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class PagesSettings:
    """What the Socket.IO port serves beside /socket.io/ (gateway/pages.py)."""

    static_dir: str = setting("", "serve this directory's index.html at / (the live demo)")
    sails_io_js: str = setting("", "serve this sails.io.js bundle at /js/dependencies/sails.io.js")


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The HTTP server API (gateway/api.py): its own port, off until a key is set."""

    api_host: str = setting("", "HTTP API listen address (default: --host)")
    api_port: int = setting(9465, "HTTP API port, served only with --api-key (0 = any)")
    api_key: tuple[str, ...] = setting(
        (),
        "comma-separated keys accepted as `Authorization: apikey <key>` (several: for "
        "rotation); empty = the HTTP API is off",
        secret=True,
    )
    api_idempotency_window_s: float = setting(
        300.0,
        "a request repeated with the same Idempotency-Key within this time is answered "
        "the first answer, not applied again",
        unit="s",
    )
    api_idempotency_max_keys: int = setting(
        10000, "Idempotency-Key answers remembered at most (oldest forgotten)", unit="keys"
    )

    def __post_init__(self) -> None:
        if not 0 <= self.api_port <= 65535:
            raise ConfigError("SAILCAST_API_PORT must be between 0 and 65535")
        if any(not key.strip() for key in self.api_key):
            raise ConfigError("SAILCAST_API_KEY must not contain an empty key")
        if self.api_idempotency_window_s < 0 or self.api_idempotency_max_keys < 0:
            raise ConfigError(
                "SAILCAST_API_IDEMPOTENCY_WINDOW_S and SAILCAST_API_IDEMPOTENCY_MAX_KEYS "
                "must not be negative"
            )

    @property
    def enabled(self) -> bool:
        return bool(self.api_key)


LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS: Final = ("text", "json")


HISTORY_STORAGE: Final = ("file", "memory")


@dataclass(frozen=True, slots=True)
class HistorySettings:
    """Per-room history on JetStream and connection-state recovery (docs/recovery.md)."""

    history: str = setting(
        "",
        "rooms that keep history, PATTERN=MAXMSGS/MAXAGE,... (glob over room names, first "
        "match wins), e.g. 'chat:*=300/2m,sails_model_*=100/10m'; empty = no history",
    )
    recovery_window_s: float = setting(
        120.0, "how long a disconnected socket's session can be recovered", unit="s"
    )
    history_replicas: int = setting(
        1, "replicas of the history stream and the sessions bucket (3 in a NATS cluster)"
    )
    history_storage: str = setting(
        "file", "where JetStream keeps history and sessions", choices=HISTORY_STORAGE
    )
    history_duplicate_window_s: float = setting(
        120.0, "how long a publish's msg_id is remembered to drop a retried copy", unit="s"
    )
    recovery_skip_connect_hook: bool = setting(
        False, "on a recovered connect, skip the before-connect worker hook"
    )

    def __post_init__(self) -> None:
        rules = HistoryRules.parse(self.history)  # raises ConfigError with the rule's text
        if rules and self.recovery_window_s <= 0:
            raise ConfigError("SAILCAST_RECOVERY_WINDOW_S must be positive")
        if not 1 <= self.history_replicas <= 5:
            raise ConfigError("SAILCAST_HISTORY_REPLICAS must be 1 to 5 (JetStream's range)")

    @property
    def rules(self) -> HistoryRules:
        return HistoryRules.parse(self.history)

    @property
    def enabled(self) -> bool:
        return bool(self.rules)


@dataclass(frozen=True, slots=True)
class LogSettings:
    """How the process logs (gateway/logs.py)."""

    log_level: str = setting("INFO", "log level", choices=LOG_LEVELS)
    log_format: str = setting("text", "log format", choices=LOG_FORMATS)

    def __post_init__(self) -> None:
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"SAILCAST_LOG_LEVEL={self.log_level!r} must be one of {', '.join(LOG_LEVELS)}"
            )
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(
                f"SAILCAST_LOG_FORMAT={self.log_format!r} must be one of {', '.join(LOG_FORMATS)}"
            )


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """The one frozen settings object of a gateway process: its identity, NATS, and the
    slice each consumer takes."""

    prefix: str = setting("sailcast", "NATS subject prefix")
    gateway_id: str = setting("", "unique id of this gateway (default gw-<random>)")
    nats: NatsSettings = field(default_factory=NatsSettings)
    listen: ListenSettings = field(default_factory=ListenSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    core: CoreSettings = field(default_factory=CoreSettings)
    drain: DrainSettings = field(default_factory=DrainSettings)
    vrequests: VirtualRequestSettings = field(default_factory=VirtualRequestSettings)
    inbound: InboundSettings = field(default_factory=InboundSettings)
    connect: ConnectSettings = field(default_factory=ConnectSettings)
    pages: PagesSettings = field(default_factory=PagesSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    history: HistorySettings = field(default_factory=HistorySettings)
    logs: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self) -> None:
        if not self.gateway_id:
            object.__setattr__(self, "gateway_id", "gw-" + secrets.token_hex(4))
        check_gateway_id(self.gateway_id)
        Subjects(self.prefix)  # validates
        # the one check that spans two slices: which origin list the engine enforces
        if self.connect.only_allow_origins and self.engine.allowed_origins:
            raise ConfigError(
                "set SAILCAST_ONLY_ALLOW_ORIGINS or SAILCAST_ALLOWED_ORIGINS, not both"
            )
        ports = {self.listen.port, self.listen.metrics_port} - {0}
        if self.api.enabled and self.api.api_port in ports:
            raise ConfigError(
                f"SAILCAST_API_PORT={self.api.api_port} is already SAILCAST_PORT or "
                "SAILCAST_METRICS_PORT: the HTTP API needs a port of its own"
            )

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.prefix)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> GatewaySettings:
        """From resolved option values keyed by option name (`resolve(OPTIONS, ...)`)."""
        return build(cls, values)

    def describe(self) -> dict[str, Any]:
        """Effective settings with secrets redacted (for --print-config and the start log):
        one key per option, NATS as its own object keyed by NatsSettings field."""
        out = redacted(self, [o for o in OPTIONS if o.path[0] != "nats"])
        out["nats"] = {o.path[-1]: redact(o, value_at(self, o)) for o in _NATS}
        return out


OPTIONS: Final[tuple[Option, ...]] = options_of(GatewaySettings)
_NATS: Final = tuple(o for o in OPTIONS if o.path[0] == "nats")


def option(name: str) -> Option:
    """The declared option `name` (its flag, variable, default), for code that launches
    or configures a gateway without building its settings (gateway/dev.py)."""
    for opt in OPTIONS:
        if opt.name == name:
            return opt
    raise KeyError(name)


def parser(prog: str = "sailcast gateway") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Sailcast gateway: a stateless Socket.IO server fanning rooms out over NATS.",
    )
    # one group per slice, in declaration order; prefix and gateway id first
    groups: dict[str, list[Option]] = {}
    for opt in OPTIONS:
        groups.setdefault(opt.path[0] if len(opt.path) > 1 else "identity", []).append(opt)
    for title, options in groups.items():
        add_options(p.add_argument_group(title), options)
    p.add_argument(
        "--print-config", action="store_true", help="print the effective config and exit"
    )
    return p


def from_argv(
    argv: Sequence[str] | None, env: Mapping[str, str] | None = None
) -> tuple[GatewaySettings, argparse.Namespace]:
    args = parser().parse_args(argv)
    return GatewaySettings.from_values(resolve(OPTIONS, args, env)), args
