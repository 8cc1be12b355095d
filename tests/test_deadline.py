"""The request deadline's own cost: a request it watched leaves nothing for the cycle collector.

Its timer used to re-arm itself through a closure that named itself, so every request left a cycle of nine
cells, a function and its watch for the garbage collector (docs/benchmarks.md, Tiles).
"""

import asyncio
import gc

from twin.deadline import RequestDeadline


async def _answer(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _requests(app, n: int) -> list[dict]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    for _ in range(n):
        await app({"type": "http", "method": "GET", "path": "/"}, receive, send)
    return sent


def test_a_watched_request_leaves_no_reference_cycle():
    app = RequestDeadline(_answer, seconds=30, retry_after_s=1)
    gc.collect()
    gc.disable()
    try:
        sent = asyncio.run(_requests(app, 200))
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200] * 200
    assert unreachable == 0  # 2,824 with the timer that named itself
