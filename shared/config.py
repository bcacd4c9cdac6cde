"""Configuration: declared options resolved from flags, then SAILCAST_* env, then defaults.

Each process declares its options once (`Option`); this module turns them into an
argparse parser, resolves values with errors that name the variable, and prints the
effective config with secrets redacted. NATS connection settings are shared by the
publisher and the gateway, so they live here too.
"""

from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

from shared.errors import ConfigError

ENV_PREFIX: Final = "SAILCAST_"
REDACTED: Final = "***"


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: `--name` flag, `SAILCAST_NAME` variable, typed default."""

    name: str
    type: type
    default: Any
    help: str
    secret: bool = False
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    for opt in options:
        default_txt = REDACTED if opt.secret and opt.default else opt.default
        parser.add_argument(
            opt.flag,
            dest=opt.name,
            default=None,
            metavar=opt.name.upper(),
            help=f"{opt.help} [env {opt.env}; default {default_txt!r}]",
        )


def resolve(
    options: Sequence[Option], args: argparse.Namespace, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Flag beats env beats default; every conversion error names its source."""
    environ = os.environ if env is None else env
    out: dict[str, Any] = {}
    for opt in options:
        raw: Any = getattr(args, opt.name, None)
        source = opt.flag
        if raw is None and opt.env in environ:
            raw, source = environ[opt.env], opt.env
        if raw is None:
            out[opt.name] = opt.default
            continue
        out[opt.name] = _convert(opt, raw, source)
    return out


def _convert(opt: Option, raw: str, source: str) -> Any:
    try:
        if opt.type is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        value = opt.type(raw)
    except ValueError:
        raise ConfigError(
            f"{source}={raw!r} is not a valid {opt.type.__name__} ({opt.help})"
        ) from None
    if opt.choices and value not in opt.choices:
        raise ConfigError(f"{source}={raw!r} must be one of {', '.join(opt.choices)}")
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"{source}={raw!r} must not be negative")
    return value


def redacted(settings: Any, options: Sequence[Option]) -> dict[str, Any]:
    """The effective settings as a dict, secrets replaced, for `--print-config` and logs."""
    secret = {o.name for o in options if o.secret}
    out: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name in secret and value:
            value = REDACTED
        elif isinstance(value, str) and "://" in value:
            value = ",".join(_strip_userinfo(s) for s in value.split(","))
        elif isinstance(value, tuple):
            value = [_strip_userinfo(v) if isinstance(v, str) else v for v in value]
        out[f.name] = value
    return out


NATS_OPTIONS: Final[tuple[Option, ...]] = (
    Option("nats_url", str, "nats://127.0.0.1:4222", "NATS servers, comma-separated"),
    Option("nats_user", str, "", "NATS user name"),
    Option("nats_password", str, "", "NATS password", secret=True),
    Option("nats_token", str, "", "NATS auth token", secret=True),
    Option("nats_creds", str, "", "path to a NATS .creds file (JWT + NKey)"),
    Option("nats_nkey_seed", str, "", "path to an NKey seed file"),
    Option("nats_tls_ca", str, "", "CA bundle to verify the NATS servers"),
    Option("nats_tls_cert", str, "", "client certificate for NATS mutual TLS"),
    Option("nats_tls_key", str, "", "client key for NATS mutual TLS", secret=True),
)

# (setting, the setting without which it is ignored): see connect_kwargs.
_NATS_NEEDS: Final[tuple[tuple[str, str], ...]] = (
    ("nats_password", "nats_user"),
    ("nats_tls_key", "nats_tls_cert"),
)


@dataclass(frozen=True, slots=True)
class NatsSettings:
    """How to reach NATS; `connect_kwargs` is what nats.connect takes."""

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    user: str = ""
    password: str = ""
    token: str = ""
    creds: str = ""
    nkey_seed: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NatsSettings:
        """From resolved NATS_OPTIONS values; a credential that would be silently unused
        (a password without a user, a TLS key without a certificate) is an error."""
        env = {o.name: o.env for o in NATS_OPTIONS}
        for setting, needed in _NATS_NEEDS:
            if values[setting] and not values[needed]:
                raise ConfigError(
                    f"{env[setting]} is set but {env[needed]} is not, so it would be ignored"
                )
        return cls(
            servers=parse_servers(values["nats_url"]),
            user=values["nats_user"],
            password=values["nats_password"],
            token=values["nats_token"],
            creds=values["nats_creds"],
            nkey_seed=values["nats_nkey_seed"],
            tls_ca=values["nats_tls_ca"],
            tls_cert=values["nats_tls_cert"],
            tls_key=values["nats_tls_key"],
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> NatsSettings:
        """NATS settings from the gateway's SAILCAST_NATS_* variables (`NATS_OPTIONS`), for
        processes without flags of their own, such as app workers deployed next to the
        gateway chart: `Publisher.connect(nats_settings=NatsSettings.from_env(), ...)`.

        Unset variables take the defaults. A bad value, or a credential that would be
        silently unused, raises ConfigError naming the variable."""
        values = resolve(NATS_OPTIONS, argparse.Namespace(), environ)
        env = {o.name: o.env for o in NATS_OPTIONS}
        try:
            return cls.from_values(values)
        except ConfigError as exc:
            if "SAILCAST_NATS_" in str(exc):  # names its variable already
                raise
            # not the raw value: it may carry a password (user:pass@host)
            raise ConfigError(f"{env['nats_url']}: {exc}") from None

    def connect_kwargs(self) -> dict[str, Any]:
        """Everything nats.connect needs but callbacks: servers, credentials, TLS, and the
        reconnect policy every Sailcast process shares: reconnect forever, every half
        second; a server that stops answering pings (2 s, 2 outstanding) is left within
        ~6 s, so a frozen node is not held on to for half a minute."""
        kw: dict[str, Any] = {
            "servers": list(self.servers),
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "connect_timeout": 2,
            "ping_interval": 2,
            "max_outstanding_pings": 2,
        }
        if self.user:
            kw["user"] = self.user
            kw["password"] = self.password
        if self.token:
            kw["token"] = self.token
        if self.creds:
            kw["user_credentials"] = self.creds
        if self.nkey_seed:
            kw["nkeys_seed"] = self.nkey_seed
        if self.tls_ca or self.tls_cert or any(s.startswith("tls://") for s in self.servers):
            ctx = ssl.create_default_context(cafile=self.tls_ca or None)
            if self.tls_cert:
                ctx.load_cert_chain(self.tls_cert, self.tls_key or None)
            kw["tls"] = ctx
        return kw

    def describe(self) -> dict[str, Any]:
        """Loggable view: servers with any embedded password removed."""
        return {"servers": [_strip_userinfo(s) for s in self.servers]}


def parse_servers(value: str | Sequence[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    servers = tuple(s.strip() for s in items if s.strip())
    if not servers:
        raise ConfigError("SAILCAST_NATS_URL names no server")
    for s in servers:
        if "://" not in s:
            shown = REDACTED + "@" + s.rsplit("@", 1)[1] if "@" in s else s
            raise ConfigError(f"NATS server {shown!r} must be a URL such as nats://host:4222")
    return servers


def _strip_userinfo(url: str) -> str:
    scheme, _, rest = url.partition("://")
    if "@" in rest:
        rest = REDACTED + "@" + rest.rsplit("@", 1)[1]
    return f"{scheme}://{rest}"
