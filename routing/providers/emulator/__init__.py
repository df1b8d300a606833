"""A loopback emulator of the Anthropic, OpenAI and Gemini HTTP APIs, for tests, demos and benchmarks.

It speaks each provider's wire format (streaming included) well enough for the
official SDKs, answers deterministically (see `brain`), and can inject latency
and faults through its `/_emulator/` control API (see `app` and `state`).
Run it with `python -m routing.providers.emulator`, or in-process with
`testing.EmulatorServer`. Plain Python: no Django imports.
"""

from __future__ import annotations

from .app import EmulatorApp, create_app
from .brain import count_tokens, decide, judge
from .schemas import fill_schema, request_kind
from .state import EmulatorConfig, EmulatorState, FaultRule
from .testing import EmulatorControl, EmulatorServer

__all__ = [
    "EmulatorApp",
    "EmulatorConfig",
    "EmulatorControl",
    "EmulatorServer",
    "EmulatorState",
    "FaultRule",
    "count_tokens",
    "create_app",
    "decide",
    "fill_schema",
    "judge",
    "request_kind",
]
