"""An HTTP/1.1 keep-alive load generator, run as its own process (`python -m bench.loadgen`).

Two modes:
- closed loop (`--rate 0`): `--connections` clients each send the next request as soon as
  the previous answer arrives; gives the peak requests/s (used when `wrk` is missing).
- open loop (`--rate R`): requests are due at a fixed rate whatever the server does, and
  each latency is measured from the moment its request was *due*, not sent, so a stalled
  server shows up in the percentiles instead of quietly lowering the offered load
  (coordinated omission).

Prints one JSON object: requests, errors, seconds, rps, and latency percentiles in ms.
The requests are built once as raw bytes and answers parsed by Content-Length, so the
generator spends little CPU per request on a machine it shares with the server.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

from bench.stats import percentile

#: An answer slower than this counts as an error instead of hanging the run.
REQUEST_TIMEOUT_SECONDS = 10.0


def build_request(url: str, body: bytes | None, headers: dict[str, str]) -> tuple[str, int, bytes]:
    """(host, port, raw request bytes) for a keep-alive POST (with `body`) or GET."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    method = "POST" if body is not None else "GET"
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


class Connection:
    """One keep-alive connection that sends the prepared request and reads one answer."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host, self.port, self.request = host, port, request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self) -> bool:
        """Send the request and read the whole answer; True for a 2xx answer."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return head[9:10] == b"2"

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def closed_loop(host: str, port: int, request: bytes, connections: int, seconds: float, ramp: float
                      ) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(delay: float) -> None:
        nonlocal errors
        await asyncio.sleep(delay)
        conn = Connection(host, port, request)
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                ok = await asyncio.wait_for(conn.call(), REQUEST_TIMEOUT_SECONDS)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                conn.close()
                ok = False
            latencies.append((time.perf_counter() - start) * 1000.0)
            errors += not ok
        conn.close()

    await asyncio.gather(*(client(i * ramp / connections) for i in range(connections)))
    return latencies, errors


async def open_loop(host: str, port: int, request: bytes, connections: int, seconds: float, rate: float
                    ) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(Connection(host, port, request))
    start = time.perf_counter()
    total = int(seconds * rate)

    async def one(due: float) -> None:
        nonlocal errors
        conn = await idle.get()
        try:
            ok = await asyncio.wait_for(conn.call(), REQUEST_TIMEOUT_SECONDS)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            conn.close()
            ok = False
        latencies.append((time.perf_counter() - due) * 1000.0)
        errors += not ok
        idle.put_nowait(conn)

    pending = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.ensure_future(one(due)))
    await asyncio.gather(*pending)
    while not idle.empty():
        idle.get_nowait().close()
    return latencies, errors


def run(url: str, body: bytes | None, seconds: float, connections: int, rate: float = 0.0, ramp: float = 0.0,
        headers: dict[str, str] | None = None) -> dict[str, float]:
    """Load `url` for `seconds`; `rate` 0 = closed loop, whose connections open one by one over
    `ramp` seconds. Returns the summary the CLI prints."""
    host, port, request = build_request(url, body, headers or {})
    started = time.perf_counter()
    if rate > 0:
        latencies, errors = asyncio.run(open_loop(host, port, request, connections, seconds, rate))
    else:
        latencies, errors = asyncio.run(closed_loop(host, port, request, connections, seconds, ramp))
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies), "errors": errors, "seconds": elapsed,
        "rps": (len(latencies) - errors) / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99), "max_ms": max(latencies, default=float("nan")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--body", help="JSON body: POST it (default: GET)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s (open loop); 0 = closed loop")
    parser.add_argument("--ramp", type=float, default=0.0, help="closed loop: open the connections over this many s")
    args = parser.parse_args(argv)
    body = args.body.encode() if args.body is not None else None
    print(json.dumps(run(args.url, body, args.seconds, args.connections, args.rate, args.ramp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
