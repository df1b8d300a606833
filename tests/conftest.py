"""Shared fixtures: the provider emulator on loopback, a live gateway (uvicorn), personas and keys.

Providers are reached only through the official SDKs pointed at the emulator; nothing
is monkeypatched. Tests that go through the decision-log writer thread use
`transaction=True` so that thread's database connection sees (and writes) real rows.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from django.conf import settings

from routing.providers.emulator.testing import EmulatorServer

# Tests speak plain HTTP on loopback: production's HTTPS-only redirects and cookies are off here
# (`manage.py check --deploy` is checked against the real settings in tests/test_settings.py).
settings.SECURE_SSL_REDIRECT = False
settings.SESSION_COOKIE_SECURE = False
settings.CSRF_COOKIE_SECURE = False


@pytest.fixture(scope="session", autouse=True)
def _close_serving_connections(django_db_setup, django_db_blocker):
    """Close the serving pool's connections before pytest-django drops the test database."""
    yield
    from routing.runtime import close_db_connections, get_runtime

    get_runtime().recorder.flush()
    get_runtime().recorder.close()
    with django_db_blocker.unblock():
        close_db_connections()


@pytest.fixture(scope="session", autouse=True)
def _no_shared_decisions_from_earlier_runs() -> None:
    """The shared decision cache (Redis) is keyed by application and policy ids, which every new
    test database hands out again from 1: entries an earlier test run left (they live 10 minutes)
    would answer this run's requests without a sentinel call. Only its keys are deleted."""
    from routing.engine.cache import REDIS_PREFIX
    from routing.runtime import decision_cache_redis_url

    url = decision_cache_redis_url()
    if url:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            keys = list(client.scan_iter(match=f"{REDIS_PREFIX}:*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorServer]:
    server = EmulatorServer().start()
    # Every provider without a key goes to the emulator: make sure none has a key here.
    settings.EMULATOR_URL = server.url
    settings.ANTHROPIC_API_KEY = settings.OPENAI_API_KEY = settings.GEMINI_API_KEY = None
    yield server
    server.stop()


@pytest.fixture
def emu(emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    """The session emulator, reset before and after the test."""
    emulator.reset()
    yield emulator
    emulator.reset()


@pytest.fixture
def runtime(emu):
    from routing.runtime import get_runtime

    rt = get_runtime()
    rt.invalidate()
    yield rt
    rt.recorder.flush()
    rt.invalidate()


@pytest.fixture
def catalog(db):
    """The default catalog and the bootstrap policy."""
    from django.core.management import call_command

    call_command("bootstrap", verbosity=0)


@pytest.fixture
def api_key(catalog) -> str:
    from routing.services import api_key_create, application_get_or_create

    _, raw = api_key_create(name="test key", application=application_get_or_create(name="test-app"))
    return raw


@pytest.fixture
def auth(api_key) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}


def flush_log() -> None:
    from routing.runtime import get_runtime

    assert get_runtime().recorder.flush(15), "decision log did not drain"


class LiveGateway:
    def __init__(self) -> None:
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LiveGateway:
        from config.asgi import application

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._server = uvicorn.Server(
            uvicorn.Config(application, log_level="warning", access_log=False, lifespan="off", backlog=4096)
        )
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(sock),), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.01)
        return self

    async def _serve(self, sock: socket.socket) -> None:
        from routing.runtime import get_runtime

        assert self._server is not None
        try:
            await self._server.serve(sockets=[sock])
        finally:
            await get_runtime().close_providers()  # this loop's provider connection pools

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(10)


@pytest.fixture
def live_gateway(transactional_db, emu, runtime, catalog) -> Iterator[LiveGateway]:
    """The real ASGI app served by uvicorn on a loopback port, in its own thread and event loop."""
    from audits.sampling import get_sampler

    server = LiveGateway().start()
    yield server
    runtime.recorder.flush()
    # The sampler thread may still be deciding on this test's requests: done before the database is
    # emptied, or it finds their policy gone, samples at the default rate, and a judge call lands
    # in the next test's emulator ledger.
    get_sampler().flush()
    server.stop()
