"""A small threaded HTTP proxy on 127.0.0.1 that injects S3 errors in front of a real (moto) endpoint.

Point a client's ``endpoint_url`` at :attr:`FaultProxy.endpoint_url`. Requests that match a :class:`FaultRule` get
an S3 XML error (with ``x-amz-request-id``/``x-amz-id-2`` headers) instead of being forwarded, or (a body-cut rule,
:meth:`FaultProxy.add_body_cut`) are forwarded but get only part of the response body before the proxy closes the
connection, as a connection dropped mid-download does. Two more rules break the connection itself: a request cut
(:meth:`FaultProxy.add_request_cut`) reads only part of the request body and resets the connection, as a drop
while an upload is being sent does (nothing reaches the upstream); a response cut
(:meth:`FaultProxy.add_response_cut`) forwards the whole request (the upstream applies it) and resets the
connection after the first bytes of the response, so the client never learns the outcome. Every other request
is forwarded unchanged. Every request is recorded, so tests can count attempts.
"""

from __future__ import annotations

import http.client
import itertools
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass(frozen=True)
class SeenRequest:
    """One request as the proxy saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    fault: str | None = None  # the injected error code, or None when the request was forwarded

    @property
    def is_upload_part(self) -> bool:
        return self.method == "PUT" and "partNumber" in self.query and "uploadId" in self.query

    @property
    def is_put_object(self) -> bool:
        """A PutObject (not a part, not a bucket-level PUT such as CreateBucket)."""
        return self.method == "PUT" and not self.is_upload_part and self.path.strip("/").count("/") >= 1

    @property
    def is_abort_multipart(self) -> bool:
        return self.method == "DELETE" and "uploadId" in self.query

    @property
    def is_get_object(self) -> bool:
        """A GetObject (a GET of a key, not a listing)."""
        return self.method == "GET" and not self.query and self.path.strip("/").count("/") >= 1

    @property
    def is_list_objects(self) -> bool:
        return self.method == "GET" and self.query.get("list-type") == ["2"]

    @property
    def is_delete_objects(self) -> bool:
        return self.method == "POST" and "delete" in self.query


@dataclass
class FaultRule:
    """Answer matching requests with an S3 error, ``times`` times (None: every time)."""

    match: Callable[[SeenRequest], bool]
    status: int
    code: str
    message: str = "injected by the fault proxy"
    times: int | None = None
    cut_at: float | None = None  # body-cut rule: forward, send this share of the body, then close the connection
    request_cut_at: float | None = None  # request-cut rule: read this share of the request body, then reset
    response_cut: bool = False  # response-cut rule: forward, then reset after the first bytes of the response
    hits: int = field(default=0, init=False)

    def take(self, request: SeenRequest) -> bool:
        """Whether this rule fires for ``request`` (and count it if so)."""
        if (self.times is not None and self.hits >= self.times) or not self.match(request):
            return False
        self.hits += 1
        return True


class FaultProxy:
    """``with FaultProxy(upstream) as proxy: proxy.add_rule(...)``; see the module docstring."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.rules: list[FaultRule] = []
        self.requests: list[SeenRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fault-proxy", daemon=True
        )

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def add_rule(
        self,
        match: Callable[[SeenRequest], bool],
        *,
        status: int,
        code: str,
        message: str = "injected by the fault proxy",
        times: int | None = None,
    ) -> FaultRule:
        rule = FaultRule(match, status, code, message, times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def add_body_cut(
        self, match: Callable[[SeenRequest], bool], *, share: float = 0.5, times: int | None = None
    ) -> FaultRule:
        """Forward matching requests, but send only ``share`` of the response body (headers announce all of it)
        and then close the connection; recorded with the fault ``BodyCut``."""
        rule = FaultRule(match, 200, "BodyCut", "", times, cut_at=share)
        with self._lock:
            self.rules.append(rule)
        return rule

    def add_request_cut(
        self, match: Callable[[SeenRequest], bool], *, share: float = 0.5, times: int | None = None
    ) -> FaultRule:
        """Read only ``share`` of a matching request's body, then reset the connection (nothing is forwarded);
        recorded with the fault ``RequestCut``."""
        rule = FaultRule(match, 0, "RequestCut", "", times, request_cut_at=share)
        with self._lock:
            self.rules.append(rule)
        return rule

    def add_response_cut(self, match: Callable[[SeenRequest], bool], *, times: int | None = None) -> FaultRule:
        """Forward a matching request (the upstream applies it), then reset the connection after the first bytes
        of the status line; recorded with the fault ``ResponseCut``."""
        rule = FaultRule(match, 0, "ResponseCut", "", times, response_cut=True)
        with self._lock:
            self.rules.append(rule)
        return rule

    def faults(self) -> dict[str, int]:
        """How many requests got each injected fault."""
        counts: dict[str, int] = {}
        for request in self.seen(lambda r: r.fault is not None):
            counts[str(request.fault)] = counts.get(str(request.fault), 0) + 1
        return counts

    def seen(self, predicate: Callable[[SeenRequest], bool] = lambda r: True) -> list[SeenRequest]:
        """The recorded requests that satisfy ``predicate``, in arrival order."""
        with self._lock:
            return [r for r in self.requests if predicate(r)]

    def next_request_id(self) -> str:
        with self._lock:
            return f"FAULT{next(self._ids):012d}"

    def _decide(self, request: SeenRequest) -> FaultRule | None:
        with self._lock:
            rule = next((r for r in self.rules if r.take(request)), None)
            self.requests.append(request if rule is None else _with_fault(request, rule.code))
            return rule

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        return Handler


def _with_fault(request: SeenRequest, code: str) -> SeenRequest:
    return SeenRequest(request.method, request.path, request.query, request.headers, code)


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, and "100 Continue" for botocore's Expect header

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests look at :attr:`FaultProxy.requests` instead."""

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        request = SeenRequest(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        rule = self.owner._decide(request)  # on the headers: a request-cut rule must fire before the body is read
        if rule is not None and rule.request_cut_at is not None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(int(length * rule.request_cut_at))
            self._reset()
            return
        body = self._read_body()
        if rule is not None and rule.cut_at is not None:
            self._forward(body, cut_at=rule.cut_at)
        elif rule is not None and rule.response_cut:
            self._forward(body, response_cut=True)
        elif rule is not None:
            self._send_error(rule)
        else:
            self._forward(body)

    def _reset(self) -> None:
        """Close the connection with a TCP reset (SO_LINGER 0), as a dropped connection looks to the client."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _send_error(self, rule: FaultRule) -> None:
        request_id = self.owner.next_request_id()
        payload = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(rule.code)}</Code><Message>{escape(rule.message)}</Message>"
            f"<RequestId>{request_id}</RequestId><HostId>fault-proxy-host</HostId></Error>"
        ).encode()
        self.send_response(rule.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-amz-request-id", request_id)
        self.send_header("x-amz-id-2", "fault-proxy-host")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _forward(self, body: bytes, *, cut_at: float | None = None, response_cut: bool = False) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"expect"}}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self.owner._upstream, timeout=60)
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            if response_cut:  # applied upstream; the client gets a few bytes of the status line, then a reset
                self.wfile.write(b"HTTP/1.1 2")
                self.wfile.flush()
                self._reset()
                return
            self.send_response(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            length = response.getheader("Content-Length") if self.command == "HEAD" else str(len(payload))
            self.send_header("Content-Length", length or "0")
            self.end_headers()
            if cut_at is not None:
                self.wfile.write(payload[: int(len(payload) * cut_at)])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)  # the client sees the body end early
                self.close_connection = True
            elif self.command != "HEAD":
                self.wfile.write(payload)
        finally:
            conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
