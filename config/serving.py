"""The ASGI handler for the key-authenticated serving endpoints: Django's, minus the thread hops.

Django's `ASGIHandler` wraps every request in a `ThreadSensitiveContext` and fires the
`request_started`/`request_finished` signals, whose receivers (`reset_queries`,
`close_old_connections`) are sync functions run through `sync_to_async`: a hop to a
worker thread and back, twice per request, and the largest share of the gateway's own
overhead in the profile (docs/BENCHMARKS.md). The serving views never touch a database
connection on the event loop — reads go through `routing.runtime.run_db`'s own thread
pool, which closes its connections itself, and rows go to the decision-log writer
thread — so those receivers have nothing to do here.

This handler keeps the rest of Django's request cycle exactly (body reading, request
parsing, the async middleware chain, URL resolution, the client-disconnect watch that
cancels the view) and only drops the context and the two signal round-trips. Pages,
admin and the governance API keep the full handler.
"""

from __future__ import annotations

import asyncio

from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.urls import set_script_prefix

SERVING_MIDDLEWARE = ["routing.api.middleware.ServingHeadersMiddleware"]


class ServingHandler(ASGIHandler):
    """Only the async-native serving middleware; no per-request thread-sensitive context or signals."""

    def load_middleware(self, is_async: bool = False) -> None:
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = SERVING_MIDDLEWARE  # read once, here, at start-up
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            raise ValueError(f"the serving handler takes HTTP only, not {scope['type']}")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):  # type: ignore[no-untyped-def]
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            _close(error_response)
            return

        async def process_request() -> object:
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client went away while we were sending
            return response

        # As Django does: watch for a disconnect while the view runs, and cancel the view
        # if it comes first (the views record a row for a cancelled request themselves).
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request()),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            pass
        else:
            _close(response)
        body_file.close()


def _close(response) -> None:  # type: ignore[no-untyped-def]
    """`HttpResponse.close()` without the `request_finished` signal (see the module docstring)."""
    for closer in response._resource_closers:
        try:
            closer()
        except Exception:  # noqa: BLE001, S110 - Django ignores closer errors too
            pass
    response._resource_closers.clear()
    response.closed = True
