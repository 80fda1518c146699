"""What Serve's HTTP proxy runs as it starts (ray_serve.SERVE_ENV names it in
RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH): its WebSockets refuse permessage-deflate.

Clients offer the extension (browsers always do) and the proxy's uvicorn accepts it by default,
then compresses every frame message: base64 JPEG, which deflate shrinks by only a quarter (back
towards the JPEG's own size) for about 1.7 ms of CPU per 512 px frame here, plus the client's
to inflate it; on the cores that render the sessions (docs/scale.md). A server answers with the
extensions it accepts (RFC 6455 section 9.1): clients then send and receive plain messages.
"""

from __future__ import annotations

PROXY_CALLBACK = "lipstream.server.ray_proxy:configure_proxy"


def configure_proxy() -> list:
    """Serve calls this in each proxy actor before it builds its uvicorn server (Ray 2.60's
    ray/serve/_private/http_util.py: `uvicorn.Config(...)` with no WebSocket options): from now
    on a uvicorn Config made in this process has ws_per_message_deflate False unless it says
    otherwise. Returns the middlewares to add to the proxy: none."""
    import uvicorn

    if not getattr(uvicorn.Config, "lipstream_no_deflate", False):
        uvicorn.Config = _without_deflate(uvicorn.Config)
    return []


def _without_deflate(config_class: type) -> type:
    class ConfigWithoutDeflate(config_class):
        lipstream_no_deflate = True

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("ws_per_message_deflate", False)
            super().__init__(*args, **kwargs)

    return ConfigWithoutDeflate
