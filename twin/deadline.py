"""A deadline per request: a database that stops answering without closing anything cannot hold a request.

A frozen PostgreSQL (processes stopped, a VM paused, a stalled disk) still has its sockets
acknowledged by the kernel, so nothing on the client side fails: a pooled connection waits in its
pre-ping or its query forever, and the server's statement_timeout cannot fire. TCP keepalives and
tcp_user_timeout do not help either (the kernel acknowledges them). So the request itself has a
deadline: if it has not started its response `seconds` after it last received input (its body
counts, so a slow upload is not cut), it is answered 503 with Retry-After at once, and its work is
cancelled in the background (psycopg then gives the server 10 s to acknowledge the cancellation
before it closes the connection; the pool replaces it). A response already started is never cut:
a long export streams on.
"""

import asyncio
import logging

from starlette.responses import JSONResponse

log = logging.getLogger("twin.deadline")


def _reap(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.info("request abandoned at its deadline ended with %s", type(task.exception()).__name__)


class RequestDeadline:
    def __init__(self, app, seconds: float, retry_after_s: int):
        self.app, self.seconds, self.retry_after_s = app, seconds, retry_after_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        state = {"input": loop.time(), "started": False, "abandoned": False}

        async def receiving():
            message = await receive()
            state["input"] = loop.time()
            return message

        async def sending(message):
            if state["abandoned"]:  # the client has had its 503
                raise asyncio.CancelledError
            state["started"] = True
            await send(message)

        work = asyncio.ensure_future(self.app(scope, receiving, sending))
        try:
            while not work.done():
                left = state["input"] + self.seconds - loop.time()
                if state["started"]:
                    await asyncio.wait({work})
                elif left > 0:
                    await asyncio.wait({work}, timeout=left)
                else:
                    break
        except asyncio.CancelledError:
            work.cancel()
            raise
        if work.done():
            return work.result()
        state["abandoned"] = True
        work.cancel()
        work.add_done_callback(_reap)
        log.warning("503 request_timeout for %s %s: no answer within %.0f s", scope["method"], scope["path"],
                    self.seconds)
        response = JSONResponse(
            {"code": "request_timeout", "description": f"The request did not finish within {self.seconds:.0f} s "
             "(the database is not answering); retry shortly."},
            status_code=503, headers={"Retry-After": str(self.retry_after_s)})
        await response(scope, receive, send)
