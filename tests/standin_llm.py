"""A stand-in OpenAI-compatible chat server for tests (127.0.0.1, ephemeral port, no network).

Serves ``POST /v1/chat/completions`` from a scripted queue of replies and records every
request it received, so tests can check both what the client sent and how it copes with
what came back (malformed text, HTTP errors, slow answers).

Use as a context manager::

    with StandinLLM() as llm:
        llm.push("first answer", Reply(status=500), Reply("late", delay_s=2.0))
        client = ChatClient(base_url=llm.base_url, model="stand-in", api_key_env=None)
        ...
        assert llm.requests[0].json["model"] == "stand-in"

or as a pytest fixture named ``standin_llm``: put this directory on ``sys.path`` and
``from standin_llm import standin_llm_fixture`` in the test module (the import registers
it; the function's own name differs so linters see no shadowing), then take
``standin_llm`` as a test argument.

A queued item is a string (the assistant message), a list of strings (one choice each)
or a :class:`Reply`. When the queue is empty the server answers ``empty_status`` (500 by
default) with an error body naming the problem, so a test that asks more often than it
scripted fails loudly instead of hanging.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Reply:
    """One scripted answer: choice texts (``content`` str or list), or a raw ``body``, an HTTP
    ``status``, extra ``headers``, and ``delay_s`` before answering (to simulate slow servers)."""

    content: str | list[str] | None = None
    status: int = 200
    delay_s: float = 0.0
    body: Any = None  # raw JSON-able body (or bytes) sent as is, instead of a completion built from content
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    """A request as the server saw it."""

    path: str
    headers: dict[str, str]
    json: Any
    time: float


class StandinLLM:
    """Threaded HTTP server on 127.0.0.1 with a scripted reply queue; see the module doc."""

    def __init__(self, empty_status: int = 500) -> None:
        self.empty_status = empty_status
        self.queue: deque[Reply] = deque()
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- scripting ----------------------------------------------------------
    def push(self, *replies: str | list[str] | Reply) -> StandinLLM:
        with self._lock:
            for r in replies:
                self.queue.append(r if isinstance(r, Reply) else Reply(content=r))
        return self

    def _next(self) -> Reply | None:
        with self._lock:
            return self.queue.popleft() if self.queue else None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stand-in server is not running (use it as a context manager)")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    # ---- lifecycle ----------------------------------------------------------
    def start(self) -> StandinLLM:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    body = raw.decode(errors="replace")
                with owner._lock:
                    owner.requests.append(Received(self.path, dict(self.headers), body, time.monotonic()))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                reply = owner._next()
                if reply is None:
                    return self._send(owner.empty_status, {"error": {"message": "stand-in: no scripted reply left"}})
                if reply.delay_s > 0 and owner._stop.wait(reply.delay_s):
                    return None  # shutting down
                if reply.body is not None:
                    return self._send(reply.status, reply.body, reply.headers)
                if reply.status != 200:
                    return self._send(reply.status, {"error": {"message": f"stand-in HTTP {reply.status}"}},
                                      reply.headers)
                texts = reply.content if isinstance(reply.content, list) else [reply.content or ""]
                model = body.get("model", "stand-in") if isinstance(body, dict) else "stand-in"
                return self._send(200, completion(texts, model), reply.headers)

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="standin-llm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StandinLLM:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def completion(texts: list[str], model: str = "stand-in") -> dict[str, Any]:
    """A chat.completion body with one choice per text."""
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                    for i, t in enumerate(texts)],
        "usage": {"prompt_tokens": 0, "completion_tokens": sum(len(t.split()) for t in texts), "total_tokens": 0},
    }


@pytest.fixture(name="standin_llm")
def standin_llm_fixture() -> Iterator[StandinLLM]:
    """A running stand-in server, stopped after the test."""
    with StandinLLM() as server:
        yield server
