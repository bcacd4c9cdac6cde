"""req.ip / req.ips behind proxies, against what Express (proxy-addr) computes."""

from __future__ import annotations

import pytest

from gateway.auth import handshake_from_request
from gateway.engine import HandshakeRequest
from gateway.trust_proxy import NO_PROXY, ProxyTrust
from shared.errors import ConfigError
from shared.vrequest import Handshake

# X-Forwarded-For as a client behind two proxies sends it: client, then the first proxy.
XFF = "203.0.113.7, 10.0.0.5"
PEER = "10.0.0.9"  # the ingress pod the gateway sees


@pytest.mark.parametrize(
    ("setting", "ip", "ips"),
    [
        ("", PEER, []),
        ("false", PEER, []),
        ("true", "203.0.113.7", ["203.0.113.7", "10.0.0.5"]),
        ("0", PEER, []),  # no hop trusted: the peer is the client
        ("1", "10.0.0.5", ["10.0.0.5"]),
        ("2", "203.0.113.7", ["203.0.113.7", "10.0.0.5"]),
        ("5", "203.0.113.7", ["203.0.113.7", "10.0.0.5"]),
        ("uniquelocal", "203.0.113.7", ["203.0.113.7", "10.0.0.5"]),
        ("10.0.0.9", "10.0.0.5", ["10.0.0.5"]),
        ("10.0.0.0/29, 10.0.0.8/30", "203.0.113.7", ["203.0.113.7", "10.0.0.5"]),
        ("loopback", PEER, []),  # the peer is not loopback: nothing is trusted
    ],
)
def test_resolves_like_express(setting: str, ip: str, ips: list[str]) -> None:
    assert ProxyTrust.parse(setting).resolve(PEER, XFF) == (ip, ips)


def test_an_untrusted_hop_stops_the_walk_even_if_a_farther_one_is_trusted() -> None:
    trust = ProxyTrust.parse("10.0.0.9, 203.0.113.0/24")
    # 198.51.100.1 is not trusted: it is the client, whatever it claims to forward
    assert trust.resolve(PEER, "203.0.113.7, 198.51.100.1") == (
        "198.51.100.1",
        ["198.51.100.1"],
    )


def test_no_forwarded_header_leaves_the_peer() -> None:
    assert ProxyTrust.parse("true").resolve(PEER, None) == (PEER, [])
    assert ProxyTrust.parse("true").resolve(PEER, " , ") == (PEER, [])


def test_ipv4_mapped_peers_match_ipv4_subnets() -> None:
    assert ProxyTrust.parse("loopback").resolve("::ffff:127.0.0.1", "192.0.2.1") == (
        "192.0.2.1",
        ["192.0.2.1"],
    )
    assert ProxyTrust.parse("loopback").resolve("::1", "192.0.2.1")[0] == "192.0.2.1"


@pytest.mark.parametrize("bad", ["yes", "10.0.0.0/33", "loopback, not-an-ip", ",", "-1"])
def test_bad_settings_name_the_variable(bad: str) -> None:
    with pytest.raises(ConfigError, match="SAILCAST_TRUST_PROXY"):
        ProxyTrust.parse(bad)


def test_handshake_carries_ip_and_ips_only_when_a_proxy_is_trusted() -> None:
    request = HandshakeRequest(
        path="/socket.io/",
        query="EIO=4&transport=websocket",
        headers={"x-forwarded-for": "198.51.100.4"},
        remote="127.0.0.1",
    )
    plain = handshake_from_request(request, None, NO_PROXY)
    assert (plain.address, plain.ip, plain.ips) == ("127.0.0.1", "", ())
    assert "ip" not in plain.to_wire()
    trusted = handshake_from_request(request, None, ProxyTrust.parse("loopback"))
    assert (trusted.address, trusted.ip, trusted.ips) == (
        "127.0.0.1",
        "198.51.100.4",
        ("198.51.100.4",),
    )
    assert Handshake.from_wire(trusted.to_wire()) == trusted
    assert trusted.query == {"EIO": "4", "transport": "websocket"}
    assert trusted.headers == {"x-forwarded-for": "198.51.100.4"}
