"""Command line: `python -m routing.providers.emulator --host 127.0.0.1 --port 8765 --latency-ms 0`."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import uvicorn

from .app import EmulatorApp, InjectedCutLogFilter
from .state import EmulatorConfig, EmulatorState


def _model_version(value: str) -> tuple[str, str]:
    requested, sep, returned = value.partition("=")
    if not sep or not requested or not returned:
        raise argparse.ArgumentTypeError("expected REQUESTED=RETURNED")
    return requested, returned


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m routing.providers.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added before every completion response")
    parser.add_argument("--stream-chunk-delay-ms", type=float, default=0.0, help="between SSE frames")
    parser.add_argument(
        "--model-version",
        type=_model_version,
        action="append",
        default=[],
        metavar="REQUESTED=RETURNED",
        help="report RETURNED as the model version when REQUESTED is asked for (repeatable)",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    config = EmulatorConfig(
        latency_ms=args.latency_ms,
        stream_chunk_delay_ms=args.stream_chunk_delay_ms,
        model_versions=dict(args.model_version),
    )
    logging.getLogger("uvicorn.error").addFilter(InjectedCutLogFilter())
    print(f"provider emulator on http://{args.host}:{args.port} (control API under /_emulator/)", flush=True)
    uvicorn.run(
        EmulatorApp(EmulatorState(config)),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="off",
        backlog=4096,
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
