"""The HTTP API's parts with no I/O: the Idempotency-Key memory (bounded, expiring),
the error → status mapping, and its settings (keys for rotation, redacted)."""

from __future__ import annotations

import pytest

from gateway.api import ApiError, IdempotencyCache, as_api_error
from gateway.api_methods import FieldError
from gateway.settings import ApiSettings, from_argv
from shared.errors import (
    ConfigError,
    GatewayTimeout,
    InvalidRoomName,
    LimitExceeded,
    NoSuchSocket,
    PayloadTooLarge,
    PublisherClosed,
    TransportError,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_is_kept_for_the_window_then_forgotten() -> None:
    clock = Clock()
    cache = IdempotencyCache(window_s=10, max_keys=100, clock=clock)
    cache.put("k", b"fp", (200, b"{}"))
    clock.now += 9.9
    assert cache.get("k") == (b"fp", (200, b"{}"))
    clock.now += 0.1
    assert cache.get("k") is None
    assert len(cache) == 0


def test_memory_is_bounded_by_forgetting_the_oldest() -> None:
    cache = IdempotencyCache(window_s=60, max_keys=3, clock=Clock())
    for i in range(5):
        cache.put(f"k{i}", b"fp", (200, str(i).encode()))
    assert len(cache) == 3
    assert cache.get("k0") is None
    assert cache.get("k1") is None
    assert cache.get("k4") == (b"fp", (200, b"4"))


def test_max_keys_zero_remembers_nothing() -> None:
    cache = IdempotencyCache(window_s=60, max_keys=0, clock=Clock())
    cache.put("k", b"fp", (200, b"{}"))
    assert cache.get("k") is None


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (FieldError("rooms", "bad", "invalid_room_name"), 400, "invalid_room_name"),
        (InvalidRoomName("bad"), 400, "invalid_request"),
        (PayloadTooLarge("big"), 413, "payload_too_large"),
        (PublisherClosed("closed"), 503, "unavailable"),
        (NoSuchSocket("s1"), 404, "no_such_socket"),
        (LimitExceeded("rooms"), 409, "limit_exceeded"),
        (GatewayTimeout("late"), 504, "gateway_timeout"),
        (TransportError("down"), 503, "transport_error"),
    ],
)
def test_publisher_errors_become_http_answers(error: Exception, status: int, code: str) -> None:
    mapped = as_api_error(error)
    assert (mapped.status, mapped.code) == (status, code)
    assert mapped.body()["error"]["message"] == str(error)


def test_a_field_error_names_its_field() -> None:
    assert as_api_error(FieldError("omit", "bad")).body() == {
        "error": {"code": "invalid_field", "message": "bad", "field": "omit"}
    }


def test_an_unexpected_error_is_not_hidden() -> None:
    with pytest.raises(KeyError):
        as_api_error(KeyError("bug"))
    assert isinstance(as_api_error(ApiError(418, "x", "y")), ApiError)


def test_the_api_is_off_without_a_key_and_takes_several() -> None:
    assert not ApiSettings().enabled
    env = {"SAILCAST_API_KEY": "key-old-7f3a,key-new-91c2", "SAILCAST_API_PORT": "0"}
    settings, _ = from_argv([], env)
    assert settings.api.api_key == ("key-old-7f3a", "key-new-91c2")
    assert settings.api.enabled
    shown = str(settings.describe())
    assert "key-old-7f3a" not in shown
    assert "key-new-91c2" not in shown


@pytest.mark.parametrize(
    "values",
    [{"api_port": 70000}, {"api_key": ("a", "")}, {"api_idempotency_window_s": -1}],
)
def test_bad_api_settings_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ApiSettings(**values)  # type: ignore[arg-type]


def test_the_api_port_is_its_own() -> None:
    with pytest.raises(ConfigError, match="port of its own"):
        from_argv([], {"SAILCAST_API_KEY": "k", "SAILCAST_API_PORT": "9464"})
    from_argv([], {"SAILCAST_API_PORT": "9464"})  # off: the port is not used
