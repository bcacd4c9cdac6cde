"""gateway.engine.admission: which new sessions may open (pure counting, no I/O)."""

from __future__ import annotations

from gateway.engine.admission import MAX_PER_IP, MAX_SESSIONS, Admission
from gateway.engine.options import EngineOptions
from gateway.settings import GatewaySettings, ListenSettings
from gateway.trust_proxy import ProxyTrust


def test_sessions_over_the_total_are_refused_first() -> None:
    admission = Admission(EngineOptions(max_sessions=3, max_sessions_per_ip=1))
    admission.opened("10.0.0.1")
    assert admission.refusal("10.0.0.2", open_sessions=2) is None
    assert admission.refusal("10.0.0.2", open_sessions=3) == MAX_SESSIONS
    assert admission.refusal("10.0.0.1", open_sessions=1) == MAX_PER_IP


def test_per_ip_counts_are_released_and_forgotten() -> None:
    admission = Admission(EngineOptions(max_sessions_per_ip=2))
    for _ in range(2):
        admission.opened("10.0.0.1")
    assert admission.refusal("10.0.0.1", 2) == MAX_PER_IP
    admission.closed("10.0.0.1")
    assert admission.refusal("10.0.0.1", 1) is None
    admission.closed("10.0.0.1")
    assert admission.sessions_of("10.0.0.1") == 0
    admission.closed("10.0.0.1")  # a close with nothing counted stays at zero
    assert admission.sessions_of("10.0.0.1") == 0


def test_nothing_is_kept_per_ip_without_the_limit() -> None:
    admission = Admission(EngineOptions())
    assert not admission.per_ip
    admission.opened("10.0.0.1")
    assert admission.sessions_of("10.0.0.1") == 0
    assert admission.refusal("10.0.0.1", 10_000) is None  # no --max-connections: no total


def test_the_client_ip_is_what_trust_proxy_says() -> None:
    trusted = Admission(EngineOptions(trust=ProxyTrust.parse("loopback"), max_sessions_per_ip=1))
    assert trusted.client_ip("127.0.0.1", "203.0.113.7") == "203.0.113.7"
    untrusted = Admission(EngineOptions(max_sessions_per_ip=1))
    assert untrusted.client_ip("127.0.0.1", "203.0.113.7") == "127.0.0.1"


def test_options_add_the_pending_budget_to_max_connections() -> None:
    listen = ListenSettings(max_connections=100, max_pending_connections=8)
    settings = GatewaySettings(listen=listen)
    assert EngineOptions.of(settings).max_sessions == 108
    assert EngineOptions.of(GatewaySettings()).max_sessions == 0  # no limit: no total
