"""NatsSettings.from_env: a worker reads NATS settings from the variables the gateway
reads, with the gateway's names, and bad values name their variable."""

from __future__ import annotations

import pytest

from gateway.settings import OPTIONS as GATEWAY_OPTIONS
from gateway.settings import from_argv
from shared.config import NatsSettings
from shared.errors import ConfigError

# Every SAILCAST_NATS_* variable of the gateway, each with a distinct value.
GATEWAY_NATS_ENV = {
    o.env: f"value-of-{o.name}" for o in GATEWAY_OPTIONS if o.env.startswith("SAILCAST_NATS_")
} | {"SAILCAST_NATS_URL": "nats://n1:4222,tls://n2:4222"}


def test_unset_variables_give_the_defaults() -> None:
    assert NatsSettings.from_env({}) == NatsSettings()
    assert NatsSettings.from_env({"SAILCAST_PORT": "1", "HOME": "/x"}) == NatsSettings()


def test_reads_every_nats_variable_of_the_gateway_the_same_way() -> None:
    assert len(GATEWAY_NATS_ENV) >= 9, "the gateway's NATS options went missing"
    gateway, _ = from_argv([], GATEWAY_NATS_ENV)
    settings = NatsSettings.from_env(GATEWAY_NATS_ENV)
    assert settings == gateway.nats
    assert settings.servers == ("nats://n1:4222", "tls://n2:4222")
    assert settings.user == "value-of-nats_user"
    assert settings.password == "value-of-nats_password"
    assert settings.tls_key == "value-of-nats_tls_key"


def test_reads_only_the_nats_variables() -> None:
    """The names from_env looks up are the gateway's SAILCAST_NATS_* names, no others."""

    class Recording(dict[str, str]):
        looked_up: set[str]

        def __contains__(self, key: object) -> bool:
            self.looked_up.add(str(key))
            return super().__contains__(key)

    env = Recording()
    env.looked_up = set()
    NatsSettings.from_env(env)
    assert env.looked_up == set(GATEWAY_NATS_ENV)


def test_credentials_reach_the_nats_connection() -> None:
    env = {
        "SAILCAST_NATS_URL": "nats://nats:4222",
        "SAILCAST_NATS_USER": "worker",
        "SAILCAST_NATS_PASSWORD": "pw",
    }
    kwargs = NatsSettings.from_env(env).connect_kwargs()
    assert kwargs["servers"] == ["nats://nats:4222"]
    assert (kwargs["user"], kwargs["password"]) == ("worker", "pw")
    token = NatsSettings.from_env({"SAILCAST_NATS_TOKEN": "tok"}).connect_kwargs()
    assert token["token"] == "tok"


def test_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAILCAST_NATS_URL", "nats://from-env:4222")
    monkeypatch.setenv("SAILCAST_NATS_TOKEN", "t0k")
    settings = NatsSettings.from_env()
    assert settings.servers == ("nats://from-env:4222",)
    assert settings.token == "t0k"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"SAILCAST_NATS_URL": "localhost:4222"}, ["SAILCAST_NATS_URL", "nats://"]),
        ({"SAILCAST_NATS_URL": " , "}, ["SAILCAST_NATS_URL"]),
        ({"SAILCAST_NATS_PASSWORD": "pw"}, ["SAILCAST_NATS_PASSWORD", "SAILCAST_NATS_USER"]),
        ({"SAILCAST_NATS_TLS_KEY": "/k.pem"}, ["SAILCAST_NATS_TLS_KEY", "SAILCAST_NATS_TLS_CERT"]),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        NatsSettings.from_env(env)
    for name in names:
        assert name in str(caught.value)


def test_errors_do_not_show_a_password_in_the_url() -> None:
    with pytest.raises(ConfigError) as caught:
        NatsSettings.from_env({"SAILCAST_NATS_URL": "worker:hunter2@nats:4222"})
    assert "SAILCAST_NATS_URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)
