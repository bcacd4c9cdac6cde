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

Connection-state recovery (Socket.IO v4, next issue) plugs in without new hooks:
the client's CONNECT payload (`{"pid":..., "offset":...}` next to any auth) reaches
`EngineEvents.connected` as `auth`; the engine builds the CONNECT reply itself
(`sio_codec.connect_reply` takes the payload dict, so `pid` is one more key); the
socket id is a plain attribute the engine assigns before asking the gateway, so the
recovery issue adds one member to the seam (say `Connection.restore(sid, pid)`,
called from `connected` before the socket is registered) and the engine answers
`40{"sid":<old>,"pid":<pid>}`; an offset travels as one more element of the event's
args (the fanout's `args_json`), so `event_packet` needs no change. Nothing of this
needs a private hook: the engine is ours.
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
]
