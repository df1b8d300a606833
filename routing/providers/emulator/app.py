"""The emulator's raw ASGI application: path routing, fault injection and response sending.

Paths:
  POST /v1/messages                                   Anthropic Messages
  POST /v1/chat/completions, GET /v1/models           OpenAI Chat Completions
  POST /{v1,v1beta,...}/models/{model}:generateContent  Gemini (and :streamGenerateContent?alt=sse)
  GET  /_emulator/stats | /_emulator/config | /_emulator/faults | /_emulator/health
  POST /_emulator/config | /_emulator/faults[?append=1] | /_emulator/reset
  DELETE /_emulator/faults

Every completion goes through the same steps (`EmulatorApp._serve`):
  1. pick a fault (inline `[[emulator:fault=...]]` marker, else the first matching rule);
  2. sleep the configured latency (before the first byte, streams included);
  3. status faults answer a provider-shaped error; "hang" waits for the client to leave;
  4. the brain produces the completion ("malformed" corrupts it), usage is metered
     against the cache memory and billed (not for errors, hangs or cut plain bodies; a cut
     stream is billed its whole prompt plus the output tokens it delivered);
  5. the JSON body or SSE frames are sent ("cut" stops midway without a terminator, after
     up to two frames of text, which uvicorn turns into a closed connection;
     `stream_chunk_delay_ms` spaces frames).
Auth headers and `key` query params are accepted whatever their value, or absent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs

from .brain import (
    MALFORMED_VARIANTS,
    answer_text,
    count_tokens,
    malformed_output,
    structured_output,
    truncate_to_tokens,
)
from .formats import FORMATS, Completion, EmulatedRequest, ReplyMeta, RequestError, Usage, WireFormat, models_list
from .schemas import request_kind, seed_of
from .state import STATUS_FAULTS, ConfigError, EmulatorState, FaultRule

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# A hung request still ends eventually, so a forgotten client cannot pin a task forever.
_HANG_CEILING_S = 3600.0
_DEFAULT_MODELS = {
    "anthropic": ("claude-opus-4-7", "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"),
    "openai": ("gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-4.1"),
}
_JSON = (b"content-type", b"application/json")


class InjectedCutLogFilter(logging.Filter):
    """Drops uvicorn's error log for abandoned responses: "cut" faults abandon them on purpose."""

    message = "ASGI callable returned without completing response."

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.message


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _wait_for_disconnect(receive: Receive) -> None:
    async def loop() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(loop(), timeout=_HANG_CEILING_S)
    except TimeoutError:
        pass  # the ceiling is a safety net, not an answer


async def _send_json(send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


class EmulatorApp:
    """ASGI callable; one instance owns one `EmulatorState`."""

    def __init__(self, state: EmulatorState | None = None) -> None:
        self.state = state or EmulatorState()
        self._control: dict[tuple[str, str], Callable[[Any, Mapping[str, list[str]]], tuple[int, Any]]] = {
            ("GET", "/_emulator/health"): lambda body, query: (200, {"ok": True}),
            ("GET", "/_emulator/stats"): lambda body, query: (200, self.state.snapshot()),
            ("GET", "/_emulator/config"): lambda body, query: (200, asdict(self.state.config)),
            ("POST", "/_emulator/config"): self._post_config,
            ("GET", "/_emulator/faults"): lambda body, query: (200, [r.to_dict() for r in self.state.faults]),
            ("POST", "/_emulator/faults"): self._post_faults,
            ("DELETE", "/_emulator/faults"): self._delete_faults,
            ("POST", "/_emulator/reset"): self._post_reset,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        query = parse_qs(scope.get("query_string", b"").decode())
        if path.startswith("/_emulator/"):
            await self._handle_control(method, path, query, receive, send)
            return
        for fmt in FORMATS.values():
            for route_method, pattern in fmt.routes:
                match = pattern.match(path)
                if match and method == route_method:
                    await self._handle_completion(fmt, match, query, receive, send)
                    return
        if method == "GET" and path == "/v1/models":
            await self._list_models(scope, send)
            return
        await _send_json(send, 404, {"error": {"message": f"no route for {method} {path}", "type": "not_found"}})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- control API ------------------------------------------------------------------

    async def _handle_control(
        self, method: str, path: str, query: Mapping[str, list[str]], receive: Receive, send: Send
    ) -> None:
        handler = self._control.get((method, path.rstrip("/")))
        raw = await _read_body(receive)
        if handler is None:
            await _send_json(send, 404, {"error": f"no control endpoint {method} {path}"})
            return
        try:
            body = json.loads(raw) if raw.strip() else None
            status, payload = handler(body, query)
        except (ValueError, ConfigError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            status, payload = 400, {"error": str(exc)}
        await _send_json(send, status, payload)

    def _post_config(self, body: Any, query: Mapping[str, list[str]]) -> tuple[int, Any]:
        if not isinstance(body, Mapping):
            raise ConfigError("config must be a JSON object")
        self.state.config.update(body)
        return 200, asdict(self.state.config)

    def _post_faults(self, body: Any, query: Mapping[str, list[str]]) -> tuple[int, Any]:
        if body is None:
            raise ConfigError("send a fault rule or a list of rules")
        append = query.get("append", ["0"])[0] in ("1", "true", "yes")
        rules = self.state.set_faults(body, append=append)
        return 200, [r.to_dict() for r in rules]

    def _delete_faults(self, body: Any, query: Mapping[str, list[str]]) -> tuple[int, Any]:
        self.state.faults = []
        return 200, []

    def _post_reset(self, body: Any, query: Mapping[str, list[str]]) -> tuple[int, Any]:
        self.state.reset()
        return 200, {"ok": True}

    async def _list_models(self, scope: Scope, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        provider = "anthropic" if b"anthropic-version" in headers else "openai"
        seen = [m for m in self.state.models_seen[provider] if m not in _DEFAULT_MODELS[provider]]
        models = [*_DEFAULT_MODELS[provider], *sorted(seen)]
        if provider == "openai":
            await _send_json(send, 200, models_list(models, created=1_700_000_000))
            return
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in models]
        await _send_json(send, 200, {"data": data, "has_more": False, "first_id": models[0], "last_id": models[-1]})

    # --- completions --------------------------------------------------------------------

    async def _handle_completion(
        self, fmt: WireFormat, match: Any, query: Mapping[str, list[str]], receive: Receive, send: Send
    ) -> None:
        raw = await _read_body(receive)
        try:
            body = json.loads(raw)
            if not isinstance(body, Mapping):
                raise RequestError("request body must be a JSON object")
            req = fmt.parse(body, match, {k: v[0] for k, v in query.items()})
        except RequestError as exc:
            await _send_json(send, exc.status, fmt.error_body(exc.status, exc.message))
            return
        except ValueError as exc:
            await _send_json(send, 400, fmt.error_body(400, f"invalid JSON body: {exc}"))
            return
        kind = request_kind(req.schema)
        self.state.begin(req.provider, req.model, kind)
        try:
            await self._serve(fmt, req, kind, raw, receive, send)
        finally:
            self.state.end()

    async def _serve(
        self, fmt: WireFormat, req: EmulatedRequest, kind: str, raw: bytes, receive: Receive, send: Send
    ) -> None:
        rule, fired_before = self.state.take_fault(req.provider, req.model, kind, req.full_text)
        config = self.state.config
        delay = config.latency_for(req.model)
        if delay:
            await asyncio.sleep(delay)
        request_id = f"{fmt.id_prefix}{self.state.next_id():08d}{seed_of(raw.decode(errors='replace')) % 16**6:06x}"
        id_headers = [(b"request-id", request_id.encode()), (b"x-request-id", request_id.encode())]

        if rule is not None and rule.fault in STATUS_FAULTS:
            status = int(rule.fault)
            headers = list(id_headers)
            if status == 429:
                headers.append(
                    (b"retry-after", f"{rule.retry_after if rule.retry_after is not None else 1:g}".encode())
                )
            message = f"emulated {status} fault" + (" (rate limited)" if status == 429 else "")
            await _send_json(send, status, fmt.error_body(status, message), headers)
            return
        if rule is not None and rule.fault == "hang":
            await _wait_for_disconnect(receive)
            return

        out = self._generate(req, rule, fired_before)
        usage = self._meter(req, out)
        cut = rule is not None and rule.fault == "cut"
        # A cut plain response delivered nothing usable and is not billed; a cut stream is
        # billed like a real one: the whole prompt plus the output tokens actually delivered.
        if not cut:
            self._bill(req.model, usage, usage.output_tokens)
        meta = ReplyMeta(
            response_id=request_id,
            model_version=config.model_versions.get(req.model, req.model),
            created=int(time.time()),
        )
        if req.stream:
            frames = fmt.stream_frames(req, out, usage, meta)
            if out.broken_envelope:
                frames[min(1, len(frames) - 1)] = fmt.broken_frame()
            limit = len(frames)
            if cut:
                limit = cut_point(fmt, frames)
                delivered = "".join(fmt.frame_text(frame) for frame in frames[:limit])
                self._bill(req.model, usage, count_tokens(delivered))
            await self._send_stream(send, frames[:limit], id_headers, cut=cut,
                                    delay=config.stream_chunk_delay_ms / 1000.0)
            return
        body = json.dumps(fmt.render(req, out, usage, meta)).encode()
        if out.broken_envelope:
            body = body[: len(body) // 2]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [_JSON, (b"content-length", str(len(body)).encode()), *id_headers],
            }
        )
        if cut:
            # Half the promised body, then return: uvicorn closes the connection mid-body.
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            return
        await send({"type": "http.response.body", "body": body})

    def _bill(self, model: str, usage: Usage, output_tokens: int) -> None:
        self.state.bill(
            model,
            input_tokens=usage.input_tokens,
            cache_read=usage.cache_read_tokens,
            cache_write=usage.cache_write_tokens,
            output_tokens=output_tokens,
        )

    def _generate(self, req: EmulatedRequest, rule: FaultRule | None, fired_before: int) -> Completion:
        malformed = rule is not None and rule.fault == "malformed"
        prompt = req.last_user_text or req.full_text
        if req.schema is None:
            text, truncated = truncate_to_tokens(answer_text(req.model, prompt), req.max_tokens)
            return Completion(text, None, truncated, count_tokens(text), broken_envelope=malformed)
        valid = structured_output(req.schema, prompt, req.model)
        value: str | dict[str, Any] = valid
        if rule is not None and malformed:
            variant = rule.variant or MALFORMED_VARIANTS[fired_before % len(MALFORMED_VARIANTS)]
            value = malformed_output(valid, req.schema, variant)
        if isinstance(value, str):  # the "not_json" variant: plain text, never a tool call
            text, truncated = truncate_to_tokens(value, req.max_tokens)
            return Completion(text, None, truncated, count_tokens(text))
        text = json.dumps(value)
        if req.tool_name:
            # Tool input is a JSON object in the envelope, so it is never cut to max_tokens.
            return Completion(text, value, False, count_tokens(text))
        text, truncated = truncate_to_tokens(text, req.max_tokens)
        return Completion(text, None, truncated, count_tokens(text))

    def _meter(self, req: EmulatedRequest, out: Completion) -> Usage:
        prefix_tokens = count_tokens(req.cache_prefix)
        read = write = 0
        if prefix_tokens:
            key = hashlib.blake2b(f"{req.provider}\x1f{req.model}\x1f{req.cache_prefix}".encode(), digest_size=16)
            if self.state.cache_lookup(key.digest()):
                read = prefix_tokens
            elif req.explicit_cache:
                write = prefix_tokens
        return Usage(
            input_tokens=prefix_tokens + count_tokens(req.uncached_text),
            cache_read_tokens=read,
            cache_write_tokens=write,
            output_tokens=out.output_tokens,
        )

    async def _send_stream(
        self, send: Send, frames: list[bytes], headers: list[tuple[bytes, bytes]], *, cut: bool, delay: float
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    *headers,
                ],
            }
        )
        for i, frame in enumerate(frames):
            if i and delay:
                await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        if cut:
            return  # no terminator: uvicorn closes the connection mid-stream
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def cut_point(fmt: WireFormat, frames: list[bytes]) -> int:
    """How many frames a cut stream sends: up to two frames of generated text, never the end.

    Clients then see a stream that dies midway, after some text reached them.
    """
    first_text = next((i for i, frame in enumerate(frames) if fmt.frame_text(frame)), len(frames))
    return max(1, min(first_text + 2, len(frames) - 2))


def create_app(state: EmulatorState | None = None) -> EmulatorApp:
    """A fresh emulator ASGI app (with its own state unless one is given)."""
    return EmulatorApp(state)
