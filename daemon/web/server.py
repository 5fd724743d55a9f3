"""The daemon's one HTTP server: a route table, on ``metrics: {host, port}``.

Single-threaded and small on purpose: it serves ``/metrics`` and ``/healthz`` (``daemon.web.metrics``)
and whatever pages register a route; a client that connects and says nothing cannot hold it
(socket timeout). A route is a function from a ``Request`` to a ``Response``; an unknown path is a
404 that lists the known ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from loguru import logger

from daemon.errors import ConfigError

TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = TEXT
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, text.encode("utf-8"), TEXT)


Route = Callable[[Request], Response]
MAX_BODY = 1 << 20


class WebServer:
    def __init__(self, host: str, port: int, routes: dict[str, Route]) -> None:
        self.routes = dict(routes)
        try:
            self._server = HTTPServer((host, port), _handler_for(self))
        except OSError as exc:
            raise ConfigError(f"metrics: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="inspectd-web",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def answer(self, request: Request) -> Response:
        route = self.routes.get(request.path)
        if route is None:
            known = ", ".join(sorted(self.routes))
            return Response.text(404, f"no such page; try {known}\n")
        try:
            return route(request)
        except Exception:  # noqa: BLE001 - a broken page must not take the server down
            logger.opt(exception=True).error("web: {} {} failed", request.method, request.path)
            return Response.text(500, "internal error; see the daemon's log\n")

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout)
        self._server.server_close()


def _handler_for(server: WebServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 5  # a client that connects and says nothing cannot hold the server

        def do_GET(self) -> None:
            self._serve(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._reply(Response.text(413, "request too large\n"))
                return
            self._serve(self.rfile.read(length))

        def _serve(self, body: bytes) -> None:
            parts = urlsplit(self.path)
            request = Request(
                self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()), body
            )
            self._reply(server.answer(request))

        def _reply(self, response: Response) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.trace("web: {}", format % args)

    return Handler
