"""What the engine keeps of the opening HTTP request (gateway.engine.server): the
`HandshakeRequest` the gateway's hooks and virtual requests read."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.engine.server import handshake_request


def test_headers_are_lower_case_and_repeated_ones_joined() -> None:
    headers = CIMultiDict(
        [
            ("Host", "gw.example"),
            ("X-Forwarded-For", "198.51.100.4"),
            ("x-forwarded-for", "10.0.0.1"),
            ("Origin", "https://app.example"),
        ]
    )
    request = make_mocked_request("GET", "/socket.io/?EIO=3&transport=polling&t=1", headers)
    hs = handshake_request(request, "/socket.io/", 3)
    assert hs.headers == {
        "host": "gw.example",
        "x-forwarded-for": "198.51.100.4,10.0.0.1",
        "origin": "https://app.example",
    }
    assert hs.query == "EIO=3&transport=polling&t=1"
    assert (hs.path, hs.protocol, hs.scheme) == ("/socket.io/", 3, "http")
