"""What a connecting client claims of its past (gateway/recovery/recover.py
`read_claim`): socket.io-client 4's CONNECT payload, the sails.io.js add-on's handshake
query, and everything else (no claim, nothing taken out of the auth)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.engine.api import HandshakeRequest
from gateway.recovery.recover import Claim, read_claim
from gateway.recovery.sessions import is_pid, new_pid


def request(query: str = "", protocol: int = 4) -> HandshakeRequest:
    return HandshakeRequest(
        path="/socket.io/", query=query, headers={}, remote="127.0.0.1", protocol=protocol
    )


def test_v4_pid_and_offset_come_out_of_the_auth() -> None:
    claim, auth = read_claim(
        4, request(), {"token": "t", "pid": "abc_DEF-1", "offset": "3fa9c1d2e0:42"}
    )
    assert claim == Claim("abc_DEF-1", ("3fa9c1d2e0", 42), capable=True, addon=False)
    assert auth == {"token": "t"}  # the checks and workers see the auth as before


def test_v4_with_a_pid_but_no_stored_event_yet() -> None:
    claim, auth = read_claim(4, request(), {"pid": "abc"})
    assert claim == Claim("abc", None, capable=True, addon=False)
    assert auth is None


@pytest.mark.parametrize("auth", [None, {"token": "t"}, "junk", [1]])
def test_v4_first_connect_claims_nothing(auth: Any) -> None:
    claim, kept = read_claim(4, request(), auth)
    assert claim == Claim(None, None, capable=True, addon=False)
    assert kept == auth


@pytest.mark.parametrize("offset", ["junk", 7, "a:b", "x" * 40 + ":1", None])
def test_an_offset_we_cannot_have_written_is_no_offset(offset: Any) -> None:
    claim, _ = read_claim(4, request(), {"pid": "p", "offset": offset})
    assert claim.offset is None
    assert claim.pid == "p"


def test_v3_add_on_claims_in_the_query() -> None:
    q = (
        "__sails_io_sdk_version=1.2.1&__sailcast_recovery=1"
        "&__sailcast_pid=p1&__sailcast_offset=e1%3A9"
    )
    claim, auth = read_claim(3, request(q, 3), None)
    assert claim == Claim("p1", ("e1", 9), capable=True, addon=True)
    assert auth is None


def test_v3_add_on_first_connect() -> None:
    claim, _ = read_claim(3, request("__sailcast_recovery=1", 3), None)
    assert claim == Claim(None, None, capable=True, addon=True)


def test_stock_sails_io_js_claims_nothing_and_takes_no_offsets() -> None:
    claim, _ = read_claim(3, request("__sails_io_sdk_version=1.2.1", 3), None)
    assert claim == Claim(None, None, capable=False, addon=False)


def test_pids_are_unguessable_url_safe_keys() -> None:
    pids = {new_pid() for _ in range(100)}
    assert len(pids) == 100
    assert all(is_pid(p) and len(p) == 24 for p in pids)
    assert not is_pid("a.b")  # a KV key: no dots
    assert not is_pid("")
    assert not is_pid(5)
