"""Async-native middleware for the key-authenticated serving API.

The serving endpoints need no sessions, cookies, CSRF or messages (they authenticate
with API keys), and Django's classic middleware runs each sync hook in a thread hop
under ASGI. So the serving paths get their own handler with only this middleware,
which sets the same security headers without leaving the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class ServingHeadersMiddleware:
    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)
        for name, value in SECURITY_HEADERS.items():
            if name not in response:
                response[name] = value
        return response
