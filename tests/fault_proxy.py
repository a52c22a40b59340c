"""A loopback HTTP proxy that injects faults on a scripted schedule, in front of a real server.

Tests of the ``openai`` backend put it between the backend and vLLM's OpenAI server: each request
whose path ends with a scripted path takes the next fault from that path's script (``ok`` or an
exhausted script passes it through), and the proxy counts what it saw, so tests can assert how many
requests and retries happened and which prompts were sent.

Faults: ``429`` (with ``Retry-After: retry_after``), ``500``, ``drop`` (the connection is closed with
no response), ``slow`` (the answer comes ``slow_s`` seconds late, beyond the client's timeout),
``badjson`` (a 200 whose body is cut mid-JSON).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

FAULTS = ("ok", "429", "500", "drop", "slow", "badjson")


class FaultProxy:
    """Forwards ``http://127.0.0.1:<port>/...`` to ``upstream``; ``script(path, faults)`` schedules faults."""

    def __init__(self, upstream: str, retry_after: float = 1.0, slow_s: float = 3.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.retry_after = retry_after
        self.slow_s = slow_s
        self._lock = threading.Lock()
        self._scripts: dict[str, list[str]] = {}
        self.requests: Counter[str] = Counter()  # path -> requests received
        self.injected: Counter[str] = Counter()  # fault -> times injected
        self.bodies: list[tuple[str, dict[str, Any]]] = []  # (path, JSON body) of forwarded POSTs
        self.auth: set[str] = set()  # Authorization headers seen
        self._client = httpx.Client(timeout=120)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The proxy's API root, as a row's ``base_url``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def script(self, path: str, faults: list[str]) -> None:
        """Requests to paths ending with ``path`` take these faults in order, then pass through."""
        unknown = set(faults) - set(FAULTS)
        assert not unknown, f"unknown faults {unknown}; known: {FAULTS}"
        with self._lock:
            self._scripts[path] = list(faults)

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self.requests.clear()
            self.injected.clear()
            self.bodies.clear()
            self.auth.clear()

    def _next_fault(self, path: str) -> str:
        with self._lock:
            self.requests[path] += 1
            for suffix, faults in self._scripts.items():
                if path.endswith(suffix) and faults:
                    fault = faults.pop(0)
                    if fault != "ok":
                        self.injected[fault] += 1
                    return fault
            return "ok"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:  # quiet
                pass

            def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    if self.headers.get("Authorization"):
                        proxy.auth.add(self.headers["Authorization"])
                fault = proxy._next_fault(self.path)
                if fault == "drop":
                    self.close_connection = True
                    return
                if fault == "429":
                    message = b'{"error": {"message": "rate limited (injected)"}}'
                    self._reply(429, message, {"Retry-After": str(proxy.retry_after)})
                    return
                if fault == "500":
                    self._reply(500, b'{"error": {"message": "internal error (injected)"}}')
                    return
                if fault == "slow":
                    time.sleep(proxy.slow_s)
                if method == "POST" and fault in ("ok", "badjson") and body:
                    with proxy._lock:
                        proxy.bodies.append((self.path, json.loads(body)))
                upstream = proxy._client.request(
                    method,
                    proxy.upstream + self.path,
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                content = upstream.content
                if fault == "badjson":
                    content = content[: max(1, len(content) // 2)]
                try:
                    self._reply(upstream.status_code, content)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (slow)
                    self.close_connection = True

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        return Handler
