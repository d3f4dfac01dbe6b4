"""The web app of `netdsl serve`: a starlette application and the uvicorn runner.

Everything the browser sends is untrusted, and so is every other page open in that browser. So:
- every request carries the per-launch token (`?token=` or the X-NetDSL-Token header), compared in
  constant time; without it, 403;
- the Host header must name this server (localhost, or the address given with --host) and an
  Origin, when sent, must be this server's own: no CSRF, no DNS rebinding. A POST must have both;
- responses carry a strict Content-Security-Policy (scripts and styles only from this server, no
  inline script, no eval), nosniff, no-referrer (the token is in the address) and no-store;
- text is checked under SERVE_LIMITS and never evaluated; `use` reads .net files in FILE's folder
  (and the shipped networks), read-only; the page shows user text only through textContent and
  sanitises the SVG it receives;
- saving writes FILE and nothing else, and only when allowed (bound to loopback, or --allow-save).
"""
from __future__ import annotations

import html
import ipaddress
import json
import os
import secrets
import socket
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import NetDSLError
from ..network import read_source, shipped_names
from ..modules import shipped_networks_dir
from .analysis import SERVE_LIMITS, analyse, explain

STATIC = Path(__file__).parent / "static"
#: The only files served from static/, with their types.
STATIC_FILES = {"playground.js": "text/javascript; charset=utf-8",
                "playground.css": "text/css; charset=utf-8",
                "LICENSES.txt": "text/plain; charset=utf-8"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_HEADER = "x-netdsl-token"
#: Boxes a page may ask to draw open at once (each click opens one; no one clicks this often).
MAX_OPENED = 256
#: A request body: the largest text (as JSON, every character escaped at worst) and a little more.
MAX_BODY_BYTES = 6 * SERVE_LIMITS.max_source_chars + 4096

_EXAMPLE = """\
# A playground: edit, and the drawing, the table and the diagnostics follow.
input 3x32x32

def block(n, c) = (conv3-c)*n - pool

net small = block(2, 32) - block(2, 64) - fc256 - dropout - fc10
"""


def content_security_policy(nonce: str) -> str:
    # CodeMirror adds its own <style> elements: they carry the per-page nonce (EditorView.cspNonce)
    return ("default-src 'none'; script-src 'self'; "
            f"style-src 'self' 'nonce-{nonce}'; img-src 'self' data: blob:; connect-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class Guard:
    """ASGI middleware: token, Host and Origin checks on every HTTP and websocket request, and the
    security headers on every response."""

    def __init__(self, app, token: str, allowed_hosts: frozenset[str], any_ip_port: int | None):
        self.app = app
        self.token = token
        self.allowed_hosts = allowed_hosts
        self.any_ip_port = any_ip_port  # bound to 0.0.0.0 or ::, any IP literal on this port

    def host_allowed(self, host: str) -> bool:
        if host in self.allowed_hosts:
            return True
        if self.any_ip_port is None:
            return False
        name, _, port = host.rpartition(":")
        try:
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            return False  # a DNS name: what a rebinding attack would send
        return port == str(self.any_ip_port)

    def refusal(self, scope) -> str | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if not self.host_allowed(host):
            return "this server answers only to its own address (Host)"
        origin = headers.get("origin")
        if origin is not None and origin not in (f"http://{host}", f"ws://{host}"):
            return "requests from other sites are refused (Origin)"
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD") and origin is None:
            return "a request that changes something must come from the page (Origin)"
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = headers.get(TOKEN_HEADER) or (query.get("token") or [""])[0]
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            return "a valid token is required: open the address netdsl serve printed"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        reason = self.refusal(scope)
        if reason is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            response = Response(reason + "\n", status_code=403, media_type="text/plain")
            return await response(scope, receive, self.secured(send, secrets.token_urlsafe(8)))
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        return await self.app(scope, receive, self.secured(send, nonce))

    @staticmethod
    def secured(send, nonce: str):
        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in (b"content-security-policy", b"cache-control")]
                headers += [(b"content-security-policy", content_security_policy(nonce).encode()),
                            (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"),
                            (b"cache-control", b"no-store"),
                            (b"cross-origin-resource-policy", b"same-origin"),
                            (b"x-frame-options", b"DENY")]
                message = {**message, "headers": headers}
            await send(message)
        return send_with_headers


class Playground:
    """What one launch serves: FILE (or nothing), whether it may be written, and the handlers."""

    def __init__(self, file: str | None, writable: bool, token: str):
        self.token = token  # written into the page for its scripts (the Guard checked it already)
        self.file = Path(file).resolve() if file else None
        self.writable = writable and self.file is not None
        # `use` looks beside FILE; without one, only among the shipped networks
        self.path = str(self.file) if self.file else "<string>"

    def initial_text(self) -> str:
        if self.file is None:
            return _EXAMPLE
        if not self.file.exists():
            return ""
        return read_source(str(self.file))

    async def index(self, request: Request) -> Response:
        token = html.escape(self.token, quote=True)
        nonce = request.scope["state"]["csp_nonce"]
        page = (STATIC / "index.html").read_text(encoding="utf-8")
        page = page.replace("{{token}}", token).replace("{{nonce}}", html.escape(nonce, quote=True))
        return Response(page, media_type="text/html; charset=utf-8")

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return Response("not found\n", status_code=404, media_type="text/plain")
        return Response((STATIC / name).read_bytes(), media_type=STATIC_FILES[name])

    async def state(self, request: Request) -> Response:
        return JSONResponse({
            "file": self.file.name if self.file else None, "text": self.initial_text(),
            "writable": self.writable, "shipped": shipped_names(),
            "limits": {"max_source_chars": SERVE_LIMITS.max_source_chars}})

    async def shipped(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in shipped_names():  # a closed list: never a path from the request
            return JSONResponse({"error": f"no shipped network {name}"}, status_code=404)
        text = (shipped_networks_dir() / f"{name}.net").read_text(encoding="utf-8")
        return JSONResponse({"name": name, "text": text})

    async def check(self, request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        text, net, depth = body.get("text"), body.get("net"), body.get("depth", 1)
        opened = body.get("opened", [])
        if not isinstance(text, str) or not (net is None or isinstance(net, str)) \
                or not (depth is None or (isinstance(depth, int) and 0 <= depth <= 64)) \
                or not (isinstance(opened, list) and len(opened) <= MAX_OPENED
                        and all(type(i) is int and 0 <= i < 10**7 for i in opened)):
            return JSONResponse({"error": "expected {text: string, net: string|null, "
                                          f"depth: 0..64|null, opened: at most {MAX_OPENED} "
                                          "node ids}"}, status_code=400)
        from starlette.concurrency import run_in_threadpool  # the renderer is a subprocess
        result = await run_in_threadpool(analyse, text, net, depth, self.path, opened=tuple(opened))
        result["seq"] = body.get("seq") if isinstance(body.get("seq"), int) else None
        return JSONResponse(result)

    async def explain(self, request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        text, net, node = body.get("text"), body.get("net"), body.get("node")
        if not isinstance(text, str) or not (net is None or isinstance(net, str)) \
                or not isinstance(node, int) or isinstance(node, bool) or node < 0:
            return JSONResponse({"error": "expected {text: string, net: string|null, node: int >= 0}"},
                                status_code=400)
        from starlette.concurrency import run_in_threadpool
        result = await run_in_threadpool(explain, text, node, net, self.path)
        return JSONResponse(result, status_code=400 if "error" in result else 200)

    async def save(self, request: Request) -> Response:
        if not self.writable:
            why = "no FILE was given" if self.file is None else \
                "this server is read-only (started with --host and without --allow-save)"
            return JSONResponse({"error": f"cannot save: {why}"}, status_code=403)
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        text = body.get("text")
        if not isinstance(text, str) or len(text) > SERVE_LIMITS.max_source_chars:
            return JSONResponse({"error": "expected {text: string} within the size limit"},
                                status_code=400)
        try:
            _write_atomically(self.file, text)
        except OSError as error:
            return JSONResponse({"error": f"cannot save {self.file.name}: {error.strerror}"},
                                status_code=500)
        return JSONResponse({"saved": self.file.name, "chars": len(text)})


async def _json_body(request: Request):
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return JSONResponse({"error": "send application/json"}, status_code=415)
    limit = MAX_BODY_BYTES
    too_large = JSONResponse({"error": "request too large"}, status_code=413)
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > limit:
        return too_large
    chunks, size = [], 0
    async for chunk in request.stream():  # counted as it arrives: a lying length stops here too
        size += len(chunk)
        if size > limit:
            return too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return JSONResponse({"error": "malformed JSON"}, status_code=400)
    if not isinstance(body, dict):
        return JSONResponse({"error": "expected a JSON object"}, status_code=400)
    return body


def _write_atomically(path: Path, text: str) -> None:
    """Write beside the file and rename over it, so a failed write never leaves half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def allowed_hosts(host: str, port: int) -> tuple[frozenset[str], int | None]:
    """Host headers the server answers to, and the port on which any IP literal is accepted when
    bound to every interface."""
    names = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    if host in ("0.0.0.0", "::", ""):
        return frozenset(names), port
    names.add(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return frozenset(names), None


def create_app(file: str | None = None, token: str | None = None, host: str = "127.0.0.1",
               port: int = 8765, allow_save: bool = False) -> tuple[Guard, str]:
    """The guarded ASGI app and its token. Saving is allowed on loopback, elsewhere only with
    `allow_save`."""
    token = token or secrets.token_urlsafe(32)
    playground = Playground(file, writable=host in LOOPBACK or allow_save, token=token)
    app = Starlette(routes=[
        Route("/", playground.index),
        Route("/static/{name}", playground.static),
        Route("/api/state", playground.state),
        Route("/api/shipped/{name}", playground.shipped),
        Route("/api/check", playground.check, methods=["POST"]),
        Route("/api/explain", playground.explain, methods=["POST"]),
        Route("/api/save", playground.save, methods=["POST"]),
    ])
    hosts, any_ip_port = allowed_hosts(host, port)
    return Guard(app, token, hosts, any_ip_port), token


def check_file_argument(file: str | None) -> None:
    """FILE must be a .net path (it need not exist yet: saving creates it)."""
    if file is None:
        return
    path = Path(file)
    if path.suffix != ".net":
        raise NetDSLError(f"{file}: netdsl serve edits a .net file",
                          notes=["shipped networks open from the list in the page"])
    if path.is_dir():
        raise NetDSLError(f"{file} is a directory, not a .net file")
    if not path.parent.resolve().is_dir():
        raise NetDSLError(f"{file}: no such folder {path.parent}")
    if path.exists():
        read_source(str(path))  # unreadable or not UTF-8: say so now, not in the page


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise NetDSLError(f"cannot listen on {host}:{port}: {error.strerror}",
                          notes=["choose another --port (0 picks a free one)"]) from None
    sock.listen(128)
    return sock


def address(host: str, port: int, token: str) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    return f"http://{shown}:{port}/?token={token}"


def serve(file: str | None, host: str = "127.0.0.1", port: int = 8765, allow_save: bool = False,
          announce=print) -> None:
    """Run the playground until interrupted."""
    import uvicorn
    check_file_argument(file)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    app, token = create_app(file, host=host, port=port, allow_save=allow_save)
    writable = host in LOOPBACK or allow_save
    announce(f"netdsl serve: {file or 'no file (saving disabled)'}"
             f"{'' if writable or file is None else ' (read-only: --host without --allow-save)'}")
    announce(f"open {address(host, port, token)}")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])
