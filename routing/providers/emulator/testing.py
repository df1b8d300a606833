"""Run the emulator in-process for tests, and drive any emulator over its control API.

`EmulatorServer` starts uvicorn in a daemon thread on a socket bound to
127.0.0.1:0 (a free port), so tests get an isolated emulator with its own
state. `EmulatorControl` wraps the HTTP control API with urllib only, so the
same calls work against an emulator in another process (`make run`, benchmarks):

    with EmulatorServer() as emu:
        client = anthropic.AsyncAnthropic(api_key="x", base_url=emu.url)
        emu.set_faults({"fault": "503", "provider": "anthropic"})
        ...
        assert emu.stats()["total"] == 1
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.request
from types import TracebackType
from typing import Any, cast

import uvicorn

from .app import EmulatorApp, InjectedCutLogFilter
from .state import EmulatorConfig, EmulatorState


class EmulatorControl:
    """Client for a running emulator's `/_emulator/` control API."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}/_emulator/{path}", data=data, method=method, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read() or b"null")

    def stats(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._call("GET", "stats"))

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Update config keys: latency_ms, model_latency_ms, stream_chunk_delay_ms, model_versions."""
        return cast(dict[str, Any], self._call("POST", "config", settings))

    def set_faults(self, *rules: dict[str, Any] | list[dict[str, Any]], append: bool = False) -> list[dict[str, Any]]:
        """Replace (or, with append=True, extend) the fault rules; `set_faults()` clears them."""
        flat: list[dict[str, Any]] = []
        for rule in rules:
            flat.extend(rule if isinstance(rule, list) else [rule])
        if not flat and not append:
            return cast(list[dict[str, Any]], self._call("DELETE", "faults"))
        return cast(list[dict[str, Any]], self._call("POST", "faults?append=1" if append else "faults", flat))

    def faults(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._call("GET", "faults"))

    def reset(self) -> None:
        """Clear faults, config (back to the start-up values), stats and caches."""
        self._call("POST", "reset")


class EmulatorServer(EmulatorControl):
    """An emulator on a free loopback port, served by uvicorn in a background thread."""

    def __init__(
        self, *, latency_ms: float = 0.0, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        super().__init__(url="")
        self.app = EmulatorApp(EmulatorState(EmulatorConfig(latency_ms=latency_ms)))
        self._host, self._port, self._log_level = host, port, log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._filter = InjectedCutLogFilter()

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        if self._server is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(
            self.app,
            log_level=self._log_level,
            access_log=False,
            lifespan="off",
            backlog=4096,
            # Hung requests never finish by themselves; don't let them hold up stop().
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        logging.getLogger("uvicorn.error").addFilter(self._filter)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"emulator-{port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the emulator did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        logging.getLogger("uvicorn.error").removeFilter(self._filter)
        self._server = None
        self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
