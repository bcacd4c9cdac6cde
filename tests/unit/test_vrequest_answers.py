"""Every virtual request with an ack gets exactly one answer, even when something in
the gateway fails on the way (a bug: answered 500, logged once per 5 s)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.broker.memory import MemoryBroker
from gateway.metrics import GatewayMetrics
from gateway.settings import VirtualRequestSettings
from gateway.vrequests import VirtualRequests
from shared.subjects import Subjects
from shared.vrequest import Handshake


class FailingBroker(MemoryBroker):
    """A broker whose request fails in a way no code path expects (a bug)."""

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:
        raise RuntimeError("a bug on the way")


async def _ignore(sid: str, event: str, data: Any) -> None:
    return None


def vrequests(broker: MemoryBroker) -> VirtualRequests:
    vr = VirtualRequests(
        VirtualRequestSettings(),
        gateway_id="gw-test",
        subjects=Subjects("t"),
        max_payload_bytes=1 << 20,
        broker=broker,
        metrics=GatewayMetrics(),
        emit=_ignore,
    )
    vr.track("s1", Handshake(query={"__sails_io_sdk_version": "1.2.1"}, address="10.0.0.1"))
    return vr


async def test_a_bug_on_the_way_is_answered_500_once(caplog: pytest.LogCaptureFixture) -> None:
    vr = vrequests(FailingBroker())
    msg = {"method": "get", "url": "/x", "headers": {}, "data": {}}
    with caplog.at_level(logging.DEBUG, logger="gateway.vrequests"):
        answers = [await vr.handle("s1", "get", (msg,), True) for _ in range(3)]
        assert await vr.handle("s1", "get", (msg,), False) is None  # no ack: no answer
    assert [a["statusCode"] for a in answers] == [500, 500, 500]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # the traceback once, the rest at DEBUG
    assert errors[0].exc_info is not None


async def test_a_request_too_deep_to_encode_is_answered_400() -> None:
    vr = vrequests(MemoryBroker())
    data: Any = {}
    for _ in range(300):
        data = {"a": data}
    msg = {"method": "post", "url": "/deep", "headers": {}, "data": data}
    answer = await vr.handle("s1", "post", (msg,), True)
    assert answer == {"body": "Bad Request", "headers": {}, "statusCode": 400}
