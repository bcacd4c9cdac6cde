"""Client events: a Socket.IO client's own `socket.emit("typing", data, ack)` forwarded
to the workers that declared the event (`<p>.ev.<event>`, queue group; the wire is
shared/client_events.py), the worker's answer becoming the client's ack.

The inbound limits of virtual requests apply, from the same per-socket budget
(gateway/vrequests.py `admit`): the rate, the IP's rate, the requests in flight, and
`--max-payload-bytes` for the encoded event; the same timeout,
`--virtual-request-timeout-s`. An event no worker declared finds no responder and is
refused at once. Every refusal is counted in `refusals_total` by reason
(`client_event_undeclared`, `client_event_rate`, …) and answered, when the client
asked for an ack, with `{"error": <reason>}` so that no ack ever hangs.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from gateway.broker import Broker
from gateway.logs import Throttled
from gateway.metrics import GatewayMetrics
from gateway.vrequests import LIMIT_WORDS, MAX_DEPTH, VirtualRequests, deeper_than
from shared.client_events import (
    SocketEvent,
    check_event_name,
    decode_event_answer,
    encode_socket_event,
)
from shared.errors import GatewayTimeout, MalformedEnvelope, NotSerializable, TransportError
from shared.subjects import Subjects

log = logging.getLogger(__name__)

ERROR_KEY: Final = "error"


def refusal(reason: str, message: str = "") -> tuple[Any, ...]:
    """The ack of a refused event: one argument, `{"error": reason}` (and a message)."""
    return ({ERROR_KEY: reason, "message": message} if message else {ERROR_KEY: reason},)


class ClientEvents:
    """Forward one gateway's client events to the workers."""

    def __init__(
        self,
        vrequests: VirtualRequests,
        *,
        gateway_id: str,
        subjects: Subjects,
        max_payload_bytes: int,
        timeout_s: float,
        broker: Broker,
        metrics: GatewayMetrics,
    ) -> None:
        self.vrequests = vrequests
        self.gateway_id = gateway_id
        self.subjects = subjects
        self.max_payload_bytes = max_payload_bytes
        self.timeout_s = timeout_s
        self.broker = broker
        self.metrics = metrics
        self._warnings = Throttled(log)

    async def handle(self, sid: str, event: str, args: tuple[Any, ...], ack: bool) -> Any:
        """One client event; returns the ack's arguments as a tuple (None without an
        ack)."""
        try:
            answer = await self._handle(sid, event, args, ack)
        except Exception:
            self._warnings.exception(
                "internal", "event %r: failed in the gateway", event, extra={"sid": sid}
            )
            answer = (refusal("internal"),)
        return answer if ack else None

    def _refused(self, reason: str, sid: str, event: str, why: str) -> tuple[Any, ...]:
        self.metrics.refusals.labels(f"client_event_{reason}").inc()
        self._warnings.warning(
            f"event_{reason}", "event %r refused: %s", event[:80], why, extra={"sid": sid}
        )
        return refusal(reason)

    async def _handle(self, sid: str, event: str, args: tuple[Any, ...], ack: bool) -> Any:
        state = self.vrequests.state(sid)
        if state is None:
            return refusal("unavailable")
        try:
            check_event_name(event)
        except MalformedEnvelope as exc:
            return self._refused("bad_name", sid, event, str(exc))
        if deeper_than(args, MAX_DEPTH):
            return self._refused("too_deep", sid, event, f"deeper than {MAX_DEPTH} levels")
        limit = self.vrequests.admit(state)
        if limit is not None:
            return self._refused(limit, sid, event, LIMIT_WORDS[limit])
        try:
            return await self._forward(sid, event, args, ack, state.handshake)
        finally:
            state.inflight -= 1

    async def _forward(
        self, sid: str, event: str, args: tuple[Any, ...], ack: bool, handshake: Any
    ) -> Any:
        ev = SocketEvent(event, args, sid, self.gateway_id, handshake, ack)
        try:
            payload = encode_socket_event(ev)
        except NotSerializable as exc:
            return self._refused("bad_args", sid, event, str(exc))
        if len(payload) > self.max_payload_bytes:
            return self._refused("too_large", sid, event, f"{len(payload)} bytes")
        if not self.broker.connected:
            return refusal("unavailable")
        try:
            reply = await self.broker.request(
                self.subjects.client_event(event), payload, timeout=self.timeout_s
            )
            answer = decode_event_answer(reply)
        except GatewayTimeout:
            self._warnings.warning("event_timeout", "event %r: no answer in time", event)
            return refusal("timeout")
        except TransportError:  # no responders: no worker declared it
            return self._refused("undeclared", sid, event, "no worker declared it")
        except MalformedEnvelope as exc:
            self._warnings.warning("event_bad_answer", "event %r: bad answer: %s", event, exc)
            return refusal("bad_answer")
        if answer.error:
            return refusal(answer.error, answer.message)
        return answer.args  # the ack's arguments (none: an empty ack)
