"""What a gateway serves over HTTP beside `/socket.io/`.

`GET /__getcookie` answers `_sailsIoJSConnect();` as Sails' shadow route does: a
browser page on another origin than its socket (sails.io.js `io.sails.url`) loads it
as a script and waits for that callback before connecting at all. Sailcast keeps no
session, so no cookie is set. `GET /sailcast/recovery.js` is the sails.io.js
connection-state recovery add-on (gateway/static/recovery.js, docs/recovery.md).

The rest is off unless configured: `--static-dir DIR` serves `DIR/index.html` at `/`
and the other files of DIR (no sub-directories) at `/<name>`; `--sails-io-js FILE`
serves the stock sails.io.js browser bundle at `/js/dependencies/sails.io.js`, where a
Sails app keeps it. `sailcast dev` uses both for the live demo (gateway/static/); the
bundle comes from the npm package `sails.io.js`, installed by `make run`, never from
this repository.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

from gateway.settings import PagesSettings
from shared.errors import ConfigError

SAILS_IO_JS_PATH: Final = "/js/dependencies/sails.io.js"
RECOVERY_JS_PATH: Final = "/sailcast/recovery.js"
RECOVERY_JS: Final = Path(__file__).parent / "static" / "recovery.js"
"""The sails.io.js recovery add-on (docs/recovery.md), served by every gateway."""
GET_COOKIE_PATH: Final = "/__getcookie"
GET_COOKIE_JS: Final = b"_sailsIoJSConnect();"
_TYPES: Final = {
    ".html": "text/html",
    ".js": "application/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


def add_routes(app: web.Application, settings: PagesSettings) -> None:
    """The Sails cookie route and the recovery add-on; the page and the client bundle
    when configured."""
    app.router.add_get(GET_COOKIE_PATH, _get_cookie)
    app.router.add_get(RECOVERY_JS_PATH, _file_handler(RECOVERY_JS))
    if settings.sails_io_js:
        bundle = Path(settings.sails_io_js)
        if not bundle.is_file():
            raise ConfigError(f"SAILCAST_SAILS_IO_JS={settings.sails_io_js!r} is not a file")
        app.router.add_get(SAILS_IO_JS_PATH, _file_handler(bundle))
    if settings.static_dir:
        root = Path(settings.static_dir)
        if not (root / "index.html").is_file():
            raise ConfigError(f"SAILCAST_STATIC_DIR={settings.static_dir!r} has no index.html")
        app.router.add_get("/", _file_handler(root / "index.html"))
        for path in sorted(root.iterdir()):
            if path.is_file() and path.suffix in _TYPES and path.name != "index.html":
                app.router.add_get("/" + path.name, _file_handler(path))


async def _get_cookie(request: web.Request) -> web.Response:
    return web.Response(
        body=GET_COOKIE_JS,
        headers={"Content-Type": "application/javascript", "Cache-Control": "no-store"},
    )


def _file_handler(path: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    content_type = _TYPES.get(path.suffix, "application/octet-stream")

    async def serve(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            path, headers={"Content-Type": content_type, "Cache-Control": "no-cache"}
        )

    return serve
