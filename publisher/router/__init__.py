"""Answer virtual requests in workers: a small router for sails.io.js requests.

A browser's `io.socket.get('/todo/7', cb)` reaches a gateway, which forwards it over
NATS to the workers' queue group; one worker runs the matching handler and its answer
becomes the client's JWR `{body, headers, statusCode}` (gateway/vrequests.py).

    from publisher import Publisher, Router

    router = Router()

    @router.get("/todo/:id")
    async def find_one(req, res):
        todo = await db.get(req.params["id"])
        if todo is None:
            return res.not_found()
        await req.pub.model("todo").subscribe(req.socket_id, [todo["id"]])
        return todo                      # 200, body = todo

    @router.post("/todo")
    def create(req, res):                # a plain function runs in a worker thread
        todo = db.insert(req.body)
        req.run(req.pub.model("todo").publish_create(todo, omit=req.socket_id))
        return res.status(201).json(todo)

    async with await Publisher.connect(nats_url) as pub:
        await router.serve(pub)          # until cancelled; then finishes what it holds

Routes are Sails route addresses: `/user/:id`, an optional last parameter
`/user/:id?`, a splat `/files/*` (`req.params["0"]`); matching ignores case and a
trailing slash; the first route registered that matches wins; an unknown path is 404
`"Not Found"`, like an unknown Sails route. A HEAD request without a HEAD route uses
the GET route. A handler takes `(req)` or `(req, res)`; it answers through `res`
(`res.ok(data)`, `res.status(201).json(data)`, `res.not_found()`, `res.set(name,
value)`), or returns the body (200), or raises `HttpError(status, body)`; any other
exception is a 500 `"Internal Server Error"` (logged). A handler that neither answers
nor returns anything answers 200 `"OK"`.

Joins before answers: `await pub.sockets.join(req.socket_id, room)` and the model
verbs return once the socket's gateway applied them, so a handler that subscribes
before it returns guarantees the subscription is in effect when the client reads the
answer — a broadcast published after the answer reaches the socket.

Several processes can serve the same router: they share `<p>.vreq` through a NATS queue
group, each request goes to one of them, and `serve` stops by leaving the group and
finishing the requests it holds, so workers can come and go without a request lost.

`@router.event("typing")` declares a client event: `handler(ev: Event)` runs for a
Socket.IO client's `socket.emit("typing", data, ack)` and its return value is the ack
(shared/client_events.py; events no worker declares are refused by the gateway).

`before_connect` / `after_disconnect` register the connection hooks the gateway calls
when started with `--before-connect workers` (gateway/auth.py); a `before_connect`
hook may return `Allow(user_id=..., info=..., rooms=[...], data=...)` to say who the
socket is and which rooms it joins before its client sees the connect.
`after_connect` hears every new socket, its rooms at connect already in effect
(docs/presence.md).

An existing ASGI app (FastAPI, Django) answers the same requests through
`publisher.asgi.AsgiBridge`, on this service.

One concept per module: `request` (Request, Response, HttpError), `hooks` (what the
connection hooks see), `events` (what a client-event handler sees), `routes`
(compiling and matching route addresses), `dispatch` (`Router`: registration and
dispatch, no NATS), `service` (`RouterService`: the NATS queue groups).
"""

from publisher.router.dispatch import DEFAULT_MAX_CONCURRENCY, Router
from publisher.router.events import Event
from publisher.router.hooks import Allow, ConnectCheck, Connected, Disconnected, Reject
from publisher.router.request import HttpError, Request, Response
from publisher.router.routes import Handler, Route, compile_pattern
from publisher.router.service import DEFAULT_STOP_TIMEOUT_S, RouterService

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_STOP_TIMEOUT_S",
    "Allow",
    "ConnectCheck",
    "Connected",
    "Disconnected",
    "Event",
    "Handler",
    "HttpError",
    "Reject",
    "Request",
    "Response",
    "Route",
    "Router",
    "RouterService",
    "compile_pattern",
]
