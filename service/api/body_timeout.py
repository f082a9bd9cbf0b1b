"""A request body that stops arriving is answered 408 ``request_timeout``.

uvicorn waits for a declared body as long as the connection stays open, so a client that
sends headers (or part of an upload) and then nothing would hold a connection, a worker
task and a partial file for ever. This ASGI middleware bounds each wait for the next body
chunk; once the body is complete, receiving is left alone (server-sent events wait for a
disconnect as long as they stream).

An answer sent before a declared body was read (a refusal from the headers alone) closes the
connection: the server would otherwise wait on it for the rest of a body that may never
come, and take the client's next request for part of it."""

from __future__ import annotations

import asyncio

from isvos.errors import IsvosError
from service.api.errors import error_response


class BodyTimeout(IsvosError):
    code = "request_timeout"


class BodyIdleTimeout:
    def __init__(self, app, idle_s: float) -> None:
        self.app = app
        self.idle_s = idle_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length", b"0") not in (b"0", b"") or (
            b"transfer-encoding" in headers
        )
        complete = not declared
        timed_out: BodyTimeout | None = None
        replaced = False

        async def timed_receive():
            nonlocal complete, timed_out
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.idle_s)
            except TimeoutError:
                timed_out = BodyTimeout(
                    message=f"the request body stopped arriving for {self.idle_s:g} s"
                )
                raise timed_out from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def checked_send(message):
            # A body parser may turn the timeout into its own 400: answer 408 instead.
            nonlocal replaced
            if replaced:
                return
            if timed_out is not None and message["type"] == "http.response.start":
                replaced = True
                response = error_response(timed_out.code, timed_out.message)
                response.headers["connection"] = "close"
                await response(scope, receive, send)
                return
            if message["type"] == "http.response.start" and not complete:
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"connection", b"close")]}  # fmt: skip
            await send(message)

        await self.app(scope, timed_receive, checked_send)
