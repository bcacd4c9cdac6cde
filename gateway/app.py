"""Process wiring: Socket.IO listener, ops listener, NATS, signals and graceful drain."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import sys
from collections.abc import Sequence
from typing import Any, Final

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import pages
from gateway.api import HttpApi
from gateway.auth import ConnectHooks
from gateway.broker.nats_broker import NatsBroker
from gateway.client_events import ClientEvents
from gateway.directory import open_directory
from gateway.engine import (
    ClientEvent,
    CloseReason,
    Connection,
    ConnectRefused,
    Engine,
    EngineOptions,
    HandshakeRequest,
    OutboundPacket,
    new_id,
)
from gateway.fd_reserve import FD_RESERVE, FdReserve
from gateway.history.feed import HistoryFeed
from gateway.history.stream import HistoryStream
from gateway.logs import Throttled
from gateway.metrics import GatewayMetrics
from gateway.node import Gateway
from gateway.recovery.recover import Claim, Lookup, Recovery, read_claim
from gateway.recovery.sessions import SessionStore, open_bucket
from gateway.settings import GatewaySettings
from gateway.vrequests import VirtualRequests
from publisher.client import Publisher
from shared.errors import TransportError
from shared.history import sessions_bucket

log = logging.getLogger(__name__)

DRAIN_BATCHES_PER_S = 10
MAX_NATS_RETRY_S = 5.0
SHUTDOWN_GRACE_S: Final = 2.0
"""At stop, after the drain: how long aiohttp waits for requests and websockets still
open before closing them hard (its default, 60 s, outlasts any drain deadline and a
pod's grace period, so a stop with one stuck connection was killed instead)."""
API_CLOSE_TIMEOUT_S: Final = 5.0
"""Most a stopping gateway waits for its HTTP API publisher to flush and drain."""
MAX_HEADER_LINE: Final = 8190
"""aiohttp's (and Node's) bound on one request line or header line."""

HOOK_REASONS: Final = {
    CloseReason.CLIENT: "client disconnect",
    CloseReason.SERVER: "server disconnect",
    CloseReason.PING: "ping timeout",
    CloseReason.TRANSPORT_CLOSE: "transport close",
    CloseReason.TRANSPORT_ERROR: "transport error",
    CloseReason.SLOW_CLIENT: "server disconnect",
    CloseReason.GOING_AWAY: "transport close",
}
"""The reason workers' after-disconnect hook is told: Socket.IO's words, as before."""
GOODBYES: Final = frozenset({CloseReason.CLIENT, CloseReason.SERVER})
"""Disconnects that end a session for good, as Socket.IO 4's recovery counts them (the
client's `disconnect()`, a worker's `sockets.disconnect`): nothing to recover."""


class GatewayApp:
    """Everything one gateway process runs; `start` returns the bound ports. It is
    the engine's `EngineEvents`: connects, disconnects and client events land here."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.engine = Engine(
            EngineOptions.of(settings),
            self,
            on_refusal=lambda reason: self.metrics.refusals.labels(reason).inc(),
            on_origin_refused=self.metrics.connect_rejections.labels("origin").inc,
            on_slow=self._slow,
        )
        self.gateway: Gateway | None = None
        self.broker: NatsBroker | None = None
        self.history_stream: HistoryStream | None = None
        self._history_refresh: asyncio.Task[None] | None = None
        self._runners: list[web.AppRunner] = []
        self._servers: list[asyncio.Server] = []
        self.port = 0
        self.metrics_port = 0
        self.api_port = 0
        self.api_publisher: Publisher | None = None
        self.hooks: ConnectHooks | None = None
        self.sessions: SessionStore | None = None
        self.recovery: Recovery | None = None
        self.vrequests: VirtualRequests | None = None
        self.client_events: ClientEvents | None = None
        self._warnings = Throttled(log)

    async def start(self) -> None:
        """Ops port first (so probes answer while NATS is away), then NATS — retried
        until it answers — then the Socket.IO port."""
        s = self.settings
        ops = web.Application()
        ops.router.add_get("/metrics", self._metrics)
        ops.router.add_get("/healthz", self._healthz)
        ops.router.add_get("/readyz", self._readyz)
        listen = s.listen
        self.metrics_port = await self._listen(
            ops, listen.metrics_host or listen.host, listen.metrics_port
        )

        self.broker = await self._connect_nats()
        if s.history.enabled:
            self.history_stream = await self._ensure_history(self.broker)
        directory = await open_directory(
            self.broker.client,
            prefix=s.prefix,
            gateway_id=s.gateway_id,
            replicas=s.history.history_replicas,
            on_write=lambda op, result: self.metrics.directory_writes.labels(op, result).inc(),
        )
        self.gateway = Gateway(
            s, self.broker, self.metrics, history_stream=self.history_stream, directory=directory
        )
        await self.gateway.start()
        self.metrics.nats_connected.set(1)
        # sails.io.js clients: connection hooks and virtual requests (auth.py, vrequests.py)
        self.hooks = ConnectHooks(
            s.connect,
            gateway_id=s.gateway_id,
            subjects=s.subjects,
            broker=self.broker,
            metrics=self.metrics,
            max_rooms_per_socket=s.core.max_rooms_per_socket,
        )
        self.vrequests = VirtualRequests(
            s.vrequests,
            gateway_id=s.gateway_id,
            subjects=s.subjects,
            max_payload_bytes=s.engine.max_payload_bytes,
            broker=self.broker,
            metrics=self.metrics,
            emit=self._emit_to,
        )
        self._vrequest_events = frozenset(self.vrequests.events)
        if s.history.enabled:
            await self._start_recovery()
        self.client_events = ClientEvents(
            self.vrequests,
            gateway_id=s.gateway_id,
            subjects=s.subjects,
            max_payload_bytes=s.engine.max_payload_bytes,
            timeout_s=s.vrequests.virtual_request_timeout_s,
            broker=self.broker,
            metrics=self.metrics,
        )

        app = web.Application()
        self.engine.attach(app)
        pages.add_routes(app, s.pages)  # the live demo page, when configured
        self.port = await self._listen_clients(app)
        if s.api.enabled:
            self.api_port = await self._start_api()
        self.metrics.ready.set(1 if self.gateway.ready else 0)

    async def _start_recovery(self) -> None:
        """Sessions and recovery (gateway/recovery/), when history is on: the sessions
        bucket is created (or bound) before the first client connects."""
        s = self.settings
        assert self.gateway is not None
        assert self.broker is not None
        feed = self._history_feed()
        if feed is None:
            log.warning("history is on but no history feed runs: connection-state recovery off")
            return
        bucket = await open_bucket(
            self.broker.client.jetstream(), sessions_bucket(s.prefix), s.history
        )
        self.sessions = SessionStore(
            bucket,
            gateway_id=s.gateway_id,
            window_s=s.history.recovery_window_s,
            epoch=lambda: feed.epoch,
            on_write=lambda result: self.metrics.session_writes.labels(result).inc(),
        )
        self.sessions.start()
        self.recovery = Recovery(
            gateway=self.gateway,
            store=self.sessions,
            feed=feed,
            rules=s.history.rules,
            broker=self.broker,
            subjects=s.subjects,
            gateway_id=s.gateway_id,
            replay_max_bytes=s.engine.max_buffered_bytes,
            count=lambda outcome, reason: self.metrics.recoveries.labels(outcome, reason).inc(),
        )
        self.gateway.on_evicted = self._evicted

    def _history_feed(self) -> HistoryFeed | None:
        """The live history path (gateway/history/feed.py)."""
        return self.gateway.feed if self.gateway is not None else None

    def _evicted(self, sid: str) -> None:
        """Taken over: the socket lives on elsewhere; no after-disconnect notice."""
        if self.vrequests is not None:
            self.vrequests.forget(sid)
        if self.sessions is not None:
            self.sessions.forget(sid)

    async def _start_api(self) -> int:
        """The HTTP server API (gateway/api.py) on its own port, on a publisher of its
        own: the same operations, over the same NATS, as any worker's."""
        s = self.settings
        self.api_publisher = await Publisher.connect(
            prefix=s.prefix,
            nats_settings=s.nats,
            max_payload_bytes=s.engine.max_payload_bytes,
            name=f"sailcast-api-{s.gateway_id}",
        )
        api = HttpApi(
            s.api,
            self.api_publisher.sockets,
            self.metrics,
            max_body_bytes=s.engine.max_payload_bytes,
        )
        return await self._listen(
            api.application(), s.api.api_host or s.listen.host, s.api.api_port
        )

    async def _connect_nats(self) -> NatsBroker:
        s = self.settings
        delay = 0.5
        while True:
            try:
                return await NatsBroker.connect(s.nats, name=f"sailcast-gateway-{s.gateway_id}")
            except TransportError as exc:
                log.error("NATS unreachable, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_NATS_RETRY_S)

    async def _ensure_history(self, broker: NatsBroker) -> HistoryStream:
        """Create or reconcile the history stream (TransportError naming JetStream when
        it cannot: the gateway does not start half-configured), then keep it read."""
        s = self.settings
        stream = await HistoryStream.ensure(broker.client, s.subjects, s.history)
        self.metrics.history_stream_messages.set_function(lambda: stream.messages)
        self.metrics.history_stream_bytes.set_function(lambda: stream.bytes)
        self._history_refresh = asyncio.create_task(stream.keep_fresh(), name="history-refresh")
        if stream.rules.rule_for(new_id()) is None:
            log.warning(
                "history rules %r do not cover socket ids: what a worker sends to one "
                "socket's id while it is away is not stored, so a recovered socket does not "
                "get it (add a '*=N/AGE' rule to store it; docs/recovery.md)",
                stream.rules.text,
            )
        return stream

    async def _listen(self, app: web.Application, host: str, port: int) -> int:
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE_S
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=2048)
        await site.start()
        self._runners.append(runner)
        address: Any = runner.addresses[-1]
        bound: int = address[1]
        return bound

    async def _listen_clients(self, app: web.Application) -> int:
        """The Socket.IO port: aiohttp's header limits and handshake timeout (its
        keep-alive timer runs from the accept, so a connection that sends no complete
        request is closed), behind the fd reserve (gateway/fd_reserve.py)."""
        listen = self.settings.listen
        line = min(MAX_HEADER_LINE, listen.max_header_bytes)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=listen.handshake_timeout_s,
            shutdown_timeout=SHUTDOWN_GRACE_S,
            max_line_size=line,
            max_field_size=line,
        )
        await runner.setup()
        assert runner.server is not None
        reserve = FdReserve(runner.server, listen.fd_reserve, self._fd_refused)
        server = await asyncio.get_running_loop().create_server(
            reserve, listen.host, listen.port, backlog=2048, reuse_address=True
        )
        self._runners.append(runner)
        self._servers.append(server)
        bound: int = server.sockets[0].getsockname()[1]
        return bound

    def _fd_refused(self, connections: int, reserve: int) -> None:
        self.metrics.refusals.labels(FD_RESERVE).inc()
        self._warnings.warning(
            FD_RESERVE,
            "refused a client connection: %d client connections open and %d file "
            "descriptors kept for the ops port and NATS (RLIMIT_NOFILE %d)",
            connections,
            reserve,
            resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )

    # -- EngineEvents ------------------------------------------------------------------
    async def connected(
        self, conn: Connection, request: HandshakeRequest, auth: Any
    ) -> Sequence[OutboundPacket] | None:
        try:
            return await self._admit(conn, request, auth)
        except ConnectionRefusedError as exc:  # the client sees this message
            raise ConnectRefused(str(exc)) from None

    async def _admit(
        self, conn: Connection, request: HandshakeRequest, auth: Any
    ) -> Sequence[OutboundPacket] | None:
        assert self.gateway is not None
        assert self.hooks is not None
        assert self.vrequests is not None
        sid = fresh_sid = conn.sid
        self._check_room_for(sid)  # before asking anyone
        recovery = self.recovery
        claim: Claim | None = None
        lookup: Lookup | None = None
        granted: Any = {}
        if recovery is not None:
            claim, auth = read_claim(conn.protocol, request, auth)
            if claim.capable:
                conn.offsets = True
                lookup = await recovery.look_up(claim)
                session = lookup.session
                if session is not None:
                    sid = session.record.sid  # the hook is asked about the socket it was
                    if self.settings.history.recovery_skip_connect_hook:
                        granted = {"granted": session.record.data, "who": session.who}
        admission = await self.hooks.admit(sid, request, auth, **granted)  # origins, check
        handshake, admitted = admission.handshake, admission.admitted
        if conn.closed:  # left while a worker was deciding
            raise ConnectionRefusedError("gone")
        # Again: other sockets may have been admitted, or a drain begun, while this one
        # waited for its before-connect check. From here to the registration in
        # socket_connected nothing awaits, so the limit cannot be overshot.
        self._check_room_for(sid)
        replay: Sequence[OutboundPacket] | None = None
        try:
            if recovery is not None and claim is not None and lookup is not None:
                # recovered (old sid, its rooms, what it missed) or fresh (new pid)
                replay = await recovery.admit(conn, claim, lookup, handshake.claims, admitted)
            else:
                await self.gateway.socket_connected(
                    conn, identity=admitted.identity, rooms=admitted.rooms
                )
        except TransportError as exc:
            log.warning("refused socket: %s", exc, extra={"sid": conn.sid})
            raise ConnectionRefusedError("gateway cannot reach NATS; reconnect") from exc
        sid = conn.sid
        self.vrequests.track(sid, handshake)
        log.debug("connected", extra={"sid": sid, "remote": handshake.address})
        self.metrics.connects.inc()
        if sid == fresh_sid:  # a recovered socket never left: no after-connect notice
            self.hooks.connected(sid, handshake, admitted)
        return replay

    async def disconnected(self, sid: str, reason: CloseReason) -> None:
        if self.sessions is not None:  # recoverable for the window from now, or ended
            self.sessions.closed(sid, recoverable=reason not in GOODBYES)
        await self._on_disconnect(sid, HOOK_REASONS.get(reason, str(reason)))

    async def event(self, event: ClientEvent) -> Any:
        """Virtual requests and client events (the ack carries the worker's answer)."""
        if self.vrequests is None or self.client_events is None:
            return None
        if event.event in self._vrequest_events:
            return await self.vrequests.handle(event.sid, event.event, event.args, event.wants_ack)
        return await self.client_events.handle(event.sid, event.event, event.args, event.wants_ack)

    def _slow(self, sid: str, reason: str) -> None:
        if self.gateway is not None:
            self.gateway.cut_off_slow(sid, reason)

    async def _emit_to(self, sid: str, event: str, data: Any) -> None:
        """One event to one local socket (not the fan-out path)."""
        conn = self.gateway.connection(sid) if self.gateway is not None else None
        if conn is not None:
            conn.emit(event, data)

    def _check_room_for(self, sid: str) -> None:
        """Refuse a new socket while draining or at --max-connections (its client gets
        the message as its connect error)."""
        assert self.gateway is not None
        if self.gateway.draining:
            self.metrics.refusals.labels("draining").inc()
            log.debug("refused socket: draining", extra={"sid": sid})
            raise ConnectionRefusedError("gateway is shutting down; reconnect")
        limit = self.settings.listen.max_connections
        if limit and self.gateway.rooms.socket_count >= limit:
            self.metrics.refusals.labels("max_connections").inc()
            self._warnings.warning(
                "max_connections",
                "refused socket: %d connections, the --max-connections limit",
                limit,
                extra={"sid": sid},
            )
            raise ConnectionRefusedError("gateway is full; reconnect later")

    async def _on_disconnect(self, sid: str, reason: str) -> None:
        assert self.gateway is not None
        self.metrics.disconnects.labels(_reason_label(reason)).inc()
        log.debug("disconnected", extra={"sid": sid, "reason": reason})
        rooms = list(self.gateway.rooms.rooms_of(sid))
        told = self.gateway.forced_reason(sid)  # what a worker's disconnect told the client
        handshake = self.vrequests.forget(sid) if self.vrequests is not None else None
        await self.gateway.socket_disconnected(sid)
        if handshake is not None and self.hooks is not None:
            self.hooks.disconnected(sid, handshake, reason, rooms, told)  # after_disconnect

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, request: web.Request) -> web.Response:
        g = self.gateway
        ready = g is not None and g.ready
        self.metrics.ready.set(1 if ready else 0)
        body = {
            "ready": ready,
            "nats_connected": bool(self.broker and self.broker.connected),
            "draining": bool(g and g.draining),
        }
        return web.json_response(body, status=200 if ready else 503)

    async def drain(self) -> None:
        """Not ready at once; after the delay, disconnect clients in paced batches so
        they reconnect to other gateways, all within the deadline; then drain NATS."""
        g = self.gateway
        if g is None:
            return
        s = self.settings
        g.draining = True
        self.metrics.ready.set(0)
        log.info("draining: not ready; disconnecting clients in %.1fs", s.drain.drain_delay_s)
        await asyncio.sleep(s.drain.drain_delay_s)
        conns = g.connections()
        ticks = max(1, int(s.drain.drain_timeout_s * DRAIN_BATCHES_PER_S * 0.8))
        batch = max(1, -(-len(conns) // ticks))
        # Paced by the clock, not by the clients: a batch's slow closers (each up to
        # GOING_AWAY_TIMEOUT_S) must not push the later batches past the deadline; at
        # the deadline `serve` cancels this, and what is still closing is aborted.
        closing: list[asyncio.Task[None]] = []
        try:
            for i in range(0, len(conns), batch):
                closing += [asyncio.create_task(c.going_away()) for c in conns[i : i + batch]]
                await asyncio.sleep(1 / DRAIN_BATCHES_PER_S)
            await asyncio.gather(*closing)
        finally:
            for task in closing:
                task.cancel()
        log.info("drained %d clients", len(conns))

    async def stop(self) -> None:
        self.engine.release_pollers()
        for server in self._servers:
            server.close()
        for runner in self._runners:
            await runner.cleanup()
        self.engine.close()
        if self.sessions is not None:
            await self.sessions.stop()  # the drain's disconnects written
        if self.gateway is not None:
            await self.gateway.stop()
        if self._history_refresh is not None:
            self._history_refresh.cancel()
            await asyncio.gather(self._history_refresh, return_exceptions=True)
        if self.api_publisher is not None:
            # bounded like the broker's drain: nats-py's own drain waits up to 30 s,
            # which held a SIGTERMed gateway past its pod's grace period
            try:
                await asyncio.wait_for(self.api_publisher.close(), timeout=API_CLOSE_TIMEOUT_S)
            except TimeoutError:
                log.warning(
                    "HTTP API publisher not drained in %g s: what it still held is lost",
                    API_CLOSE_TIMEOUT_S,
                )
        if self.broker is not None:
            try:
                await asyncio.wait_for(self.broker.drain(), timeout=5)
            except Exception:
                await self.broker.close()


def _reason_label(reason: str) -> str:
    low = reason.lower().replace(" ", "_")  # engine.io says "transport close"
    for known in ("client", "server", "ping", "transport_close", "transport_error"):
        if known in low:
            return known
    return "other"


async def serve(settings: GatewaySettings) -> None:
    app = GatewayApp(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(app.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # SIGTERM while NATS was still unreachable
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await app.stop()
        return
    starting.result()
    ready = {
        "event": "ready",
        "gateway_id": settings.gateway_id,
        "host": settings.listen.host,
        "port": app.port,
        "metrics_port": app.metrics_port,
        "api_port": app.api_port,  # 0: the HTTP API is off (no --api-key)
        # uvloop or asyncio: the bench reads it back, operators see it in the log
        "loop": type(asyncio.get_running_loop()).__module__.partition(".")[0],
    }
    sys.stdout.write(orjson.dumps(ready).decode() + "\n")
    sys.stdout.flush()
    log.info(
        "gateway %s listening on %s:%d (%s loop)",
        settings.gateway_id,
        settings.listen.host,
        app.port,
        ready["loop"],
    )
    await stopping
    try:
        await asyncio.wait_for(
            app.drain(), timeout=settings.drain.drain_delay_s + settings.drain.drain_timeout_s
        )
    except TimeoutError:
        log.warning("drain deadline passed; closing the remaining connections")
    await app.stop()
