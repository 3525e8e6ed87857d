"""A small HTTP/1.1 load generator on asyncio streams, light enough to share the machine.

It keeps ``connections`` keep-alive connections busy for ``seconds``, each sending the
next request as soon as the previous answer arrived, and records every latency.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    """Requests completed, their statuses and latencies, over the measured time."""

    requests: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        return statistics.quantiles(self.latencies, n=100)[int(p) - 1] if len(self.latencies) > 1 else self.latencies[0]


async def _one_connection(host: str, port: int, make_request: Callable[[int], bytes], counter: itertools.count,
                          deadline: float, result: LoadResult, limit: int | None, pace: float | None,
                          begun: float) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            n = next(counter)
            if limit is not None and n >= limit:
                break
            if pace is not None:  # request n leaves at begun + n * pace, whatever the connection
                await asyncio.sleep(max(0.0, begun + n * pace - time.perf_counter()))
            request = make_request(n)
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            if not status_line:  # the server closed the connection while it was idle (keep-alive timeout): again
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                started = time.perf_counter()
                writer.write(request)
                status_line = await reader.readline()
            status = int(status_line.split(b" ", 2)[1])
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            result.requests += 1
    finally:
        writer.close()


def run_load(host: str, port: int, make_request: Callable[[int], bytes], *, connections: int, seconds: float,
             requests: int | None = None, pace: float | None = None) -> LoadResult:
    """Drive ``make_request(n)`` against host:port for ``seconds`` (or until ``requests`` were sent); return what happened.

    ``pace``: send a request every ``pace`` seconds (an open load), instead of each
    connection sending its next one as soon as the last was answered.
    """

    async def main() -> LoadResult:
        result = LoadResult()
        counter = itertools.count()
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(
            *(_one_connection(host, port, make_request, counter, deadline, result, requests, pace, started)
              for _ in range(connections))
        )
        result.seconds = time.perf_counter() - started
        return result

    return asyncio.run(main())


def post(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """Return the bytes of an HTTP/1.1 POST with a JSON body."""
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
