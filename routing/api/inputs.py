"""Validation of the gateway's request bodies into plain values; errors name the field."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from routing.providers.base import Message

from .parsing import BadRequest

MAX_MESSAGES = 1000
MAX_METADATA_KEYS = 32
ROLES_IN = {"user", "assistant", "system", "developer", "tool"}


def _text_of(content: Any, field: str) -> str:
    """Message content as text: a string, or a list of text parts (OpenAI / Anthropic shape)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for i, part in enumerate(content):
            if not isinstance(part, dict):
                raise BadRequest("content parts must be objects", field=f"{field}[{i}]")
            kind = part.get("type")
            if kind != "text":
                raise BadRequest(f"unsupported content part type {kind!r}; only text is supported",
                                 field=f"{field}[{i}].type")
            text = part.get("text")
            if not isinstance(text, str):
                raise BadRequest("text part needs a string 'text'", field=f"{field}[{i}].text")
            pieces.append(text)
        return "\n".join(pieces)
    raise BadRequest("content must be a string or a list of text parts", field=field)


def parse_messages(raw: Any, field: str = "messages") -> tuple[str | None, list[Message]]:
    """OpenAI-shaped messages → (system text, conversation). At least one non-empty user turn."""
    if not isinstance(raw, list):
        raise BadRequest("messages must be a list", field=field)
    if not raw:
        raise BadRequest("messages must not be empty", field=field)
    if len(raw) > MAX_MESSAGES:
        raise BadRequest(f"at most {MAX_MESSAGES} messages", field=field)
    system_parts: list[str] = []
    messages: list[Message] = []
    for i, item in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise BadRequest("each message must be an object", field=where)
        role = item.get("role")
        if not isinstance(role, str) or role not in ROLES_IN:
            raise BadRequest(f"role must be one of {sorted(ROLES_IN)}", field=f"{where}.role")
        if "content" not in item or item["content"] is None:
            raise BadRequest("content is required", field=f"{where}.content")
        text = _text_of(item["content"], f"{where}.content")
        if role in ("system", "developer"):
            system_parts.append(text)
        elif role == "tool":
            messages.append(Message(role="user", content=f"[tool result]\n{text}"))
        else:
            messages.append(Message(role=role, content=text))
    if not messages or not any(m.role == "user" and m.content.strip() for m in messages):
        raise BadRequest("at least one non-empty user message is required", field=field)
    return ("\n\n".join(system_parts) or None), messages


def parse_metadata(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest("metadata must be an object", field="metadata")
    if len(raw) > MAX_METADATA_KEYS:
        raise BadRequest(f"metadata may have at most {MAX_METADATA_KEYS} keys", field="metadata")
    for key, value in raw.items():
        if len(key) > 64:
            raise BadRequest("metadata keys are at most 64 characters", field=f"metadata.{key[:64]}")
        if not isinstance(value, (str, int, float, bool)) or (isinstance(value, str) and len(value) > 512):
            raise BadRequest("metadata values must be strings (≤512 chars), numbers or booleans",
                             field=f"metadata.{key}")
    return raw


def parse_max_tokens(raw: Any, field: str, *, required: bool = False) -> int | None:
    if raw is None:
        if required:
            raise BadRequest("max_tokens is required", field=field)
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 1_000_000:
        raise BadRequest("must be an integer between 1 and 1000000", field=field)
    return raw


@dataclass
class RouteInput:
    system: str | None
    messages: list[Message]
    metadata: dict[str, Any]
    max_tokens: int | None = None


ALLOWED_ROUTE_KEYS = {"message", "messages", "metadata", "system", "max_tokens"}


def parse_route_input(data: dict[str, Any]) -> RouteInput:
    unknown = sorted(set(data) - ALLOWED_ROUTE_KEYS)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}", field=unknown[0])
    has_message, has_messages = "message" in data, "messages" in data
    if has_message == has_messages:
        raise BadRequest("send exactly one of 'message' (text) or 'messages' (a conversation)",
                         field="message" if not has_message else "messages")
    if has_message:
        message = data["message"]
        if not isinstance(message, str):
            raise BadRequest("message must be a string", field="message")
        if not message.strip():
            raise BadRequest("message must not be empty", field="message")
        system, messages = None, [Message(role="user", content=message)]
    else:
        system, messages = parse_messages(data["messages"])
    extra_system = data.get("system")
    if extra_system is not None:
        if not isinstance(extra_system, str):
            raise BadRequest("system must be a string", field="system")
        system = "\n\n".join(p for p in (extra_system, system) if p)
    return RouteInput(
        system=system,
        messages=messages,
        metadata=parse_metadata(data.get("metadata")),
        max_tokens=parse_max_tokens(data.get("max_tokens"), "max_tokens"),
    )


@dataclass
class FeedbackInput:
    request_id: uuid.UUID
    score: int
    thumbs: str
    comment: str


def parse_feedback_input(data: dict[str, Any]) -> FeedbackInput:
    unknown = sorted(set(data) - {"request_id", "score", "thumbs", "comment"})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}", field=unknown[0])
    raw_id = data.get("request_id")
    if not isinstance(raw_id, str):
        raise BadRequest("request_id (a UUID string) is required", field="request_id")
    try:
        request_id = uuid.UUID(raw_id)
    except ValueError:
        raise BadRequest("request_id is not a UUID", field="request_id") from None
    score, thumbs = data.get("score"), data.get("thumbs")
    if (score is None) == (thumbs is None):
        raise BadRequest("send exactly one of 'score' (1-5) or 'thumbs' ('up'/'down')", field="score")
    if thumbs is not None:
        if thumbs not in ("up", "down"):
            raise BadRequest("thumbs must be 'up' or 'down'", field="thumbs")
        score = 5 if thumbs == "up" else 1
    elif isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise BadRequest("score must be an integer from 1 to 5", field="score")
    comment = data.get("comment", "")
    if not isinstance(comment, str) or len(comment) > 1000:
        raise BadRequest("comment must be a string of at most 1000 characters", field="comment")
    return FeedbackInput(request_id=request_id, score=score, thumbs=thumbs or "", comment=comment)
