"""The async publisher: one NATS connection, the subjects, and the request patterns the
verbs are built from (fire-and-forget publish, ask one socket's gateway, ask every
gateway and wait for all of them)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final

from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from publisher.models.model import Model
from publisher.stats import PublisherStats
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
    decode_reply,
    encode_request,
)
from shared.envelope import DEFAULT_MAX_PAYLOAD_BYTES
from shared.errors import (
    GatewayTimeout,
    LimitExceeded,
    MalformedEnvelope,
    NoSuchSocket,
    PublisherClosed,
    TransportError,
)
from shared.subjects import Subjects

log = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT_S: Final = 2.0
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
NO_RESPONDERS_STATUS: Final = "503"
PROBE_AFTER_S: Final = 0.2
"""Silence, with answers missing, before asking whether the missing gateways still exist."""
PROBE_TIMEOUT_S: Final = 0.5
"""How long a gateway that missed a cluster-wide request has to show it is still there."""


class Publisher:
    """Connect with `await Publisher.connect(...)`; close with `await pub.close()` or
    `async with`. Safe to share between tasks of one event loop."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        prefix: str,
        max_payload_bytes: int,
        request_timeout_s: float,
        stats: PublisherStats,
    ) -> None:
        from publisher.sockets import Sockets

        self._nc = nc
        self.subjects = Subjects(prefix)
        self.max_payload_bytes = max_payload_bytes
        self.request_timeout_s = request_timeout_s
        self.stats = stats
        self._closed = False
        self.sockets = Sockets(self)

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
    ) -> Publisher:
        """Fails with TransportError if no server answers within connect_timeout_s;
        once connected, reconnects forever by itself.

        `registry`: a prometheus_client CollectorRegistry to expose our counters on."""
        settings = nats_settings or NatsSettings(servers=parse_servers(servers))
        stats = PublisherStats(registry)
        Subjects(prefix)  # validate before connecting

        last_error: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            last_error[:] = [exc]
            log.warning("nats: %s", exc)

        async def on_reconnect() -> None:
            stats.reconnects += 1
            log.info("publisher reconnected to NATS")

        nc = NatsClient()
        try:
            await asyncio.wait_for(
                nc.connect(
                    name=name,
                    error_cb=on_error,
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
            cause = last_error[0] if last_error else exc
            raise TransportError(
                f"cannot connect to NATS at {settings.describe()}: {cause or type(cause).__name__}"
            ) from exc
        return cls(
            nc,
            prefix=prefix,
            max_payload_bytes=max_payload_bytes,
            request_timeout_s=request_timeout_s,
            stats=stats,
        )

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

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
        """Flush what was published, then disconnect."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._nc.drain()
        except Exception:
            await self._nc.close()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until NATS has received everything published so far."""
        self._check_open()
        try:
            await self._nc.flush(timeout=math.ceil(timeout))
        except Exception as exc:
            raise TransportError(f"flush failed: {exc}") from exc

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise PublisherClosed("this publisher was closed")

    # -- patterns the verbs use -------------------------------------------------------
    async def publish_raw(self, subject: str, body: bytes, kind: str) -> None:
        if self._closed:  # _check_open, inline: once per message
            raise PublisherClosed("this publisher was closed")
        try:
            await self._nc.publish(subject, body)
        except Exception as exc:
            self.stats.error(kind)
            raise TransportError(f"publish failed ({kind}): {exc}") from exc
        self.stats.published(kind)

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
