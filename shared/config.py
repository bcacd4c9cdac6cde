"""Configuration: declared options resolved from flags, then SAILCAST_* env, then defaults.

Each option is declared once, as a field of a frozen settings dataclass (`setting`:
default, help, unit, secret, choices); `options_of` reads the declarations back as
`Option`s, from which this module makes the argparse flags, resolves values with
errors that name the variable, builds the settings (`build`) and prints them with
secrets redacted. NATS connection settings are shared by the publisher and the
gateway, so they live here too (`NatsSettings`, whose fields are `NATS_OPTIONS`).
"""

from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import Field, dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from shared.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")
ENV_PREFIX: Final = "SAILCAST_"
REDACTED: Final = "***"
_OPTION: Final = "sailcast.option"


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: `--name` flag, `SAILCAST_NAME` variable, typed default, unit, help.

    `type` is bool, int, float, str, or tuple (a comma-separated list of strings).
    `path` is where the value lives in a settings tree (`("engine", "ping_interval_s")`);
    empty for options not declared on a settings dataclass."""

    name: str
    type: type
    default: Any
    help: str
    secret: bool = False
    choices: tuple[str, ...] = ()
    unit: str = ""
    path: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def shown_default(self) -> str:
        """The default as `--help` and docs show it (secrets never shown)."""
        if self.secret and self.default:
            return REDACTED
        if isinstance(self.default, tuple):
            return ",".join(self.default)
        return str(self.default)


# -- declaring options on settings dataclasses ----------------------------------------------
@dataclass(frozen=True, slots=True)
class _Spec:
    help: str
    unit: str
    secret: bool
    choices: tuple[str, ...]
    name: str


def setting(
    default: Any,
    help: str,
    *,
    unit: str = "",
    secret: bool = False,
    choices: tuple[str, ...] = (),
    name: str = "",
) -> Any:
    """A settings dataclass field that is also its option: the field's name is the option's
    name (`name=` overrides it), the field's default the option's default."""
    spec = _Spec(help, unit, secret, choices, name)
    return field(default=default, metadata={_OPTION: spec})


def _slice_of(f: Field[Any]) -> type[Any] | None:
    """The settings slice a field holds (`field(default_factory=SomeSettings)`), if any:
    its options are part of the parent's."""
    factory = f.default_factory
    return factory if isinstance(factory, type) and is_dataclass(factory) else None


def options_of(cls: type[Any], path: tuple[str, ...] = ()) -> tuple[Option, ...]:
    """Every option declared on settings dataclass `cls` and its slices, in field order."""
    out: list[Option] = []
    for f in fields(cls):
        sub = _slice_of(f)
        if sub is not None:
            out.extend(options_of(sub, (*path, f.name)))
            continue
        spec = f.metadata.get(_OPTION)
        if spec is None:
            continue
        typ = tuple if isinstance(f.default, tuple) else type(f.default)
        out.append(
            Option(
                spec.name or f.name,
                typ,
                f.default,
                spec.help,
                secret=spec.secret,
                choices=spec.choices,
                unit=spec.unit,
                path=(*path, f.name),
            )
        )
    return tuple(out)


def build(cls: type[T], values: Mapping[str, Any]) -> T:
    """Settings dataclass `cls` (slices included) from resolved option values keyed by
    option name; each slice validates itself as it is constructed."""
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        sub = _slice_of(f)
        if sub is not None:
            kwargs[f.name] = build(sub, values)
        elif _OPTION in f.metadata:
            kwargs[f.name] = values[f.metadata[_OPTION].name or f.name]
    return cls(**kwargs)


def value_at(settings: Any, opt: Option) -> Any:
    """The value of `opt` in a settings tree built from its declarations."""
    value = settings
    for name in opt.path:
        value = getattr(value, name)
    return value


# -- flags, environment, printing -------------------------------------------------------------
class ArgumentAdder(Protocol):
    """An argparse parser or argument group."""

    def add_argument(self, *name_or_flags: str, **kwargs: Any) -> argparse.Action: ...


def add_options(parser: ArgumentAdder, options: Sequence[Option]) -> None:
    for opt in options:
        unit = f" {opt.unit}" if opt.unit else ""
        choices = f"; one of {', '.join(opt.choices)}, any case" if opt.choices else ""
        parser.add_argument(
            opt.flag,
            dest=opt.name,
            default=None,
            metavar=opt.name.upper(),
            help=f"{opt.help} [env {opt.env}; default {opt.shown_default()!r}{unit}{choices}]",
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
    if opt.type is tuple:
        return tuple(item.strip() for item in raw.split(",") if item.strip())
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
    if opt.choices:  # as users type them: `debug` is `DEBUG`
        canonical = {choice.lower(): choice for choice in opt.choices}
        if str(value).strip().lower() not in canonical:
            raise ConfigError(f"{source}={raw!r} must be one of {', '.join(opt.choices)}")
        return canonical[str(value).strip().lower()]
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"{source}={raw!r} must not be negative")
    return value


def redact(opt: Option, value: Any) -> Any:
    """`value` of `opt` as it may be printed: secrets replaced, passwords in URLs removed."""
    if opt.secret and value:
        return REDACTED
    if isinstance(value, str) and "://" in value:
        return ",".join(_strip_userinfo(s) for s in value.split(","))
    if isinstance(value, tuple):
        return [_strip_userinfo(v) if isinstance(v, str) and "://" in v else v for v in value]
    return value


def redacted(settings: Any, options: Sequence[Option]) -> dict[str, Any]:
    """The effective settings as a dict keyed by option name, secrets replaced, for
    `--print-config` and logs."""
    return {opt.name: redact(opt, value_at(settings, opt)) for opt in options}


# (setting, the setting without which it is ignored): see connect_kwargs.
_NATS_NEEDS: Final[tuple[tuple[str, str], ...]] = (
    ("password", "user"),
    ("tls_key", "tls_cert"),
)


@dataclass(frozen=True, slots=True)
class NatsSettings:
    """How to reach NATS; `connect_kwargs` is what nats.connect takes. Each field is also
    its `SAILCAST_NATS_*` option (`NATS_OPTIONS`), shared by the gateway's flags and by
    workers' `from_env`."""

    servers: tuple[str, ...] = setting(
        ("nats://127.0.0.1:4222",), "NATS servers, comma-separated", name="nats_url"
    )
    user: str = setting("", "NATS user name", name="nats_user")
    password: str = setting("", "NATS password", secret=True, name="nats_password")
    token: str = setting("", "NATS auth token", secret=True, name="nats_token")
    creds: str = setting("", "path to a NATS .creds file (JWT + NKey)", name="nats_creds")
    nkey_seed: str = setting("", "path to an NKey seed file", name="nats_nkey_seed")
    tls_ca: str = setting("", "CA bundle to verify the NATS servers", name="nats_tls_ca")
    tls_cert: str = setting("", "client certificate for NATS mutual TLS", name="nats_tls_cert")
    tls_key: str = setting("", "client key for NATS mutual TLS", secret=True, name="nats_tls_key")

    def __post_init__(self) -> None:
        """A server that is not a URL, or a credential that would be silently unused (a
        password without a user, a TLS key without a certificate), is an error."""
        check_servers(self.servers)
        for attr, needed in _NATS_NEEDS:
            if getattr(self, attr) and not getattr(self, needed):
                raise ConfigError(
                    f"{_nats_env(attr)} is set but {_nats_env(needed)} is not, "
                    "so it would be ignored"
                )

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NatsSettings:
        """From resolved NATS_OPTIONS values (keyed by option name)."""
        return build(cls, values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> NatsSettings:
        """NATS settings from the gateway's SAILCAST_NATS_* variables (`NATS_OPTIONS`), for
        processes without flags of their own, such as app workers deployed next to the
        gateway chart: `Publisher.connect(nats_settings=NatsSettings.from_env(), ...)`.

        Unset variables take the defaults. A bad value, or a credential that would be
        silently unused, raises ConfigError naming the variable."""
        values = resolve(NATS_OPTIONS, argparse.Namespace(), environ)
        try:
            return cls.from_values(values)
        except ConfigError as exc:
            if "SAILCAST_NATS_" in str(exc):  # names its variable already
                raise
            # not the raw value: it may carry a password (user:pass@host)
            raise ConfigError(f"{_nats_env('servers')}: {exc}") from None

    def connect_kwargs(self) -> dict[str, Any]:
        """Everything nats.connect needs but callbacks: servers, credentials, TLS, and the
        reconnect policy every Sailcast process shares: reconnect forever, every half
        second; a ping every 2 s and the connection declared stale when one is due with
        2 unanswered, so a server that stops answering is left 4–6 s after it froze (not
        after half a minute; docs/deploy.md says what else leaves it in a gateway)."""
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


NATS_OPTIONS: Final[tuple[Option, ...]] = options_of(NatsSettings)


def _nats_env(attr: str) -> str:
    """The variable of NatsSettings field `attr` (`password` → SAILCAST_NATS_PASSWORD)."""
    return next(o.env for o in NATS_OPTIONS if o.path == (attr,))


def parse_servers(value: str | Sequence[str]) -> tuple[str, ...]:
    """`nats://a:4222, nats://b:4222` (or a list) as checked server URLs."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return check_servers(tuple(s.strip() for s in items if s.strip()))


def check_servers(servers: tuple[str, ...]) -> tuple[str, ...]:
    """Servers must be URLs, at least one (errors never show a password)."""
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
