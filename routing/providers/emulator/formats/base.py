"""Provider-neutral shapes shared by the three wire formats.

Each wire format (Anthropic Messages, OpenAI Chat Completions, Gemini
generateContent) parses its request body into an `EmulatedRequest`, and renders
the brain's `Completion` plus the metered `Usage` back into its own JSON
envelope or server-sent-event frames. Keeping the neutral shapes here lets the
app treat every provider the same way; the subclasses of `WireFormat` hold only
what genuinely differs between providers.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class RequestError(Exception):
    """The request body is unusable; rendered as a provider-shaped 4xx error."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant", normalised across providers
    text: str


@dataclass(frozen=True)
class EmulatedRequest:
    """One completion request, stripped of provider syntax."""

    provider: str
    model: str
    stream: bool
    turns: tuple[Turn, ...]
    # Token metering: prompt tokens = tokens(cache_prefix) + tokens(uncached_text).
    cache_prefix: str
    uncached_text: str
    # True when the caller marked the prefix (Anthropic cache_control: writes are
    # billed); False for implicit caching (OpenAI, Gemini: only reads are reported).
    explicit_cache: bool = False
    max_tokens: int | None = None
    # JSON schema of the requested structured output, or None for free text.
    schema: Mapping[str, Any] | None = None
    # Anthropic answers structured requests through this forced tool.
    tool_name: str | None = None
    include_stream_usage: bool = False

    @property
    def last_user_text(self) -> str:
        for turn in reversed(self.turns):
            if turn.role == "user":
                return turn.text
        return ""

    @property
    def full_text(self) -> str:
        return self.cache_prefix + self.uncached_text


@dataclass(frozen=True)
class Completion:
    """What the emulated model produced, before any provider framing."""

    text: str  # free text, or the structured output serialised as JSON
    tool_input: Mapping[str, Any] | None  # set when answered through a forced tool
    truncated: bool  # hit max_tokens
    output_tokens: int
    # "malformed" faults on free-text requests break the envelope itself.
    broken_envelope: bool = False


@dataclass(frozen=True)
class Usage:
    input_tokens: int  # every prompt token, cached or not (OpenAI/Gemini semantics)
    cache_read_tokens: int
    cache_write_tokens: int
    output_tokens: int

    @property
    def uncached_input_tokens(self) -> int:
        """Anthropic's `input_tokens`, which excludes cache reads and writes."""
        return self.input_tokens - self.cache_read_tokens - self.cache_write_tokens


@dataclass(frozen=True)
class ReplyMeta:
    response_id: str
    model_version: str
    created: int


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event frame; `data` is JSON-encoded unless already a string."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


_CHUNK_RE = re.compile(r"\S+\s*")


def split_for_stream(text: str, words_per_chunk: int = 4) -> list[str]:
    """Split text into a few-words-per-chunk deltas that concatenate back exactly."""
    if not text:
        return [""]
    lead = text[: len(text) - len(text.lstrip())]
    words = _CHUNK_RE.findall(text)
    chunks = ["".join(words[i : i + words_per_chunk]) for i in range(0, len(words), words_per_chunk)]
    if not chunks:
        return [text]
    chunks[0] = lead + chunks[0]
    # Streams need a few frames for "cut" faults to have something to cut after.
    while len(chunks) < 3 and any(len(c) > 1 for c in chunks):
        longest = max(range(len(chunks)), key=lambda i: len(chunks[i]))
        piece = chunks[longest]
        half = len(piece) // 2
        chunks[longest : longest + 1] = [piece[:half], piece[half:]]
    return chunks


def text_of_parts(parts: Any, key: str = "text") -> str:
    """Join the text of a list of content parts (other part kinds are ignored)."""
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, Sequence):
        return ""
    texts = []
    for part in parts:
        if isinstance(part, Mapping):
            value = part.get(key)
            if isinstance(value, str):
                texts.append(value)
            elif isinstance(part.get("content"), (str, list)):  # tool results nest content
                texts.append(text_of_parts(part["content"], key))
        elif isinstance(part, str):
            texts.append(part)
    return "\n".join(texts)


def schema_of_json_mode() -> dict[str, Any]:
    """The implicit schema for "JSON, any shape" modes (json_object, bare JSON mime type)."""
    return {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


class WireFormat(ABC):
    """One provider's request parsing and response rendering."""

    name: str
    id_prefix: str  # response ids look like the provider's (msg_..., chatcmpl-...)
    # (HTTP method, compiled path pattern) pairs this format answers.
    routes: tuple[tuple[str, re.Pattern[str]], ...]

    @abstractmethod
    def parse(self, body: Mapping[str, Any], path_match: re.Match[str], query: Mapping[str, str]) -> EmulatedRequest:
        """Turn a request body into an EmulatedRequest; raise RequestError when unusable."""

    @abstractmethod
    def render(self, req: EmulatedRequest, out: Completion, usage: Usage, meta: ReplyMeta) -> dict[str, Any]:
        """The non-streamed response body."""

    @abstractmethod
    def stream_frames(self, req: EmulatedRequest, out: Completion, usage: Usage, meta: ReplyMeta) -> list[bytes]:
        """The SSE frames of a streamed response, terminator included (last frame)."""

    @abstractmethod
    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """A provider-shaped error body for an HTTP error status."""

    def broken_frame(self) -> bytes:
        """An SSE frame whose data is not JSON (for "malformed" faults on streams)."""
        return b'data: {"broken": \n\n'

    def delta_text(self, payload: Mapping[str, Any]) -> str:
        """The generated text one decoded SSE frame carries ('' for envelope frames)."""
        return ""

    def frame_text(self, frame: bytes) -> str:
        """The generated text an SSE frame delivers, for billing a stream cut midway."""
        for line in frame.decode(errors="replace").splitlines():
            if line.startswith("data: "):
                try:
                    payload = json.loads(line[6:])
                except ValueError:
                    return ""
                return self.delta_text(payload) if isinstance(payload, Mapping) else ""
        return ""
