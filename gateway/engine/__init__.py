"""The engine: Engine.IO v3/v4 and Socket.IO v2/v4 for the gateway, owned outright on
aiohttp (no python-engineio or python-socketio server underneath).

The seam is api.py: the gateway sees a client as a `Connection` and learns what
clients do through `EngineEvents`. Inside, one concept per module:

* server.py — the `/socket.io/` endpoint: handshakes, Origin/CORS, polling GET/POST,
  websockets and the polling → websocket upgrade; engine.io's error answers.
* connection.py — one connection: Engine.IO session, Socket.IO socket, bounded
  outbound buffer with coalesced websocket writes, heartbeat state.
* frames.py — `event_packet`: the fanout's `42<args>` and its websocket frame, built
  once per message and shared by every recipient (v3 and v4 alike).
* payloads.py — polling payload codecs (v4 `\\x1e`, v3 `<len>:` / XHR2 / JSONP).
* sio_codec.py — Socket.IO packets (orjson; binary attachments).
* heartbeat.py — `PingSchedule`: every connection's next ping (v4), pong deadline
  and v3 idle check on a few shared timers.
* admission.py — who may open a session: sessions (half-open ones included) against
  --max-connections + --max-pending-connections, and per client IP.
* origins.py, options.py — the Origin check and CORS headers; the engine's settings.

Connection-state recovery (docs/recovery.md) adds two members to the seam and no
private hook: `Connection.restore(sid, pid)` (called from `EngineEvents.connected`
before the socket is registered) gives the socket its old id and its pid, so the engine
answers `40{"sid":<old>,"pid":<pid>}`; the packets `connected` returns (the replay) are
sent right after that reply, with nothing in between; `Connection.evict()` closes a
connection taken over elsewhere without reporting a disconnect. The client's CONNECT
payload (`{"pid":..., "offset":...}` next to any auth) reaches `connected` as `auth`; an
offset travels as one more element of the event's args, so `event_packet` needs no
change.
"""

from gateway.engine.api import (
    ClientEvent,
    CloseReason,
    Connection,
    ConnectRefused,
    EngineEvents,
    HandshakeRequest,
    OutboundPacket,
    Transport,
)
from gateway.engine.connection import new_id
from gateway.engine.frames import event_packet
from gateway.engine.options import EngineOptions
from gateway.engine.server import Engine

__all__ = [
    "ClientEvent",
    "CloseReason",
    "ConnectRefused",
    "Connection",
    "Engine",
    "EngineEvents",
    "EngineOptions",
    "HandshakeRequest",
    "OutboundPacket",
    "Transport",
    "event_packet",
    "new_id",
]
