"""The async publisher: one NATS connection, the subjects, and the request patterns the
verbs are built from (fire-and-forget publish, ask one socket's gateway, ask every
gateway and wait for all of them)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final

from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from publisher.failures import FailureBook
from publisher.hold import DEFAULT_HOLD_MAX_BYTES, DEFAULT_HOLD_TIMEOUT_S, OutageHold
from publisher.members import RoomQueries
from publisher.models.model import Model
from publisher.pipeline import DEFAULT_STORED_WINDOW
from publisher.stats import PublisherStats
from publisher.stored import StoredPublishing
from shared.config import NatsSettings, parse_servers
from shared.control import (
    Applied,
    ClusterRequest,
    Done,
    ErrorCode,
    Ping,
    Refused,
    Rooms,
    RoomsOf,
    SocketRequest,
    decode_heartbeat,
    decode_reply,
    encode_request,
)
from shared.envelope import DEFAULT_MAX_PAYLOAD_BYTES
from shared.errors import (
    FailedPublish,
    GatewayTimeout,
    LimitExceeded,
    MalformedEnvelope,
    NoSuchSocket,
    PublisherClosed,
    TransportError,
)
from shared.history import HistoryRules
from shared.subjects import Subjects

log = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT_S: Final = 2.0
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
NO_RESPONDERS_STATUS: Final = "503"
MAX_CONNECT_ERRORS_KEPT: Final = 20
"""Errors of a failing connect kept to say why it failed (the first telling one wins)."""
PROBE_AFTER_S: Final = 0.2
"""Silence, with answers missing, before asking whether the missing gateways still exist."""
PROBE_TIMEOUT_S: Final = 0.5
"""How long a gateway that missed a cluster-wide request has to show it is still there."""
FAILURE_LOG_INTERVAL_S: Final = 5.0
"""Without an on_error callback, failures after the call log one line per interval."""

OnError = Callable[[FailedPublish], None]


class Publisher:
    """Connect with `await Publisher.connect(...)`; close with `await pub.close()` or
    `async with`. Safe to share between tasks of one event loop.

    Through a NATS outage, `broadcast`/`blast` are held (publisher.hold) until the
    gateways known before it are back, at most `hold_timeout_s` after the reconnect and
    `hold_max_bytes` in all (beyond that they raise TransportError at their call). Held
    messages published before every gateway was back are reported, one `FailedPublish`
    each, to `on_error` (else logged) and counted in `failed_total` and
    `sailcast_publisher_errors_total`.

    A broadcast to a history room returns once sent; its PubAck is checked in the
    background, at most `stored_window` awaiting theirs at a time (publisher/pipeline.py).
    One that fails (not stored, or not confirmed within `request_timeout_s`) is reported
    the same way, and raised as PublishFailed by the next `flush()` (which waits for
    every pending ack) or, if that comes first, by the next `broadcast`/`blast` before
    it sends anything. `broadcast(..., wait_stored=True)` waits for its own ack."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        prefix: str,
        max_payload_bytes: int,
        request_timeout_s: float,
        stats: PublisherStats,
        on_error: OnError | None = None,
        hold_timeout_s: float = DEFAULT_HOLD_TIMEOUT_S,
        hold_max_bytes: int = DEFAULT_HOLD_MAX_BYTES,
        stored_window: int = DEFAULT_STORED_WINDOW,
    ) -> None:
        from publisher.sockets import Sockets

        self._nc = nc
        self.subjects = Subjects(prefix)
        self.max_payload_bytes = max_payload_bytes
        self.request_timeout_s = request_timeout_s
        self.stats = stats
        self._closed = False
        self._on_error = on_error
        self._failed_total = 0
        self._log_after = 0.0
        self._hold = OutageHold(
            timeout_s=hold_timeout_s, max_bytes=hold_max_bytes, report=self._report
        )
        self._release: asyncio.Task[None] | None = None
        self._inbox = ""
        self._stored_failures = FailureBook()
        """Stored publishes that failed after their call, for the next flush."""
        self.keeps_stored_failures = True
        """False: only on_error hears of them (a SyncPublisher's, which keeps them for
        its own flush; its queued broadcasts never call `raise_stored_failures`)."""
        self.sockets = Sockets(self)
        self.room_queries = RoomQueries(
            nc,
            self.subjects,
            timeout_s=request_timeout_s,
            stats=stats,
            ask_all=self.ask_all_gateways,
        )
        """Members and counts (publisher/members.py), behind `sockets.members`/`count`."""
        self._stored = StoredPublishing(
            nc,
            prefix=prefix,
            timeout_s=request_timeout_s,
            stats=stats,
            apply=self.sockets.use_history,
            window=stored_window,
            report=self._stored_failed,
        )

    @classmethod
    async def connect(
        cls,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        prefix: str = "sailcast",
        nats_settings: NatsSettings | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        registry: Any = None,
        name: str = "sailcast-publisher",
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        on_error: OnError | None = None,
        hold_timeout_s: float = DEFAULT_HOLD_TIMEOUT_S,
        hold_max_bytes: int = DEFAULT_HOLD_MAX_BYTES,
        stored_window: int = DEFAULT_STORED_WINDOW,
    ) -> Publisher:
        """Fails with TransportError if no server answers within connect_timeout_s;
        once connected, reconnects forever by itself.

        `registry`: a prometheus_client CollectorRegistry to expose our counters on.
        `on_error(failure)`: hears of every message that failed after its call returned
        (see the class docstring); it runs on this event loop: keep it short.
        `hold_timeout_s`, `hold_max_bytes`: the bounds of the outage hold.
        `stored_window`: history-room publishes awaiting their PubAck at most."""
        settings = nats_settings or NatsSettings(servers=parse_servers(servers))
        stats = PublisherStats(registry)
        Subjects(prefix)  # validate before connecting
        if hold_timeout_s < 0 or hold_max_bytes < 0:
            raise ValueError("hold_timeout_s and hold_max_bytes cannot be negative")
        if stored_window < 1:
            raise ValueError(f"stored_window must be at least 1, got {stored_window}")

        errors: list[Exception] = []
        built: list[Publisher] = []

        async def on_nats_error(exc: Exception) -> None:
            if len(errors) < MAX_CONNECT_ERRORS_KEPT:
                errors.append(exc)
            log.warning("nats: %s", exc)

        async def on_disconnect() -> None:
            if built:
                built[0]._hold.start()

        async def on_reconnect() -> None:
            stats.reconnects += 1
            log.info("publisher reconnected to NATS")
            if built:
                built[0]._reconnected()

        nc = NatsClient()
        try:
            await asyncio.wait_for(
                nc.connect(
                    name=name,
                    error_cb=on_nats_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                    # every subject comes from shared.subjects, valid by construction
                    skip_subject_validation=True,
                    **settings.connect_kwargs(),
                ),
                connect_timeout_s,
            )
        except Exception as exc:
            await _close_quietly(nc)
            # a refusal (say, "Authorization Violation") reaches only the error callback;
            # the timeout that follows says nothing
            cause = _telling(errors) or exc
            raise TransportError(
                f"cannot connect to NATS at {settings.describe()}: {cause or type(cause).__name__}"
            ) from exc
        pub = cls(
            nc,
            prefix=prefix,
            max_payload_bytes=max_payload_bytes,
            request_timeout_s=request_timeout_s,
            stats=stats,
            on_error=on_error,
            hold_timeout_s=hold_timeout_s,
            hold_max_bytes=hold_max_bytes,
            stored_window=stored_window,
        )
        try:
            await pub._watch_gateways()
        except Exception as exc:
            await _close_quietly(nc)
            raise TransportError(f"cannot subscribe to the gateways' heartbeats: {exc}") from exc
        await pub._stored.read_rules()  # which rooms keep history (publisher/stored.py)
        pub._stored.start()
        built.append(pub)
        return pub

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    @property
    def holding(self) -> bool:
        """Broadcasts and blasts are being held (NATS unreachable, or back but the
        gateways not yet): a publish now is held, or raises if the hold is full."""
        nc = self._nc
        return (self._hold.active or not nc.is_connected) and not nc.is_closed

    @property
    def known_gateways(self) -> list[str]:
        """The gateways heard from lately: the ones an outage hold would wait for."""
        return self._hold.gateways()

    @property
    def history_rules(self) -> HistoryRules:
        """The rooms whose broadcasts are stored (read from the history stream the
        gateways keep; empty: no stream, every room on the core path)."""
        return self._stored.rules

    @property
    def stored_pending(self) -> int:
        """History-room publishes sent and still awaiting their PubAck."""
        return self._stored.pipeline.pending

    @property
    def failed_total(self) -> int:
        """Messages reported as failed after their call returned (see the class)."""
        return self._failed_total

    @property
    def nats(self) -> NatsClient:
        """The nats-py client underneath, for worker-side services (publisher.router)."""
        self._check_open()
        return self._nc

    @property
    def closed(self) -> bool:
        return self._closed

    def model(self, identity: str) -> Model:
        """The resourceful pub/sub API of one Sails model (see publisher.models)."""
        return Model(self, identity)

    async def close(self) -> None:
        """Flush what was published, then disconnect. What an outage still holds gets
        up to `hold_timeout_s` to go out, and stored publishes up to `request_timeout_s`
        for their acks; what remains is reported as failed."""
        if self._closed:
            return
        self._closed = True
        self._stored.stop()
        if self._hold.active:
            await self._hold.wait_released(self._hold.timeout_s)
            if self._release is not None:
                self._release.cancel()
            self._hold.give_up("the publisher was closed while NATS was unreachable")
        pipeline = self._stored.pipeline
        await pipeline.settle(self.request_timeout_s + 0.5)  # each one times out by then
        pipeline.close()
        try:
            await self._nc.drain()
        except Exception:
            await self._nc.close()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until NATS has received everything published so far, held messages
        included, and every stored publish has its PubAck (TransportError if not all
        within `timeout`). Raises PublishFailed if stored publishes failed since the
        last flush (the flush's own failure, if any, as its cause)."""
        self._check_open()
        flush_error: TransportError | None = None
        try:
            await self.settle(timeout)
        except TransportError as exc:
            flush_error = exc
        failed = self._stored_failures.take()
        if failed is not None:
            raise failed from flush_error
        if flush_error is not None:
            raise flush_error

    def raise_stored_failures(self) -> None:
        """Raise PublishFailed if stored publishes failed since the last flush (taking
        them: a flush does not raise them again). `broadcast` and `blast` call it before
        sending anything, so a worker that never flushes hears of them at its next
        publish, whose own message then was not sent."""
        if self._stored_failures.count:
            failed = self._stored_failures.take()
            if failed is not None:
                raise failed

    async def settle(self, timeout: float = 5.0) -> None:
        """`flush` without raising the stored failures: for the SyncPublisher, which
        hears of them through on_error and raises them from its own flush."""
        self._check_open()
        started = time.monotonic()
        if not await self._hold.wait_released(timeout):
            raise TransportError(
                f"flush: {self._hold.held} message(s) still held after {timeout}s (NATS "
                "unreachable, or the gateways not back yet)"
            )
        remaining = max(0.001, timeout - (time.monotonic() - started))
        try:
            await self._nc.flush(timeout=math.ceil(remaining))
        except Exception as exc:
            raise TransportError(f"flush failed: {exc}") from exc
        remaining = max(0.001, timeout - (time.monotonic() - started))
        pipeline = self._stored.pipeline
        if not await pipeline.settle(remaining):
            raise TransportError(
                f"flush: {pipeline.pending} stored publish(es) still without their PubAck "
                f"after {timeout}s"
            )

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise PublisherClosed("this publisher was closed")

    # -- the outage hold --------------------------------------------------------------
    async def _watch_gateways(self) -> None:
        """Hear the gateways' heartbeats, and the answers to our pings after a reconnect:
        what the outage hold waits for."""

        async def on_heartbeat(msg: Any) -> None:
            try:
                beat = decode_heartbeat(msg.data)
            except MalformedEnvelope:
                return
            if beat is not None:
                self._hold.heard(beat.id, down=beat.down)

        async def on_answer(msg: Any) -> None:
            try:
                reply = decode_reply(msg.data, Applied)
            except MalformedEnvelope:
                return
            if reply.gw is not None:
                self._hold.heard(reply.gw)

        self._inbox = self._nc.new_inbox()
        await self._nc.subscribe(self.subjects.heartbeat, cb=on_heartbeat)
        await self._nc.subscribe(self._inbox, cb=on_answer)

    def _reconnected(self) -> None:
        self._stored.reread_soon()
        if self._release is not None:
            self._release.cancel()
        if self._hold.active:
            self._release = asyncio.ensure_future(
                self._hold.release(self._publish_held, self._ping_gateways, lambda: self.connected)
            )

    async def _ping_gateways(self) -> None:
        try:
            await self._nc.publish(
                self.subjects.gateways, encode_request(Ping()), reply=self._inbox
            )
        except Exception:
            log.debug("ping to the gateways not sent", exc_info=True)

    async def _publish_held(self, subject: str, body: bytes, kind: str) -> None:
        try:
            await self._nc.publish(subject, body)
        except Exception as exc:
            raise TransportError(f"publish failed ({kind}): {exc}") from exc
        self.stats.published(kind)

    def _stored_failed(self, failure: FailedPublish) -> None:
        """A stored publish failed after its call returned: kept for the next flush,
        then reported as any other."""
        if self.keeps_stored_failures:
            self._stored_failures.add(failure)
        self._report(failure, counted=True)

    def _report(self, failure: FailedPublish, *, counted: bool = False) -> None:
        """One message that failed after its call returned: counted, then on_error."""
        self._failed_total += 1
        if not counted:  # publisher/pipeline.py counts its own (with a reason)
            self.stats.error(failure.kind)
        if self._on_error is not None:
            try:
                self._on_error(failure)
            except Exception:
                log.exception("the publisher's on_error callback raised")
            return
        now = time.monotonic()
        if now >= self._log_after:
            self._log_after = now + FAILURE_LOG_INTERVAL_S
            log.error(
                "%s (%d failed so far; logged at most every %ss)",
                failure,
                self._failed_total,
                FAILURE_LOG_INTERVAL_S,
            )

    # -- patterns the verbs use -------------------------------------------------------
    async def publish_raw(self, subject: str, body: bytes, kind: str) -> None:
        if self._closed:  # _check_open, inline: once per message
            raise PublisherClosed("this publisher was closed")
        nc = self._nc
        if (self._hold.active or not nc.is_connected) and not nc.is_closed:
            self._hold.start()
            try:
                self._hold.put(subject, body, kind)
            except TransportError:
                self.stats.error(kind)
                raise
            return
        try:
            await self._nc.publish(subject, body)
        except Exception as exc:
            self.stats.error(kind)
            raise TransportError(f"publish failed ({kind}): {exc}") from exc
        self.stats.published(kind)

    async def publish_stored(
        self, subject: str, body: bytes, kind: str, headers: dict[str, str], *, wait: bool = False
    ) -> asyncio.Future[None] | None:
        """A history room's message, stored through JetStream: returns once sent, its
        ack checked in the background (publisher/pipeline.py); with `wait`, a future
        of the ack (not held through an outage: publisher/stored.py says why)."""
        if self._closed:
            raise PublisherClosed("this publisher was closed")
        return await self._stored.publish(subject, body, kind, headers, wait=wait)

    async def ask_socket(self, socket_id: str, req: SocketRequest) -> Done | RoomsOf:
        """Ask the gateway holding socket_id; NoSuchSocket at once if none does."""
        self._check_open()
        kind = req.kind.value
        subject = self.subjects.socket(socket_id)
        started = time.perf_counter()
        try:
            msg = await self._nc.request(
                subject, encode_request(req), timeout=self.request_timeout_s
            )
        except NoRespondersError:
            self.stats.request(kind, "no_such_socket", started)
            raise NoSuchSocket(socket_id) from None
        except NatsTimeoutError as exc:
            self.stats.request(kind, "timeout", started)
            raise GatewayTimeout(
                f"the gateway of socket {socket_id!r} did not answer {kind!r} "
                f"within {self.request_timeout_s}s"
            ) from exc
        except Exception as exc:
            self.stats.request(kind, "error", started)
            raise TransportError(f"{kind} request for {socket_id!r} failed: {exc}") from exc
        reply: Done | RoomsOf | Refused = (
            decode_reply(msg.data, RoomsOf)
            if isinstance(req, Rooms)
            else decode_reply(msg.data, Done)
        )
        if isinstance(reply, Refused):
            self.stats.request(kind, reply.error.value, started)
            if reply.error is ErrorCode.NO_SUCH_SOCKET:
                raise NoSuchSocket(socket_id)
            if reply.error is ErrorCode.LIMIT:
                raise LimitExceeded(reply.message or "limit exceeded")
            raise TransportError(f"gateway refused {kind!r}: {reply.message or reply.error}")
        self.stats.request(kind, "ok", started)
        return reply

    async def ask_all_gateways(self, req: ClusterRequest) -> list[Applied]:
        """Send to every gateway; return when every gateway any of them knows has answered.

        Each answer lists the gateways its sender has heard from (heartbeats), so the
        set to wait for grows with the answers and needs no state here. A missing gateway
        is probed on its own subject: one that has gone (crashed, its heartbeat not yet
        expired) holds no sockets and is not waited for; one still there that does not
        answer by the timeout raises GatewayTimeout naming it, because the change is not
        known to be in effect on it.
        """
        self._check_open()
        kind = req.kind.value
        started = time.perf_counter()
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox)
        replies: dict[str, Applied] = {}
        refusals: dict[str, Refused] = {}
        expected: set[str] = set()
        try:
            # The inbox SUB precedes this PUB on our connection, so no flush is needed.
            await self._nc.publish(self.subjects.gateways, encode_request(req), reply=inbox)
            deadline = time.monotonic() + self.request_timeout_s
            gone: set[str] = set()  # listed as peers, but their process has ended
            probed = False
            while True:
                waiting = expected - replies.keys() - refusals.keys() - gone
                if expected and not waiting:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    silent = await self._still_running(waiting)
                    if silent or not expected:
                        self.stats.request(kind, "timeout", started)
                        raise GatewayTimeout(
                            f"{kind!r}: gateway(s) {', '.join(silent) or '(any)'} did not "
                            f"confirm within {self.request_timeout_s}s; the change may "
                            "still apply there"
                        )
                    break  # the silent ones have gone since
                # Answers come within milliseconds; after a short silence, find out at
                # once whether the missing ones still exist (a crash leaves its peers
                # listing it for 3 heartbeats) instead of waiting out the timeout.
                quick = bool(expected) and not probed
                try:
                    msg = await sub.next_msg(
                        timeout=min(remaining, PROBE_AFTER_S) if quick else remaining
                    )
                except NatsTimeoutError:
                    if quick:
                        probed = True
                        gone |= waiting - set(await self._still_running(waiting))
                    continue
                if msg.headers and msg.headers.get("Status") == NO_RESPONDERS_STATUS:
                    break  # no gateway is running: nothing holds members
                try:
                    reply = decode_reply(msg.data, Applied)
                except MalformedEnvelope:
                    log.warning("ignored a malformed answer to %s", kind)
                    continue
                if isinstance(reply, Refused):
                    if reply.gw is None:  # it cannot say who it is: nothing to wait on
                        log.warning("a gateway refused %s: %s", kind, reply.message)
                        continue
                    refusals[reply.gw] = reply
                    expected.update(reply.peers or ())
                    expected.add(reply.gw)
                    continue
                replies[reply.gw] = reply
                expected.update(reply.peers)
                expected.add(reply.gw)
            if refusals:
                refusal = refusals[min(refusals)]
                self.stats.request(kind, refusal.error.value, started)
                raise TransportError(
                    f"{kind!r}: gateway(s) {', '.join(sorted(refusals))} refused it "
                    f"({refusal.error.value}: {refusal.message}); the others applied it"
                )
            self.stats.request(kind, "ok", started)
        except (asyncio.CancelledError, GatewayTimeout):
            raise
        except TransportError:
            raise
        except Exception as exc:
            self.stats.request(kind, "error", started)
            raise TransportError(f"{kind} request to the gateways failed: {exc}") from exc
        finally:
            try:
                await sub.unsubscribe()
            except Exception:
                log.debug("inbox unsubscribe failed", exc_info=True)
        return list(replies.values())

    async def _still_running(self, gateway_ids: set[str]) -> list[str]:
        """Those of `gateway_ids` still subscribed to their own subject. NATS drops a
        dead process's subscriptions with its connection, so a gone gateway answers
        "no responders" at once; a live or frozen one answers or times out."""

        async def running(gw: str) -> bool:
            try:
                await self._nc.request(
                    self.subjects.gateway(gw), encode_request(Ping()), timeout=PROBE_TIMEOUT_S
                )
            except NoRespondersError:
                return False
            except Exception:
                return True  # silent, or we cannot tell: not known to be gone
            return True

        ids = sorted(gateway_ids)
        alive = await asyncio.gather(*(running(gw) for gw in ids))
        return [gw for gw, up in zip(ids, alive, strict=True) if up]


async def _close_quietly(nc: NatsClient) -> None:
    try:
        await nc.close()
    except Exception:
        log.debug("closing a half-open NATS client failed", exc_info=True)


def _telling(errors: list[Exception]) -> Exception | None:
    """Why a connect failed: what the server refused it with, over the transport errors
    that follow a refusal (the server closes at once, and a reset can arrive before, or
    instead of, its -ERR on a retry)."""
    for exc in errors:
        if not isinstance(exc, OSError | TimeoutError):
            return exc
    return errors[-1] if errors else None
