"""Pieces the fault tests share: monitored NATS nodes that can be SIGKILLed, a raw
websocket client that can send any frame at all, a round-robin TCP balancer standing in
for a Kubernetes Service, and small measuring helpers. Everything binds 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import resource
import signal
import socket
import struct
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from gateway.embedded_nats import EmbeddedNats
from tests.support.ws_frames import OP_CLOSE, OP_TEXT, client_frame, xor_mask


def free_port() -> int:
    """A loopback port that was free a moment ago (for nats-server's cluster listener,
    which cannot be asked for port 0 and report it back)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft file limit (children inherit it); returns the new one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll cond every 50 ms; returns how long it took, fails naming `what`."""
    started = time.monotonic()
    while not cond():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def ametric(gw: Any, name: str) -> float:
    """gw.metric without blocking the event loop (clients in this loop keep running)."""
    return float(await asyncio.to_thread(gw.metric, name))


async def astatus(gw: Any, path: str) -> int:
    return int(await asyncio.to_thread(gw.http_status, path))


# -- NATS ---------------------------------------------------------------------------------


class MonitoredNats(EmbeddedNats):
    """An EmbeddedNats with its HTTP monitoring port on loopback (connz, subsz, routez),
    and a SIGKILL that leaves no chance to say goodbye to clients or routes."""

    def __init__(
        self, port: int = 0, *, extra_args: tuple[str, ...] = (), jetstream: bool = False
    ) -> None:
        self.monitor_port = free_port()
        super().__init__(
            port,
            jetstream=jetstream,
            extra_args=("-m", str(self.monitor_port), *extra_args),
        )

    def monitor(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.monitor_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return orjson.loads(resp.read())

    def client_names(self) -> list[str]:
        return [str(c.get("name", "")) for c in self.monitor("/connz?limit=1024")["connections"]]

    def subscriptions_of(self, client_name: str) -> int:
        """Subscriptions the server holds for the named client connection(s)."""
        conns = self.monitor("/connz?subs=1&limit=1024")["connections"]
        return sum(int(c.get("subscriptions", 0)) for c in conns if c.get("name") == client_name)

    def route_peers(self) -> set[str]:
        return {str(r["remote_id"]) for r in self.monitor("/routez")["routes"]}

    def server_id(self) -> str:
        return str(self.monitor("/varz")["server_id"])

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the clients and routes see their TCP connections drop, nothing else."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGKILL)
        self._proc.wait(timeout=5)


def cluster_args(name: str, my_port: int, peer_ports: list[int]) -> tuple[str, ...]:
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in peer_ports)
    return ("--cluster", f"nats://127.0.0.1:{my_port}", "--routes", routes, "--cluster_name", name)


def node_of(nodes: list[MonitoredNats], client_name: str) -> int | None:
    """The index of the live node the named client connection is on."""
    for i, n in enumerate(nodes):
        if n.alive and client_name in n.client_names():
            return i
    return None


class NatsCluster:
    """`size` MonitoredNats nodes routed into one cluster on loopback, with JetStream
    (each node named `n<i>`, its own store) or without. Nodes start when told to (a
    test may want its clients on one node before the others exist)."""

    def __init__(self, size: int = 3, *, jetstream: bool = False, name: str = "sc") -> None:
        self.jetstream = jetstream
        cports = [free_port() for _ in range(size)]
        self.nodes = [
            MonitoredNats(
                free_port(),
                jetstream=jetstream,
                extra_args=(
                    *cluster_args(name, cports[i], [p for j, p in enumerate(cports) if j != i]),
                    *(("--server_name", f"n{i}") if jetstream else ()),
                ),
            )
            for i in range(size)
        ]

    def url(self, i: int) -> str:
        return f"nats://127.0.0.1:{self.nodes[i].requested_port}"

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated (SAILCAST_NATS_URL's form)."""
        return ",".join(self.url(i) for i in range(len(self.nodes)))

    def start(self, *which: int) -> NatsCluster:
        for i in which or range(len(self.nodes)):
            self.nodes[i].start()
        return self

    async def formed(self, timeout: float = 20.0) -> None:
        """Every node routed to every other (and, with JetStream, a meta leader known to
        every node: before that a stream cannot be created)."""

        def ready() -> bool:
            want = len(self.nodes) - 1
            if not all(len(n.route_peers()) == want for n in self.nodes):
                return False
            return not self.jetstream or all(
                n.monitor("/jsz").get("meta_cluster", {}).get("leader") for n in self.nodes
            )

        await wait_until(lambda: _quietly(ready), timeout, "cluster formation")

    def node_of(self, client_name: str) -> int | None:
        """The live node the named client connection is on."""
        return node_of(self.nodes, client_name)

    def stream_cluster(self, stream: str) -> dict[str, Any]:
        """The stream's `cluster` block (leader, replicas) as a live node reports it."""
        for n in self.nodes:
            if not n.alive:
                continue
            for account in n.monitor("/jsz?streams=true")["account_details"]:
                for detail in account.get("stream_detail") or ():
                    if detail["name"] == stream:
                        return dict(detail.get("cluster") or {})
        raise AssertionError(f"no live node reports the stream {stream}")

    def leader_of(self, stream: str) -> int | None:
        """The index of the node leading `stream` (None during an election)."""
        leader = self.stream_cluster(stream).get("leader")
        return int(leader[1:]) if leader else None

    def close(self) -> None:
        for n in self.nodes:
            n.close()


def _quietly(cond: Callable[[], bool]) -> bool:
    """cond(), False while a monitoring endpoint is not answering yet."""
    try:
        return cond()
    except OSError:
        return False


# -- a raw websocket client ---------------------------------------------------------------


class HandshakeRefused(Exception):
    def __init__(self, status: int, head: bytes) -> None:
        super().__init__(f"HTTP {status}: {head[:200]!r}")
        self.status = status


class RawWebSocket:
    """An RFC 6455 client on a bare socket: it sends whatever frame it is told to, valid
    or not (bad opcodes, invalid UTF-8 in text frames, unmasked frames, stray
    continuations, oversized frames), and reads the server's frames one by one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.sid = ""

    @classmethod
    async def open(
        cls,
        port: int,
        path: str = "/socket.io/?EIO=4&transport=websocket",
        *,
        timeout: float = 10.0,
        rcvbuf: int | None = None,
    ) -> RawWebSocket:
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
                reader, writer = await asyncio.open_connection(sock=sock)
                key = base64.b64encode(os.urandom(16)).decode()
                writer.write(
                    (
                        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                    ).encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
        except BaseException:
            sock.close()
            raise
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            writer.transport.abort()
            raise HandshakeRefused(status, head)
        return cls(reader, writer)

    # -- sending ------------------------------------------------------------------------
    def send_frame(
        self,
        opcode: int,
        payload: bytes,
        *,
        fin: bool = True,
        masked: bool = True,
        rsv: int = 0,
    ) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(client_frame(opcode, payload, fin=fin, masked=masked, rsv=rsv))

    def send_text(self, text: str | bytes) -> None:
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    def send_raw(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    # -- receiving ----------------------------------------------------------------------
    async def recv(self, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The next frame, or None when the connection ended or nothing came in time."""
        try:
            async with asyncio.timeout(timeout):
                head = await self.reader.readexactly(2)
                n = head[1] & 0x7F
                if n == 126:
                    n = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                mask = await self.reader.readexactly(4) if head[1] & 0x80 else b""
                data = await self.reader.readexactly(n)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return None
        return head[0] & 0x0F, xor_mask(data, mask) if mask else data

    async def recv_text(self, timeout: float = 5.0) -> str | None:
        """The next text message, answering Engine.IO pings on the way."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.0, deadline - time.monotonic()))
            if frame is None or frame[0] == OP_CLOSE:
                return None
            if frame[0] != OP_TEXT:
                continue
            text = frame[1].decode()
            if text == "2":
                self.send_text("3")
                continue
            return text

    async def drain(self, timeout: float) -> list[tuple[int, bytes]]:
        """Whatever the server sends within `timeout` (stops early on close)."""
        out: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            frame = await self.recv(left)
            if frame is None:
                break
            out.append(frame)
            if frame[0] == OP_CLOSE:
                break
        return out

    async def eio_connect(self, timeout: float = 10.0) -> str:
        """Engine.IO OPEN, then the Socket.IO CONNECT of namespace `/`; returns the sid."""
        opened = await self.recv_text(timeout)
        if opened is None or not opened.startswith("0{"):
            raise AssertionError(f"no engine.io OPEN: {opened!r}")
        self.send_text("40")
        answer = await self.recv_text(timeout)
        if answer is None or not answer.startswith("40{"):
            raise AssertionError(f"namespace connect refused: {answer!r}")
        self.sid = str(orjson.loads(answer[2:])["sid"])
        return self.sid

    @property
    def closed(self) -> bool:
        return self.writer.is_closing() or self.reader.at_eof()

    def abort(self) -> None:
        self.writer.transport.abort()

    async def close(self) -> None:
        """A clean websocket close (1000), then the TCP connection."""
        with contextlib.suppress(Exception):
            self.send_frame(OP_CLOSE, struct.pack("!H", 1000))
            await self.writer.drain()
        self.abort()


# -- a round-robin TCP balancer -------------------------------------------------------------


class TcpBalancer:
    """What a Kubernetes Service does for new connections: round-robin over the backends
    that accept a TCP connection (a killed gateway refuses, so it is skipped). Bytes are
    piped both ways; when a backend connection dies, its client connection is closed."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = list(backends)
        self.port = 0
        self.routed: dict[int, int] = {}  # backend port -> connections routed there
        self._next = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> TcpBalancer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        for _ in range(len(self.backends)):
            port = self.backends[self._next % len(self.backends)]
            self._next += 1
            try:
                b_reader, b_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self.routed[port] = self.routed.get(port, 0) + 1
            pipes = [
                asyncio.ensure_future(_pipe(c_reader, b_writer)),
                asyncio.ensure_future(_pipe(b_reader, c_writer)),
            ]
            self._pipes.update(pipes)
            _done, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
            for w in (b_writer, c_writer):
                w.transport.abort()
            self._pipes.difference_update(pipes)
            return
        c_writer.transport.abort()  # no backend up: refuse

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for p in list(self._pipes):
            p.cancel()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


# -- a gate in front of NATS ------------------------------------------------------------


class GatedProxy:
    """A TCP proxy to one backend that refuses new connections while shut, and closes
    the client side when the backend side ends (as a dead server's connection would)."""

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.open = True
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> GatedProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        if not self.open:
            c_writer.transport.abort()
            return
        try:
            b_reader, b_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            c_writer.transport.abort()
            return
        pipes = {
            asyncio.ensure_future(_pipe(c_reader, b_writer)),
            asyncio.ensure_future(_pipe(b_reader, c_writer)),
        }
        self._tasks |= pipes
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for p in pipes:
            p.cancel()
        for w in (b_writer, c_writer):
            w.transport.abort()
        self._tasks -= pipes

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()


# -- a NATS proxy that loses chosen messages -----------------------------------------------


class MsgDroppingProxy:
    """A TCP proxy between one NATS client and its server that reads the server's side
    as NATS protocol and drops chosen messages: the next MSG/HMSG on `subject` whose
    payload contains `marker` (`drop_next`). Everything else passes byte for byte. It
    stands for a core message lost between NATS and a gateway (a slow-consumer drop, a
    route hiccup), which JetStream history must repair."""

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.port = 0
        self.dropped: list[bytes] = []
        self._rules: list[tuple[bytes, bytes]] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> MsgDroppingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def drop_next(self, subject: str, marker: bytes) -> None:
        self._rules.append((subject.encode(), marker))

    def cut(self) -> None:
        """Drop every connection through the proxy at once (the client reconnects)."""
        for t in list(self._tasks):
            t.cancel()

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            b_reader, b_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            c_writer.transport.abort()
            return
        pipes = {
            asyncio.ensure_future(_pipe(c_reader, b_writer)),
            asyncio.ensure_future(self._filter(b_reader, c_writer)),
        }
        self._tasks |= pipes
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for p in pipes:
            p.cancel()
        for w in (b_writer, c_writer):
            w.transport.abort()
        self._tasks -= pipes

    async def _filter(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(
            ConnectionError, asyncio.CancelledError, asyncio.IncompleteReadError
        ):
            while True:
                line = await reader.readuntil(b"\r\n")
                op = line[:4].upper()
                if op not in (b"MSG ", b"HMSG"):
                    writer.write(line)  # INFO, PING, PONG, +OK, -ERR
                    await writer.drain()
                    continue
                fields = line.split()
                size = int(fields[-1])  # HMSG: total (headers + payload); MSG: payload
                body = await reader.readexactly(size + 2)
                if self._drops(fields[1], body):
                    self.dropped.append(fields[1])
                    continue
                writer.write(line + body)
                await writer.drain()

    def _drops(self, subject: bytes, body: bytes) -> bool:
        for i, (want, marker) in enumerate(self._rules):
            if subject == want and marker in body:
                del self._rules[i]
                return True
        return False

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
