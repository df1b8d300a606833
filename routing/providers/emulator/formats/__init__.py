"""Wire formats of the emulated providers, and the registry the app routes through."""

from __future__ import annotations

from .anthropic_messages import AnthropicMessages
from .base import Completion, EmulatedRequest, ReplyMeta, RequestError, Turn, Usage, WireFormat
from .gemini_generate import GeminiGenerate
from .openai_chat import OpenAIChat, models_list

FORMATS: dict[str, WireFormat] = {f.name: f for f in (AnthropicMessages(), OpenAIChat(), GeminiGenerate())}

__all__ = [
    "FORMATS",
    "Completion",
    "EmulatedRequest",
    "ReplyMeta",
    "RequestError",
    "Turn",
    "Usage",
    "WireFormat",
    "models_list",
]
