"""A Django project in one module, served through Django's own ASGI handler, that the
ASGI bridge is tested with (tests/integration/test_asgi_bridge.py): URL routing,
Django's session middleware (signed-cookie sessions, no database), sync and async
views."""

from __future__ import annotations

import json
from typing import Any

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-only-secret-key-for-the-asgi-bridge-0123456789",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()

from django.core.asgi import get_asgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from publisher.asgi import SocketContext


def _ctx(request: HttpRequest) -> SocketContext:
    ctx: SocketContext = request.scope["state"]["sailcast"]
    return ctx


async def find_user(request: HttpRequest, user_id: int) -> JsonResponse:
    return JsonResponse(
        {
            "id": user_id,
            "q": request.GET.get("q", ""),
            "socket": request.headers["x-sailcast-socket-id"],
            "stateSocket": _ctx(request).socket_id,
        }
    )


async def subscribe(request: HttpRequest, user_id: int) -> JsonResponse:
    ctx = _ctx(request)
    await ctx.pub.model("user").subscribe(ctx.socket_id, [user_id])
    return JsonResponse({"subscribed": user_id}, status=201)


def login(request: HttpRequest) -> JsonResponse:  # a sync view, Django's session
    body: dict[str, Any] = json.loads(request.body)
    request.session["name"] = body["name"]
    return JsonResponse({"ok": True})


def whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"name": request.session.get("name")})


def text(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("plain words", content_type="text/plain")
    response["X-Thing"] = "1"
    return response


urlpatterns = [
    path("users/<int:user_id>", find_user),
    path("users/<int:user_id>/subscribe", subscribe),
    path("login", login),
    path("whoami", whoami),
    path("text", text),
]

app = get_asgi_application()
