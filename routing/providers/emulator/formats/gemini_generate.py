"""Gemini `models/{model}:generateContent` and `:streamGenerateContent?alt=sse`.

Any API version prefix is accepted (the google-genai SDK sends `/v1/...` by
default, older clients `/v1beta/...`). Both camelCase and snake_case request
keys are read, and the schema is taken from `responseSchema` (OpenAPI subset,
upper-case types) or `responseJsonSchema` (plain JSON schema), whichever is sent.
Caching is implicit, like OpenAI's: a system instruction already seen for the
model is reported as `cachedContentTokenCount`, which `promptTokenCount` includes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .base import (
    Completion,
    EmulatedRequest,
    ReplyMeta,
    RequestError,
    Turn,
    Usage,
    WireFormat,
    schema_of_json_mode,
    split_for_stream,
    sse,
    text_of_parts,
)

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _get(mapping: Mapping[str, Any], camel: str, snake: str) -> Any:
    return mapping.get(camel, mapping.get(snake))


class GeminiGenerate(WireFormat):
    name = "gemini"
    id_prefix = "emu"
    routes = (
        (
            "POST",
            re.compile(
                r"^(?:/v1[a-z0-9]*)?/models/(?P<model>[^/:]+):(?P<action>generateContent|streamGenerateContent)$"
            ),
        ),
    )

    def parse(self, body: Mapping[str, Any], path_match: re.Match[str], query: Mapping[str, str]) -> EmulatedRequest:
        contents = body.get("contents")
        if isinstance(contents, Mapping):
            contents = [contents]
        if not isinstance(contents, list) or not contents:
            raise RequestError("contents is not specified")
        turns = []
        for content in contents:
            if not isinstance(content, Mapping):
                raise RequestError("contents: each content must be an object")
            role = "assistant" if content.get("role") == "model" else "user"
            turns.append(Turn(role, text_of_parts(content.get("parts"))))
        system = _get(body, "systemInstruction", "system_instruction")
        system_text = text_of_parts(system.get("parts")) if isinstance(system, Mapping) else text_of_parts(system)

        config = _get(body, "generationConfig", "generation_config") or {}
        schema = _get(config, "responseJsonSchema", "response_json_schema")
        if schema is None:
            schema = _get(config, "responseSchema", "response_schema")
        if schema is None and _get(config, "responseMimeType", "response_mime_type") == "application/json":
            schema = schema_of_json_mode()
        max_tokens = _get(config, "maxOutputTokens", "max_output_tokens")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
            raise RequestError("generationConfig.maxOutputTokens: expected an integer")

        rest = "\n".join(t.text for t in turns)
        return EmulatedRequest(
            provider=self.name,
            model=path_match["model"],
            stream=path_match["action"] == "streamGenerateContent",
            turns=tuple(turns),
            cache_prefix=system_text + ("\n" if system_text and rest else ""),
            uncached_text=rest,
            max_tokens=max_tokens,
            schema=schema if isinstance(schema, Mapping) else None,
        )

    def _usage(self, usage: Usage, output_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "promptTokenCount": usage.input_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": usage.input_tokens + output_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.input_tokens}],
        }
        if usage.cache_read_tokens:
            body["cachedContentTokenCount"] = usage.cache_read_tokens
        return body

    def _chunk(self, text: str, finish: str | None, usage: dict[str, Any], meta: ReplyMeta) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": meta.model_version,
            "responseId": meta.response_id,
        }

    def render(self, req: EmulatedRequest, out: Completion, usage: Usage, meta: ReplyMeta) -> dict[str, Any]:
        finish = "MAX_TOKENS" if out.truncated else "STOP"
        return self._chunk(out.text, finish, self._usage(usage, out.output_tokens), meta)

    def stream_frames(self, req: EmulatedRequest, out: Completion, usage: Usage, meta: ReplyMeta) -> list[bytes]:
        pieces = split_for_stream(out.text)
        frames = []
        emitted = ""
        for i, piece in enumerate(pieces):
            emitted += piece
            last = i == len(pieces) - 1
            # Like the real API, every chunk carries usage with a running candidates count.
            running = out.output_tokens if last else min(out.output_tokens, max(1, (len(emitted) + 3) // 4))
            finish = ("MAX_TOKENS" if out.truncated else "STOP") if last else None
            frames.append(sse(self._chunk(piece, finish, self._usage(usage, running), meta)))
        # Gemini has no terminator frame: the stream simply ends after the finishReason chunk.
        return frames

    def delta_text(self, payload: Mapping[str, Any]) -> str:
        texts = []
        for candidate in payload.get("candidates") or ():
            parts = ((candidate or {}).get("content") or {}).get("parts") or ()
            texts.extend(str(part.get("text") or "") for part in parts if isinstance(part, Mapping))
        return "".join(texts)

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error": {"code": status, "message": message, "status": _STATUS_NAMES.get(status, "UNKNOWN")}}
