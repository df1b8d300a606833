"""One streaming driver for every dialect: run the executor, encode deltas, always record.

The decision row is written whatever happens: normal end, a provider failure
mid-stream (the client gets an error event, the row says `partial` with the
tokens delivered), or a client that disconnects (the row keeps what was consumed).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from routing.engine.dispatch import Executed, Gateway, GatewayRequest, Routed
from routing.providers.base import Completion, ProviderError
from routing.runtime import get_runtime


class StreamEncoder(Protocol):
    def start(self) -> list[str]: ...
    def delta(self, text: str) -> str: ...
    def end(self, completion: Completion | None, executed: Executed) -> list[str]: ...
    def error(self, message: str) -> str: ...


def sse(data: Any, event: str | None = None) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


async def drive_stream(
    gateway: Gateway, routed: Routed, greq: GatewayRequest, encoder: StreamEncoder
) -> AsyncIterator[str]:
    executed = Executed(completion=None, executor=routed.route, latency_ms=0.0, attempts=0)
    try:
        for chunk in encoder.start():
            yield chunk
        try:
            async for text in gateway.stream(routed, greq, executed):
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
        from audits.sampling import last_user_text, maybe_sample

        row = gateway.record(routed, executed, greq)
        get_runtime().recorder.record(row)
        answer = executed.completion.text if executed.completion else executed.delivered_text
        maybe_sample(row, last_user_text(greq.messages), answer)
