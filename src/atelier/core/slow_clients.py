"""Deadlines for slow clients, kept at the connection: headers, body pauses, body rate.

uvicorn (0.54) times only the idle gap between two requests (`timeout_keep_alive`), and each
byte received cancels that timer: a client sending its headers or its body a byte at a time
holds a connection, and the task serving it, for as long as it likes (slowloris, slow POST).
`SlowClientProtocol` is uvicorn's httptools protocol with three more deadlines (`ReadLimits`):

- a request's headers arrive whole within `header_timeout` seconds of its first byte (of the
  connection's opening, for the first request);
- a body never pauses for more than `body_idle_timeout` seconds;
- once `body_grace` seconds have passed, the body has come at `body_min_rate` bytes per second
  on average (0: no minimum).

Time during which the server itself does not read does not count against the client: reading
paused because the app has not taken what arrived yet, or a client waiting for its
`100 Continue`. Past a deadline the request is answered 408 (a problem document) if nothing was
answered yet, and the connection is closed; the app, if it was reading, sees a disconnect.

This lives at the connection rather than in ASGI middleware because a body the app never reads
(it answered first, say 401 or 405) keeps arriving on the connection where no middleware sees
it. `http_protocol(limits)` is the value for `uvicorn.run(http=...)`.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

import structlog
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from atelier.core.problems import problem

log = structlog.get_logger("atelier.http")

# How often a body in progress is checked; the cut-off comes at most this late.
CHECK_SECONDS = 0.5


@dataclass(frozen=True)
class ReadLimits:
    header_timeout: float
    body_idle_timeout: float
    body_min_rate: int
    body_grace: float


def http_protocol(limits: ReadLimits) -> functools.partial[SlowClientProtocol]:
    """What `uvicorn.run(http=...)` takes: the protocol class with `limits` bound. A partial of
    a module-level class pickles, so it reaches `--workers` processes too."""
    return functools.partial(SlowClientProtocol, limits=limits)


class _TimedFlow(FlowControl):
    """uvicorn's flow control, also counting how long reading has been paused in all."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(transport)
        self._loop = loop
        self._paused_since: float | None = None
        self._paused_before = 0.0

    def pause_reading(self) -> None:
        if not self.read_paused:
            self._paused_since = self._loop.time()
        super().pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self._paused_since is not None:
            self._paused_before += self._loop.time() - self._paused_since
            self._paused_since = None
        super().resume_reading()

    def paused_seconds(self, now: float) -> float:
        current = now - self._paused_since if self._paused_since is not None else 0.0
        return self._paused_before + current


class _Clock:
    """Seconds of the client's time: wall time less the time the server was not reading."""

    def __init__(self, flow: _TimedFlow, now: float) -> None:
        self.flow = flow
        self.start = now - flow.paused_seconds(now)

    def read(self, now: float) -> float:
        return now - self.flow.paused_seconds(now) - self.start


@dataclass
class _Body:
    cycle: RequestResponseCycle
    clock: _Clock
    received: int = 0
    last_piece: float = 0.0  # on the clock


class SlowClientProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines for headers and bodies (module docstring)."""

    def __init__(self, *args: Any, limits: ReadLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._header_deadline: asyncio.TimerHandle | None = None
        self._request_begun = False
        self._body: _Body | None = None
        self._body_check: asyncio.TimerHandle | None = None

    # ---- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = self._flow = _TimedFlow(transport, self.loop)
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_deadline()
        self._stop_body_watch()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Bytes outside a body start (or continue) the next request's headers, including the
        # empty lines a parser skips, which also cancel the keep-alive timer.
        if self._body is None:
            self._await_headers()
        super().data_received(data)

    def handle_websocket_upgrade(self) -> None:
        self._stop_header_deadline()
        self._stop_body_watch()
        super().handle_websocket_upgrade()

    # ---- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        self._await_headers()

    def on_headers_complete(self) -> None:
        self._stop_header_deadline()
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.scope is self.scope:
            self._body = _Body(self.cycle, _Clock(self._flow, self.loop.time()))
            self._body_check = self.loop.call_later(CHECK_SECONDS, self._check_body)

    def on_body(self, body: bytes) -> None:
        if self._body is not None:
            self._body.received += len(body)
            self._body.last_piece = self._body.clock.read(self.loop.time())
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._stop_body_watch()
        super().on_message_complete()

    # ---- headers ---------------------------------------------------------------------------

    def _await_headers(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(
                self.limits.header_timeout, self._headers_too_slow
            )

    def _stop_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        self._request_begun = False

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        begun, self._request_begun = self._request_begun, False
        # A 408 only for a request under way, and only if no earlier response is being sent
        # on this connection; a connection that never started a request just closes.
        idle = self.cycle is None or self.cycle.response_complete
        detail = f"The request headers did not arrive within {self.limits.header_timeout:g} s."
        self._cut_off("headers", detail if begun and idle else None)

    # ---- bodies ----------------------------------------------------------------------------

    def _stop_body_watch(self) -> None:
        if self._body_check is not None:
            self._body_check.cancel()
            self._body_check = None
        self._body = None

    def _check_body(self) -> None:
        body = self._body
        self._body_check = None
        if body is None:
            return
        now = self.loop.time()
        if body.cycle.waiting_for_100_continue:
            # The client waits for us before it sends: its time starts once we asked.
            body.clock, body.last_piece = _Clock(self._flow, now), 0.0
        elapsed = body.clock.read(now)
        limits = self.limits
        detail = None
        if elapsed - body.last_piece > limits.body_idle_timeout:
            detail = f"no part of the body arrived for {limits.body_idle_timeout:g} s"
        elif _too_slow(body.received, elapsed, limits):
            detail = (
                f"the body arrived at {body.received / elapsed:.0f} bytes per second, "
                f"under the minimum of {limits.body_min_rate}"
            )
        if detail is None:
            self._body_check = self.loop.call_later(CHECK_SECONDS, self._check_body)
            return
        cycle = body.cycle
        # Answer only a request whose response has not started and is not queued behind
        # another (pipelining); otherwise closing is all that is left.
        answerable = not cycle.response_started and all(c is not cycle for c, _ in self.pipeline)
        self._stop_body_watch()
        self._cut_off("body", f"The request was too slow: {detail}." if answerable else None)

    # ---- cutting off -------------------------------------------------------------------------

    def _cut_off(self, phase: str, detail: str | None) -> None:
        """Answer 408 with `detail` (if given) and close; the app sees a disconnect."""
        if self.transport.is_closing():
            return
        log.info("slow_client_cut_off", phase=phase, client=self.client, answered=bool(detail))
        if self.cycle is not None and not self.cycle.response_complete:
            # Whatever the app sends from now on is dropped, and its next read says goodbye.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if detail is not None:
            self.transport.write(_timeout_response(detail))
        self.transport.close()


def _too_slow(received: int, elapsed: float, limits: ReadLimits) -> bool:
    if not limits.body_min_rate or elapsed < limits.body_grace or elapsed <= 0:
        return False
    return received < limits.body_min_rate * elapsed


def _timeout_response(detail: str) -> bytes:
    response = problem(
        408,
        slug="request-timeout",
        title="Request timeout",
        detail=detail,
        headers={"Connection": "close", "X-Content-Type-Options": "nosniff"},
    )
    head = [b"HTTP/1.1 408 Request Timeout\r\n"]
    head += [name + b": " + value + b"\r\n" for name, value in response.raw_headers]
    return b"".join(head) + b"\r\n" + bytes(response.body)
