"""The explorer's web server: the standard library's ThreadingHTTPServer, three static files and a JSON API.

    GET  /  /page.js  /page.css           the page (package data, from a fixed table: no request names a file)
    GET  /api/info                        the model card's summary, the gallery's counts, the upload cap
    POST /api/query/text                  body: the caption (UTF-8)           -> {"query": id, "label", ...}
    POST /api/query/image|speech          body: the file's bytes (raw, no multipart)
    GET  /api/query/item/<index>          a gallery item as the query (its cached embedding)
    GET  /api/results/<id>/<modality>/<page>   one page of the ranking, each hit with its re-encoded media

Every refusal is a JSON ``{"error": one line}`` with a 4xx status; an unexpected exception is a 500 with one
line (and one line on stderr), never a traceback to the page, and the server keeps answering. A POST must
carry ``X-Explore: 1`` (a header no cross-site form or simple request can set, so another site cannot make a
browser query this server) and a Content-Length within the cap, checked before a byte of the body is read.
On a loopback address the Host header must name a loopback host (a DNS-rebinding page cannot read answers).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable

from unimodal_free.explore.api import TEXT_MAX_BYTES, Explorer, RequestError
from unimodal_free.search.ranking import printable

STATIC = {"/": ("page.html", "text/html; charset=utf-8"), "/page.js": ("page.js", "text/javascript; charset=utf-8"),
          "/page.css": ("page.css", "text/css; charset=utf-8")}
# The page's own script and style only; pictures and recordings come as data: URIs (results) or blob: (the query).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src data: blob:; media-src data: blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
ITEM = re.compile(r"/api/query/item/(0|[1-9][0-9]{0,9})")
RESULTS = re.compile(r"/api/results/([0-9a-f]{32})/(image|speech|text)/(0|[1-9][0-9]{0,9})")
UPLOAD = re.compile(r"/api/query/(text|image|speech)")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
REQUEST_TIMEOUT_S = 60  # a client that stops sending mid-request frees its thread after this


def is_loopback(host: str) -> bool:
    """``--host`` is this machine only: localhost or a loopback address."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def static_file(name: str) -> bytes:
    return resources.files("unimodal_free.explore").joinpath(name).read_bytes()


class Handler(BaseHTTPRequestHandler):
    """Routes to the server's Explorer; every answer is JSON or one of the three static files."""

    server: "ExploreServer"
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT_S
    server_version = "unimodal_free-explore"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # one line per request would drown the start-up lines; errors are printed where they happen

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's errors (a malformed request line, an unsupported method) as JSON too."""
        self.close_connection = True
        self._json(code, {"error": printable(message or self.responses.get(code, ("error",))[0], 200)})

    def _guarded(self, route: Callable[[], None]) -> None:
        try:
            self._check_host()
            route()
        except RequestError as exc:
            self._json(exc.status, {"error": exc.message})
        except (BrokenPipeError, ConnectionResetError, TimeoutError):  # the client went away: nobody to answer
            self.close_connection = True
        except Exception as exc:  # a bug must not kill the server or show a traceback: one line each side
            message = printable(f"internal error: {type(exc).__name__}: {exc}", 300)
            print(f"explore: {message} ({self.command} {printable(self.path, 100)})", file=sys.stderr, flush=True)
            self.close_connection = True
            self._json(500, {"error": message})

    def _check_host(self) -> None:
        if not self.server.loopback:
            return
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in LOOPBACK_NAMES:
            self.close_connection = True
            raise RequestError(403, f"Host {printable(host, 80)!r}: this server answers only to localhost")

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    # ------------------------------------------------------------ GET
    def do_GET(self) -> None:  # noqa: N802 (the base class's name)
        self._guarded(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._guarded(self._get)

    def _get(self) -> None:
        path, explorer = self._path(), self.server.explorer
        if path in STATIC:
            name, content_type = STATIC[path]
            self._send(200, static_file(name), content_type)
        elif path == "/api/info":
            self._json(200, explorer.info())
        elif m := ITEM.fullmatch(path):
            self._json(200, explorer.query_item(int(m.group(1))))
        elif m := RESULTS.fullmatch(path):
            self._json(200, explorer.results(m.group(1), m.group(2), int(m.group(3))))
        else:
            raise RequestError(404, f"no such page or API route: {printable(path, 100)}")

    # ------------------------------------------------------------ POST
    def do_POST(self) -> None:  # noqa: N802
        self._guarded(self._post)

    def _post(self) -> None:
        m = UPLOAD.fullmatch(self._path())
        if m is None:
            self.close_connection = True  # its body is not read
            raise RequestError(404, f"no such API route: POST {printable(self._path(), 100)}")
        modality = m.group(1)
        body = self._body(TEXT_MAX_BYTES if modality == "text" else self.server.explorer.upload_max, modality)
        explorer = self.server.explorer
        self._json(200, explorer.query_text(body) if modality == "text" else explorer.query_upload(modality, body))

    def _body(self, cap: int, modality: str) -> bytes:
        """The request body, refused from its headers (no X-Explore, no or too large Content-Length) unread."""
        if self.headers.get("X-Explore") != "1":
            self.close_connection = True
            raise RequestError(403, "a query must be sent by the explorer page (header X-Explore: 1)")
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            raise RequestError(411, f"{modality} query: a Content-Length header is required")
        n = int(length)
        if n > cap:
            self.close_connection = True
            raise RequestError(413, f"{modality} query: {n:,} bytes is over the cap of {cap:,} bytes "
                                    f"({cap / (1 << 20):g} MiB)")
        body = self.rfile.read(n)  # n <= cap: a bounded read
        if len(body) != n:
            self.close_connection = True
            raise RequestError(400, f"{modality} query: the body ended after {len(body):,} of {n:,} bytes")
        return body


class ExploreServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, explorer: Explorer, host: str, port: int):
        self.explorer = explorer
        self.loopback = is_loopback(host)
        if ":" in host and not host.startswith("["):
            self.address_family = socket.AF_INET6
        super().__init__((host.strip("[]"), port), Handler)

    def handle_error(self, request, client_address) -> None:
        """One line, not the base class's traceback, for what fails outside a route (a client gone mid-answer)."""
        exc = sys.exc_info()[1]
        print(f"explore: {client_address[0]}: {printable(f'{type(exc).__name__}: {exc}', 200)}", file=sys.stderr, flush=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
