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


class _Watch:
    """One request's clock: when it last received input, whether it started its response, its 503 if it had
    one. Its timer is cancelled when the request ends, which drops the timer's hold on the watch: a request
    leaves no reference cycle for the garbage collector (a closure that re-armed itself by name did)."""
    __slots__ = ("deadline", "scope", "receive", "send", "loop", "task", "input", "started", "answer", "timer")

    def __init__(self, deadline: "RequestDeadline", scope, receive, send):
        self.deadline, self.scope, self.receive, self.send = deadline, scope, receive, send
        self.loop, self.task = asyncio.get_running_loop(), asyncio.current_task()
        self.input, self.started, self.answer = self.loop.time(), False, None
        self.timer = self.loop.call_later(deadline.seconds, self.due)

    async def receiving(self):
        message = await self.receive()
        self.input = self.loop.time()
        return message

    async def sending(self, message):
        if self.answer is not None:  # the client has had its 503
            raise asyncio.CancelledError
        self.started = True
        await self.send(message)

    def due(self) -> None:
        if self.started:  # a response already started is never cut
            return
        left = self.input + self.deadline.seconds - self.loop.time()
        if left > 0:
            self.timer = self.loop.call_later(left, self.due)
            return
        scope = self.scope
        log.warning("503 request_timeout for %s %s: no answer within %.0f s", scope["method"], scope["path"],
                    self.deadline.seconds)
        self.answer = self.loop.create_task(self.deadline.timed_out(scope, self.receive, self.send))
        self.task.cancel()


class RequestDeadline:
    """The request runs in its own task, watched by one timer. When the timer finds it late, its 503 goes
    out from a task of its own and the request's task is cancelled: the work unwinds after the answer.
    (Running the work in a second task, awaited with a timeout, would cost a task and a turn of the event
    loop on every request.)"""

    def __init__(self, app, seconds: float, retry_after_s: int):
        self.app, self.seconds, self.retry_after_s = app, seconds, retry_after_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        watch = _Watch(self, scope, receive, send)
        try:
            await self.app(scope, watch.receiving, watch.sending)
        except BaseException as e:
            if watch.answer is None:
                raise
            if not isinstance(e, asyncio.CancelledError):
                log.info("request abandoned at its deadline ended with %s", type(e).__name__)
        finally:
            watch.timer.cancel()
        if watch.answer is not None:
            watch.task.uncancel()  # the cancellation was this deadline's own, and is over
            await watch.answer

    async def timed_out(self, scope, receive, send) -> None:
        response = JSONResponse(
            {"code": "request_timeout", "description": f"The request did not finish within {self.seconds:.0f} s "
             "(the database is not answering); retry shortly."},
            status_code=503, headers={"Retry-After": str(self.retry_after_s)})
        await response(scope, receive, send)
