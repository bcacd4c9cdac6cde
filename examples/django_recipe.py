"""Django recipe: a `SyncPublisher` used from a view and from a task.

One module is the whole project (settings, views, URLs, the ASGI application) so the
recipe fits on a page; in a real project the publisher lives in e.g. `myapp/realtime.py`
and the task in `myapp/tasks.py`. `SyncPublisher` connects on first use from any thread
(Django's sync views, Celery workers) and blocks until a join is applied; broadcasts
are queued and sent without waiting.

    sailcast worker --asgi examples.django_recipe:application   # sails.io.js requests
    python -m examples.django_recipe notify lobby "hello"        # the task, as a worker
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import django
from django.conf import settings

from publisher import SyncPublisher
from shared.config import NatsSettings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "recipe-only-not-a-secret-0123456789"),
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()

from django.http import HttpRequest, JsonResponse
from django.urls import path

# one per process, connected on first use
realtime = SyncPublisher(
    nats_settings=NatsSettings.from_env(),
    prefix=os.environ.get("SAILCAST_PREFIX", "sailcast"),
)


# -- the task ---------------------------------------------------------------------------
def notify_room(room: str, text: str) -> None:
    """A background job tells a room; a Celery worker runs it as a task."""
    realtime.sockets.broadcast(room, "chat", {"room": room, "text": text, "from": "task"})
    realtime.flush()  # a task's process may end right after it


try:  # with Celery installed the same function is a task: notify_room.delay(...)
    from celery import shared_task  # type: ignore[import-not-found, unused-ignore]
except ImportError:
    pass
else:
    notify_room = shared_task(notify_room)


# -- views ------------------------------------------------------------------------------
def join(request: HttpRequest, room: str) -> JsonResponse:
    socket_id = request.headers.get("x-sailcast-socket-id")
    if socket_id is None:
        return JsonResponse({"error": "only a socket can join a room"}, status=400)
    realtime.sockets.join(socket_id, room)  # applied when this returns
    return JsonResponse({"joined": room})


def post_message(request: HttpRequest, room: str) -> JsonResponse:
    body: dict[str, Any] = json.loads(request.body or b"{}")
    sender = request.headers.get("x-sailcast-socket-id")
    realtime.sockets.broadcast(room, "chat", {"room": room, "text": body["text"]}, omit=sender)
    return JsonResponse({"room": room, "text": body["text"]}, status=201)


urlpatterns = [
    path("rooms/<str:room>/join", join),
    path("rooms/<str:room>/messages", post_message),
]

from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()

if __name__ == "__main__" and sys.argv[1:2] == ["notify"]:
    notify_room(sys.argv[2], sys.argv[3])
    realtime.close()
