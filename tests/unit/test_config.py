"""Settings: flag beats env beats default; errors name the variable; secrets redacted."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import orjson
import pytest

from gateway.settings import (
    OPTIONS,
    ConnectSettings,
    EngineSettings,
    GatewaySettings,
    ListenSettings,
    LogSettings,
    VirtualRequestSettings,
    from_argv,
    parser,
)
from shared.config import value_at
from shared.errors import ConfigError


def test_precedence_flag_env_default() -> None:
    s, _ = from_argv(["--port", "2000"], {"SAILCAST_PORT": "3000", "SAILCAST_PREFIX": "app"})
    assert s.listen.port == 2000
    assert s.prefix == "app"
    assert s.listen.metrics_port == 9464


def test_transports_are_a_comma_separated_subset_in_any_case() -> None:
    s, _ = from_argv([], {})
    assert s.engine.transports == ("polling", "websocket")
    s, _ = from_argv(["--transports", "WebSocket"], {})
    assert s.engine.transports == ("websocket",)


def test_nats_urls_are_comma_separated() -> None:
    s, _ = from_argv([], {"SAILCAST_NATS_URL": "nats://a:4222, nats://b:4222"})
    assert s.nats.servers == ("nats://a:4222", "nats://b:4222")


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"SAILCAST_PORT": "abc"}, "SAILCAST_PORT"),
        ({"SAILCAST_PORT": "-1"}, "SAILCAST_PORT"),
        ({"SAILCAST_LOG_FORMAT": "xml"}, "SAILCAST_LOG_FORMAT"),
        ({"SAILCAST_PREFIX": "a b"}, "SAILCAST_PREFIX"),
        ({"SAILCAST_GATEWAY_ID": "x.y"}, "SAILCAST_GATEWAY_ID"),
        ({"SAILCAST_NATS_URL": "localhost"}, "nats://"),
        ({"SAILCAST_DRAIN_TIMEOUT_S": "soon"}, "SAILCAST_DRAIN_TIMEOUT_S"),
        ({"SAILCAST_TRANSPORTS": "flashsocket"}, "SAILCAST_TRANSPORTS"),
        ({"SAILCAST_TRANSPORTS": ","}, "SAILCAST_TRANSPORTS"),
    ],
)
def test_errors_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        from_argv([], env)


def test_print_config_redacts_secrets() -> None:
    env = {
        "SAILCAST_NATS_PASSWORD": "hunter2",
        "SAILCAST_NATS_USER": "app",
        "SAILCAST_NATS_TOKEN": "tok-secret",
        "SAILCAST_NATS_URL": "nats://app:pw-in-url@127.0.0.1:4222",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "--print-config", "--gateway-id", "gw-x"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    for secret in ("hunter2", "tok-secret", "pw-in-url"):
        assert secret not in out
    cfg = orjson.loads(out)
    assert cfg["gateway_id"] == "gw-x"
    assert cfg["nats"]["password"] == "***"
    assert cfg["nats"]["user"] == "app"


def test_bad_config_exits_2_with_the_variable_named() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "gateway", "--print-config"],
        capture_output=True,
        text=True,
        env={"SAILCAST_PORT": "x", "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 2
    assert "SAILCAST_PORT" in res.stderr


@pytest.mark.parametrize(
    ("argv", "env", "level"),
    [
        (["--log-level", "debug"], {}, "DEBUG"),
        (["--log-level", "Warning"], {}, "WARNING"),
        ([], {"SAILCAST_LOG_LEVEL": "error"}, "ERROR"),
        ([], {}, "INFO"),
    ],
)
def test_log_level_is_accepted_in_any_case(
    argv: list[str], env: dict[str, str], level: str
) -> None:
    s, _ = from_argv(argv, env)
    assert s.logs.log_level == level


def test_choices_in_any_case_still_refuse_other_words() -> None:
    s, _ = from_argv(["--log-format", "JSON", "--before-connect", "Workers"], {})
    assert (s.logs.log_format, s.connect.before_connect) == ("json", "workers")
    with pytest.raises(ConfigError, match="SAILCAST_LOG_LEVEL"):
        from_argv([], {"SAILCAST_LOG_LEVEL": "verbose"})


def test_the_gateway_starts_with_a_lower_case_log_level() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "gateway", "--log-level", "debug", "--print-config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0, res.stderr
    assert orjson.loads(res.stdout)["log_level"] == "DEBUG"


# -- every option declared once ----------------------------------------------------------------
def _leaves(cls: type, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for f in dataclasses.fields(cls):
        factory = f.default_factory
        if isinstance(factory, type) and dataclasses.is_dataclass(factory):
            out |= _leaves(factory, (*path, f.name))
        else:
            out.add((*path, f.name))
    return out


def test_every_settings_field_is_a_declared_option() -> None:
    """No field of the settings (or of a slice) without its flag, variable and help."""
    assert {o.path for o in OPTIONS} == _leaves(GatewaySettings)
    assert len({o.name for o in OPTIONS}) == len(OPTIONS)
    assert all(o.help for o in OPTIONS)


def test_an_option_default_is_the_settings_default() -> None:
    s = GatewaySettings(gateway_id="gw-x")
    for o in OPTIONS:
        if o.name != "gateway_id":  # empty means "generate one"
            assert value_at(s, o) == o.default, o.name


def test_durations_and_sizes_say_their_unit() -> None:
    for o in OPTIONS:
        if o.name.endswith("_per_s"):
            assert o.unit.endswith("/s"), o.name
        elif o.name.endswith("_s"):
            assert o.unit == "s", o.name
        if o.name.endswith("_bytes"):
            assert o.unit == "bytes", o.name


def test_help_shows_flag_variable_default_and_unit() -> None:
    text = parser().format_help()
    for o in OPTIONS:
        assert o.flag in text
        assert o.env in text
    assert "SAILCAST_PING_INTERVAL_S; default '25.0' s" in " ".join(text.split())
    assert "hunter2" not in text


def test_slices_are_frozen_and_validate_themselves() -> None:
    s, _ = from_argv([], {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.engine.ping_interval_s = 1.0  # type: ignore[misc]
    with pytest.raises(ConfigError, match="SAILCAST_MAX_PAYLOAD_BYTES"):
        EngineSettings(max_payload_bytes=10)
    with pytest.raises(ConfigError, match="SAILCAST_VIRTUAL_REQUEST_MAX_INFLIGHT"):
        VirtualRequestSettings(virtual_request_max_inflight=0)
    with pytest.raises(ConfigError, match="SAILCAST_JWT_SECRET"):
        ConnectSettings(before_connect="jwt")
    with pytest.raises(ConfigError, match="SAILCAST_METRICS_PORT"):
        ListenSettings(metrics_port=70000)
    with pytest.raises(ConfigError, match="SAILCAST_LOG_LEVEL"):
        LogSettings(log_level="debug")  # the parser normalises; the slice insists


def test_print_config_has_one_key_per_option() -> None:
    s, _ = from_argv(["--jwt-secret", "k", "--allowed-origins", "*"], {})
    out = s.describe()
    gateway_keys = {o.name for o in OPTIONS if o.path[0] != "nats"}
    assert set(out) == gateway_keys | {"nats"}
    assert out["jwt_secret"] == "***"
    assert out["allowed_origins"] == ["*"]
    assert set(out["nats"]) == {o.path[-1] for o in OPTIONS if o.path[0] == "nats"}
