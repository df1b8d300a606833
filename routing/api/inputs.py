"""Validation of the gateway's request bodies into plain values; errors name the field."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple

from routing.providers.base import Message

from .parsing import BadRequest

MAX_MESSAGES = 1000
MAX_METADATA_KEYS = 32
ROLES_IN = {"user", "assistant", "system", "developer", "tool"}


def _tool_call_text(name: Any, arguments: Any, where: str) -> str:
    """A tool call in the history, flattened for the executor (which is sent text only)."""
    if not isinstance(name, str) or not name:
        raise BadRequest("a tool call needs a non-empty string 'name'", field=f"{where}.name")
    if isinstance(arguments, str):
        args = arguments
    elif arguments is None:
        args = "{}"
    elif isinstance(arguments, dict):
        args = json.dumps(arguments, sort_keys=True, ensure_ascii=False)
    else:
        raise BadRequest("tool call arguments must be an object (or a JSON string)", field=f"{where}.arguments")
    return f"[tool call: {name}] {args}"


def _tool_result_text(part: dict[str, Any], where: str) -> str:
    """An Anthropic `tool_result` block: its text content (string or text blocks), flattened."""
    content = part.get("content")
    text = "" if content is None else _text_of(content, f"{where}.content")
    if not isinstance(part.get("is_error", False), bool):
        raise BadRequest("is_error must be a boolean", field=f"{where}.is_error")
    return f"[tool result{' (error)' if part.get('is_error') else ''}]\n{text}"


def _text_of(content: Any, field: str, *, tools: bool = False) -> str:
    """Message content as text: a string, or a list of text parts (OpenAI / Anthropic shape).

    With `tools`, Anthropic `tool_use` and `tool_result` blocks are accepted too and flattened
    to text: the executor is sent text, and the history is what it needs to read.
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for i, part in enumerate(content):
            where = f"{field}[{i}]"
            if not isinstance(part, dict):
                raise BadRequest("content parts must be objects", field=where)
            kind = part.get("type")
            if tools and kind == "tool_use":
                pieces.append(_tool_call_text(part.get("name"), part.get("input"), where))
                continue
            if tools and kind == "tool_result":
                pieces.append(_tool_result_text(part, where))
                continue
            if kind != "text":
                supported = "text, tool_use and tool_result are" if tools else "only text is"
                raise BadRequest(f"unsupported content part type {kind!r}; {supported} supported",
                                 field=f"{where}.type")
            text = part.get("text")
            if not isinstance(text, str):
                raise BadRequest("text part needs a string 'text'", field=f"{where}.text")
            pieces.append(text)
        return "\n".join(pieces)
    raise BadRequest("content must be a string or a list of text parts", field=field)


def _openai_tool_calls(raw: Any, where: str) -> list[str]:
    """OpenAI `tool_calls` of an assistant message, flattened to text."""
    if not isinstance(raw, list):
        raise BadRequest("tool_calls must be a list", field=where)
    calls = []
    for j, call in enumerate(raw):
        at = f"{where}[{j}]"
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            raise BadRequest("each tool call must be an object of type 'function'", field=at)
        function = call.get("function")
        if not isinstance(function, dict):
            raise BadRequest("a tool call needs a 'function' object", field=f"{at}.function")
        calls.append(_tool_call_text(function.get("name"), function.get("arguments"), f"{at}.function"))
    return calls


class Conversation(NamedTuple):
    system: str | None
    messages: list[Message]
    tool_rounds: int  # assistant turns that called tools: the agentic depth so far


def parse_messages(raw: Any, field: str = "messages") -> Conversation:
    """OpenAI- or Anthropic-shaped messages → (system text, conversation, tool-call rounds).

    At least one non-empty user turn. Tool-call history (OpenAI `tool_calls` and `tool`
    messages, Anthropic `tool_use` and `tool_result` blocks) is flattened to text; each
    assistant turn that calls tools is one round.
    """
    if not isinstance(raw, list):
        raise BadRequest("messages must be a list", field=field)
    if not raw:
        raise BadRequest("messages must not be empty", field=field)
    if len(raw) > MAX_MESSAGES:
        raise BadRequest(f"at most {MAX_MESSAGES} messages", field=field)
    system_parts: list[str] = []
    messages: list[Message] = []
    rounds = 0
    for i, item in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise BadRequest("each message must be an object", field=where)
        role = item.get("role")
        if not isinstance(role, str) or role not in ROLES_IN:
            raise BadRequest(f"role must be one of {sorted(ROLES_IN)}", field=f"{where}.role")
        calls = item.get("tool_calls")
        if calls is not None and role != "assistant":
            raise BadRequest("only assistant messages carry tool_calls", field=f"{where}.tool_calls")
        calls_text = _openai_tool_calls(calls, f"{where}.tool_calls") if calls is not None else []
        content = item.get("content")
        if content is None and not calls_text:
            raise BadRequest("content is required", field=f"{where}.content")
        text = "" if content is None else _text_of(content, f"{where}.content", tools=role in ("user", "assistant"))
        if role == "assistant" and (calls_text or (isinstance(content, list) and any(
                isinstance(part, dict) and part.get("type") == "tool_use" for part in content))):
            rounds += 1
        if calls_text:
            text = "\n".join([text, *calls_text]) if text else "\n".join(calls_text)
        if role in ("system", "developer"):
            system_parts.append(text)
        elif role == "tool":
            messages.append(Message(role="user", content=f"[tool result]\n{text}"))
        else:
            messages.append(Message(role=role, content=text))
    if not messages or not any(m.role == "user" and m.content.strip() for m in messages):
        raise BadRequest("at least one non-empty user message is required", field=field)
    return Conversation(("\n\n".join(system_parts) or None), messages, rounds)


TASK_ID = re.compile(r"[\x21-\x7e]{1,128}")


def parse_task_id(header: str | None, metadata: Any) -> str | None:
    """The client's task id (header `x-task-id`, or `metadata.task_id`) for the per-task token budget."""
    from_metadata = metadata.get("task_id") if isinstance(metadata, dict) else None
    if from_metadata is not None and not isinstance(from_metadata, str):
        raise BadRequest("task_id must be a string", field="metadata.task_id")
    if header is not None and from_metadata is not None and header != from_metadata:
        raise BadRequest("the x-task-id header and metadata.task_id differ", field="x-task-id")
    task_id = header if header is not None else from_metadata
    if task_id is not None and not TASK_ID.fullmatch(task_id):
        raise BadRequest("a task id is 1-128 printable ASCII characters without spaces",
                         field="x-task-id" if header is not None else "metadata.task_id")
    return task_id


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
    tool_rounds: int = 0


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
        system, messages, rounds = None, [Message(role="user", content=message)], 0
    else:
        system, messages, rounds = parse_messages(data["messages"])
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
        tool_rounds=rounds,
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
