"""Settings: flag beats env beats default; errors name the variable; secrets redacted."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from gateway.settings import from_argv
from shared.errors import ConfigError


def test_precedence_flag_env_default() -> None:
    s, _ = from_argv(["--port", "2000"], {"SAILCAST_PORT": "3000", "SAILCAST_PREFIX": "app"})
    assert s.listen.port == 2000
    assert s.prefix == "app"
    assert s.listen.metrics_port == 9464


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
