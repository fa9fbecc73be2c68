"""The server's security middleware (dashboard/app/security.py), driven as a plain ASGI app."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from traindoctor.dashboard.app.security import CONTENT_SECURITY_POLICY, SecurityMiddleware, same_origin


def call(middleware: SecurityMiddleware, scope: dict, incoming: list[dict]) -> list[dict]:
    """Run one ASGI call; returns what the middleware sent."""
    sent: list[dict] = []
    queue = list(incoming)

    async def receive() -> dict:
        return queue.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent


class Inner:
    """The wrapped app (Streamlit's, in the server): records calls, answers a page or accepts a socket."""

    def __init__(self, headers=()):
        self.calls = 0
        self.headers = list(headers)

    async def __call__(self, scope, receive, send):
        self.calls += 1
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            await send({"type": "http.response.body", "body": b"<html></html>"})
        else:
            await receive()
            await send({"type": "websocket.accept"})


def websocket_scope(origin: str | None, host: str = "127.0.0.1:8501", scheme: str = "ws") -> dict:
    headers = [(b"host", host.encode())] + ([(b"origin", origin.encode())] if origin is not None else [])
    return {"type": "websocket", "scheme": scheme, "path": "/_stcore/stream", "headers": headers}


@pytest.mark.parametrize(("origin", "host", "scheme", "accepted"), [
    ("http://127.0.0.1:8501", "127.0.0.1:8501", "ws", True),
    ("http://localhost:8501", "localhost:8501", "ws", True),
    ("https://dash.example:8443", "dash.example:8443", "wss", True),
    ("http://127.0.0.1:3000", "127.0.0.1:8501", "ws", False),   # another local tool's page
    ("http://localhost:8501", "127.0.0.1:8501", "ws", False),   # another name is another origin
    ("https://127.0.0.1:8501", "127.0.0.1:8501", "ws", False),  # another scheme
    ("http://evil.example", "127.0.0.1:8501", "ws", False),
    ("null", "127.0.0.1:8501", "ws", False),                    # a sandboxed or file:// page
    (None, "127.0.0.1:8501", "ws", False),                      # no Origin: not a browser's page
], ids=["same-ip", "same-name", "same-https", "other-port", "other-name", "other-scheme", "foreign", "null",
        "missing"])
def test_websocket_only_from_the_servers_own_origin(origin, host, scheme, accepted):
    inner = Inner()
    sent = call(SecurityMiddleware(inner), websocket_scope(origin, host, scheme), [{"type": "websocket.connect"}])
    assert same_origin(origin, host, secure=scheme == "wss") == accepted
    if accepted:
        assert inner.calls == 1 and sent == [{"type": "websocket.accept"}]
    else:
        # Refused before Streamlit's own check runs: that one may ask the internet for this
        # machine's public IP address (streamlit.net_util.get_external_ip) to decide.
        assert inner.calls == 0 and sent == [{"type": "websocket.close", "code": 1008}]


@pytest.mark.parametrize("inner_headers", [[], [(b"content-security-policy", b"default-src *")]],
                         ids=["none-before", "replaces-streamlits"])
def test_every_http_response_forbids_framing(inner_headers):
    inner = Inner(headers=[(b"content-type", b"text/html")] + inner_headers)
    sent = call(SecurityMiddleware(inner), {"type": "http", "method": "GET", "path": "/", "headers": []},
                [{"type": "http.request", "body": b""}])
    headers = dict(sent[0]["headers"])
    assert len(sent[0]["headers"]) == len(headers)  # no header twice
    assert headers[b"x-frame-options"] == b"DENY"
    assert headers[b"content-security-policy"].decode() == CONTENT_SECURITY_POLICY
    assert headers[b"content-type"] == b"text/html"
    assert sent[1]["body"] == b"<html></html>"


def test_policy_keeps_every_fetch_on_the_page_origin():
    directives = dict(part.split(" ", 1) for part in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["frame-ancestors"] == "'none'"
    for name in ("default-src", "script-src", "style-src", "img-src", "font-src", "connect-src", "worker-src"):
        sources = directives[name].split()
        assert sources[0] == "'self'", name
        assert not [s for s in sources if not s.startswith("'") and s not in ("data:", "blob:")], name


def test_the_middleware_module_imports_neither_streamlit_nor_starlette():
    code = ("import sys, traindoctor.dashboard.app.security; "
            "print([m for m in ('streamlit', 'starlette', 'plotly') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr
