"""Maps a provider name to its class: dispatch is a lookup, never an if/elif chain."""

from __future__ import annotations

from .anthropic import AnthropicProvider
from .base import ChatProvider, ProviderConfig
from .gemini import GeminiProvider
from .guardrail import GuardrailProvider
from .openai import OpenAICompatibleProvider, OpenAIProvider

PROVIDERS: dict[str, type[ChatProvider]] = {
    "anthropic": AnthropicProvider,
    "openai": OpenAIProvider,
    "gemini": GeminiProvider,
    "openai_compatible": OpenAICompatibleProvider,
    "guardrail": GuardrailProvider,
}


def build_provider(name: str, config: ProviderConfig) -> ChatProvider:
    try:
        cls = PROVIDERS[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; known: {', '.join(sorted(PROVIDERS))}") from None
    return cls(config)
