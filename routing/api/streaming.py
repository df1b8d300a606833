"""One streaming driver for every dialect, and the responses for upstream failures.

`open_stream` starts the executor's stream before the response is chosen: if every executor
fails before any text (after retries and the fallback), the client gets a plain JSON error in
its dialect with a real status (`upstream_failure`); otherwise an SSE response that
`drive_stream` feeds. The decision row is written whatever happens: normal end, a provider
failure mid-stream (the client gets an error event, the row says `partial` with the tokens
delivered), or a client that disconnects (the row keeps what was consumed).

Client-facing statuses when no executor answered (`Calls.failure`): 504 `deadline_exceeded`
(the request deadline passed), 503 `upstream_unavailable` (every executor's circuit is open)
or `upstream_rate_limited` (the provider said 429), both with `Retry-After` when known, and
502 `upstream_error` otherwise.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from django.http import JsonResponse

from routing.engine.dispatch import Executed, Gateway, GatewayRequest, Routed
from routing.providers.base import Completion, ProviderError
from routing.runtime import get_runtime

ErrorResponse = Callable[..., JsonResponse]  # common.native_error / openai_error / anthropic_error

_MESSAGES = {
    504: "the request deadline passed before an executor answered",
    503: "the upstream provider is unavailable",
    502: "the executor failed",
}


class StreamEncoder(Protocol):
    def start(self) -> list[str]: ...
    def delta(self, text: str) -> str: ...
    def end(self, completion: Completion | None, executed: Executed) -> list[str]: ...
    def error(self, message: str) -> str: ...


def sse(data: Any, event: str | None = None) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


def failure_headers(executed: Executed) -> dict[str, str]:
    """`Retry-After` (whole seconds, rounded up) when the provider or an open circuit said when."""
    if executed.retry_after is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(executed.retry_after)))}


def upstream_failure(
    error: ErrorResponse, executed: Executed, headers: Mapping[str, str], **extra: Any
) -> JsonResponse:
    """The dialect's JSON error for a request no executor answered; `extra` joins the body's top level."""
    status = executed.http_status or 502
    message = f"{_MESSAGES.get(status, _MESSAGES[502])}: {executed.error}"
    response = error(status, executed.error_code or "upstream_error", message)
    if extra:
        body = json.loads(response.content)
        body.update(extra)
        response.content = json.dumps(body)
    for name, value in {**headers, **failure_headers(executed)}.items():
        response[name] = value
    return response


@dataclass
class OpenedStream:
    """An executor stream that has produced its first delta (or failed before any)."""

    executed: Executed
    deltas: AsyncIterator[str]
    first: str | None

    @property
    def failed(self) -> bool:
        """No executor answered: nothing was sent, the client should get `upstream_failure`."""
        return self.first is None and self.executed.status == "error"


async def open_stream(gateway: Any, routed: Routed, greq: GatewayRequest) -> OpenedStream:
    """Start the executor's stream and wait for its first delta, so that retries, the fallback
    and a failure of them all happen before the response status is chosen.

    When it `failed`, the stream is closed: record the row and answer `upstream_failure`.
    Otherwise hand it to `drive_stream(..., opened=...)`. `gateway` is a Gateway or anything
    with its `stream` and `record` methods.
    """
    executed = Executed(completion=None, executor=routed.route, latency_ms=0.0, attempts=0)
    deltas = gateway.stream(routed, greq, executed)
    first: str | None = None
    try:
        first = await anext(deltas)
    except StopAsyncIteration:
        pass
    except ProviderError:
        await deltas.aclose()
    except asyncio.CancelledError:
        # The client went away before the first delta: the row is recorded here.
        await deltas.aclose()
        executed.error = executed.error or "client disconnected"
        record_row(gateway, routed, executed, greq)
        raise
    return OpenedStream(executed, deltas, first)


def record_row(gateway: Any, routed: Routed, executed: Executed, greq: GatewayRequest) -> None:
    from audits.sampling import last_user_text, maybe_sample

    row = gateway.record(routed, executed, greq)
    get_runtime().recorder.record(row)
    answer = executed.completion.text if executed.completion else executed.delivered_text
    maybe_sample(row, last_user_text(greq.messages), answer)


async def drive_stream(
    gateway: Gateway, routed: Routed, greq: GatewayRequest, encoder: StreamEncoder, *,
    opened: OpenedStream | None = None,
) -> AsyncIterator[str]:
    """The SSE body: start frames, deltas, end frames (or an error event); always one row.

    `opened` is a stream `open_stream` already started; without it the stream starts here
    (and a failure before any text becomes an error event after a 200)."""
    if opened is not None:
        executed, deltas, first = opened.executed, opened.deltas, opened.first
    else:
        executed = Executed(completion=None, executor=routed.route, latency_ms=0.0, attempts=0)
        deltas, first = gateway.stream(routed, greq, executed), None
    try:
        for chunk in encoder.start():
            yield chunk
        try:
            if first is not None:
                yield encoder.delta(first)
            async for text in deltas:
                yield encoder.delta(text)
        except ProviderError as exc:
            executed.error = str(exc)
            executed.status = "partial" if executed.delivered_text else "error"
            yield encoder.error(f"upstream provider failed: {exc}")
            return
        for chunk in encoder.end(executed.completion, executed):
            yield chunk
    except (asyncio.CancelledError, GeneratorExit):
        # The client went away: keep what was consumed.
        if executed.status != "ok" or executed.completion is None:
            executed.status = "partial" if executed.delivered_text else "error"
            executed.error = executed.error or "client disconnected"
        raise
    finally:
        # Close the executor's stream first, so that its call in flight is logged (and costed).
        await deltas.aclose()  # type: ignore[attr-defined]
        record_row(gateway, routed, executed, greq)
