"""The guardrail chain for `refusal_required`: answers with a policy refusal, calls no model."""

from __future__ import annotations

from collections.abc import AsyncIterator

from routing.engine.pricing import Usage

from .base import ChatProvider, Completion, ProviderError, StreamDelta, StructuredResult

REFUSAL_TEXT = (
    "I can't help with that request. It falls outside what this service is allowed to assist with. "
    "If you believe this is a mistake, rephrase the request or contact the operator of this application."
)
GUARDRAIL_VERSION = "guardrail-refusal-v1"


class GuardrailProvider(ChatProvider):
    name = "guardrail"

    async def complete(self, *, model, system, messages, max_tokens, timeout) -> Completion:
        return Completion(text=REFUSAL_TEXT, usage=Usage(), model_version=GUARDRAIL_VERSION, finish_reason="stop")

    async def stream(self, *, model, system, messages, max_tokens, timeout) -> AsyncIterator[StreamDelta]:
        yield StreamDelta(text=REFUSAL_TEXT)
        yield StreamDelta(final=Completion(text="", usage=Usage(), model_version=GUARDRAIL_VERSION))

    async def structured(self, **kwargs) -> StructuredResult:
        raise ProviderError("the guardrail chain has no structured output", provider=self.name, retryable=False)
