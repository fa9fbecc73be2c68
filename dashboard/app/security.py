"""What the dashboard's server adds to Streamlit's: security headers on every
HTTP response, and WebSocket handshakes only from the dashboard's own pages.

- ``Content-Security-Policy`` with ``frame-ancestors 'none'`` (and the older
  ``X-Frame-Options: DENY``): no other site can frame the dashboard and trick
  a viewer into clicking in it. The rest of the policy lets the page load
  scripts, styles, fonts, images and connections from its own origin only
  (plus ``data:``/``blob:`` URLs the page makes itself), so even a name that
  slipped through as Markdown or HTML could not make the browser fetch an
  outside URL.
- A WebSocket handshake must carry an ``Origin`` equal to the server's own
  origin: the same scheme, host name *and port* the browser used to reach it
  (its ``Host`` header). Streamlit alone accepts any page served from
  ``localhost`` or ``127.0.0.1`` on any port (another local tool's page could
  read every run), and for other names it may look up this machine's public
  IP address over the internet to decide. The check here runs before
  Streamlit's, so a foreign handshake never reaches it, and a handshake that
  passes here passes Streamlit's own same-origin test (``Origin``'s host and
  port equal to ``Host``) before any lookup.

A plain ASGI middleware: no Streamlit, no Starlette; ``server.py`` installs it
with ``st.App(..., middleware=...)``.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, MutableMapping

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    # Streamlit's index.html sets one flag in an inline script, plotly's WebGL
    # traces (regl) compile their drawing code with new Function(), and the
    # page compiles WebAssembly: scripts still come only from this origin.
    "script-src 'self' 'unsafe-inline' 'unsafe-eval' 'wasm-unsafe-eval'",
    # Styles are injected at run time (emotion), and plotly sets inline styles.
    "style-src 'self' 'unsafe-inline'",
    # The favicon (an emoji) and plotly's images are data: and blob: URLs.
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    # The app's WebSocket and /_stcore/ requests: 'self' covers ws:// to this origin.
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
_OURS = frozenset(key for key, _ in SECURITY_HEADERS)
# RFC 6455 close code "policy violation"; closing before accepting makes the
# server (uvicorn) answer the handshake with HTTP 403.
POLICY_VIOLATION = 1008


def same_origin(origin: str | None, host: str | None, secure: bool) -> bool:
    """Whether a handshake's ``Origin`` is the origin of the URL it was sent to.

    Browsers send both as the URL has them (lower-case host, default port left
    out), so the comparison is exact: ``http://localhost:8501`` is not
    ``http://127.0.0.1:8501`` and not ``http://localhost:3000``. No ``Origin``
    (not a browser) or ``null`` (a sandboxed or file:// page) is refused.

    Example:
        >>> same_origin("http://localhost:8501", "localhost:8501", secure=False)
        True
        >>> same_origin("http://localhost:3000", "localhost:8501", secure=False)
        False
    """
    if not origin or not host:
        return False
    return origin == f"{'https' if secure else 'http'}://{host}"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class SecurityMiddleware:
    """ASGI middleware: :data:`SECURITY_HEADERS` on every HTTP response,
    WebSocket handshakes refused unless :func:`same_origin`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            secure = scope.get("scheme") == "wss"
            if not same_origin(_header(scope, b"origin"), _header(scope, b"host"), secure):
                await receive()  # the websocket.connect message
                await send({"type": "websocket.close", "code": POLICY_VIOLATION})
                return
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Ours replace any Streamlit sends under the same names.
                kept = [(key, value) for key, value in message.get("headers", ()) if key.lower() not in _OURS]
                message["headers"] = kept + list(SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers)
