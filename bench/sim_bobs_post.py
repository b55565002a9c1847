"""Benchmark: how many bookings/s and webhooks/s the Bob's Post simulator sustains, and its CPU.

    python bench/sim_bobs_post.py --rate 100 --seconds 20 --receiver-ms 50

Starts `orderflow sim bobs-post` as its own process (so its CPU is its own), a webhook receiver
that holds every webhook `--receiver-ms` before answering 204 (a merchant under load), and books
at `--rate` per second, open loop, over `--connections` keep-alive connections. Every normal
parcel sends 4 webhooks (collected … complete), `--progress-seconds` apart. After the load, it
waits for the webhooks still due, then prints: bookings/s achieved and their latency (from the
moment each was due, so a lagging simulator shows), webhooks received/s, lost (expected minus
received), the most in flight at the receiver, and the simulator's CPU (Linux /proc) per booking.
Load generator and receiver are raw asyncio HTTP/1.1, cheap next to the simulator.
To compare with other code, put it first on PYTHONPATH: the simulator process inherits it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

API_KEY = "bench-key"
SECRET = "bench-secret"
TICK = os.sysconf("SC_CLK_TCK")


class Receiver(asyncio.Protocol):
    """A minimal HTTP/1.1 webhook endpoint: counts events and concurrent requests."""

    delay = 0.0
    events: set[bytes] = set()
    received = 0
    in_flight = 0
    most_in_flight = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            eol = head.find(b"\r\n", at)
            length = int(head[at + 15 : eol if eol >= 0 else len(head)]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            cls = Receiver
            cls.received += 1
            cls.events.add(json.loads(body)["event_id"].encode())
            cls.in_flight += 1
            cls.most_in_flight = max(cls.most_in_flight, cls.in_flight)
            asyncio.get_running_loop().call_later(cls.delay, self.answer)

    def answer(self) -> None:
        Receiver.in_flight -= 1
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")


def booking(i: int) -> bytes:
    return json.dumps(
        {
            "reference": f"ORD-{i:07d}",
            "recipient": {
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "phone": "+44 20 7946 0000",
                "address": {
                    "line1": "12 St James's Sq",
                    "line2": None,
                    "city": "London",
                    "postcode": "SW1Y 4JH",
                    "country": "GB",
                },
            },
            "parcels": [{"weight_grams": 1200, "description": "2 x Widget"}],
            "service": "standard",
        }
    ).encode()


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"content-length:")
    if at >= 0:
        await reader.readexactly(int(lower[at + 15 : lower.find(b"\r\n", at)]))
    return status


async def load(
    port: int, rate: float, seconds: float, connections: int, timeout: float
) -> tuple[list[float], int, int]:
    """Book `rate`/s for `seconds`: the latency of each answer from its due time, the bookings
    answered 201, and those never sent (due more than `timeout` ago: a client gives up)."""
    total = int(rate * seconds)
    start = time.monotonic() + 0.2
    latencies: list[float] = []
    booked = skipped = 0
    tickets = iter(range(total))

    async def connection() -> None:
        nonlocal booked, skipped
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in tickets:
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if time.monotonic() - due > timeout:
                skipped += 1
                continue
            body = booking(i)
            writer.write(
                b"POST /v1/shipments HTTP/1.1\r\nHost: sim\r\n"
                b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
                b"Idempotency-Key: bench-" + str(i).encode() + b"\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            try:
                status = await asyncio.wait_for(read_response(reader), timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                status = 0  # no answer in time: an error, on a fresh connection
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            latencies.append(time.monotonic() - due)
            booked += status == 201
        writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return latencies, booked, skipped


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)  # so that `finally` stops the simulator
    Receiver.delay = args.receiver_ms / 1000
    server = await loop.create_server(Receiver, "127.0.0.1", 0)
    hook_port = server.sockets[0].getsockname()[1]
    port = free_port()
    command = [
        *(sys.executable, "-m", "orderflow", "sim", "bobs-post", "--port", str(port)),
        *("--api-key", API_KEY, "--webhook-secret", SECRET),
        *("--webhook-url", f"http://127.0.0.1:{hook_port}/hook"),
        *("--progress-seconds", str(args.progress_seconds)),
        *(("--webhook-senders", str(args.webhook_senders)) if args.webhook_senders else ()),
    ]
    sim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                http("GET", f"{base}/_sim/stats")
                break
            except OSError:
                await asyncio.sleep(0.05)
        http("PATCH", f"{base}/_sim/switches", {"rate_limit_per_second": 1_000_000})
        cpu0, bench0, t0 = cpu_seconds(sim.pid), time.process_time(), time.monotonic()
        latencies, booked, skipped = await load(
            port, args.rate, args.seconds, args.connections, args.timeout
        )
        t_load = time.monotonic() - t0
        hooks_during_load = Receiver.received
        expected = 4 * booked
        deadline = time.monotonic() + 4 * args.progress_seconds + args.drain_seconds
        while len(Receiver.events) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        t_all = time.monotonic() - t0
        cpu = cpu_seconds(sim.pid) - cpu0
        try:
            stats = http("GET", f"{base}/_sim/stats")
        except OSError:
            stats = {"webhooks_sent": "?", "webhooks_failed": "?"}  # it did not answer in 10 s
    finally:
        sim.terminate()
        try:
            sim.wait(5)
        except subprocess.TimeoutExpired:
            sim.kill()  # a simulator busy enough not to handle SIGTERM in time
            sim.wait()
        server.close()
    lat = sorted(latencies) or [float("nan")]
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(
        f"offered {args.rate:g}/s for {args.seconds:g} s, receiver holds {args.receiver_ms:g} ms, "
        f"senders {args.webhook_senders or 'default'}\n"
        f"  bookings: {booked} booked, {len(latencies) - booked} failed or timed out, "
        f"{skipped} not sent (over {args.timeout:g} s late), {booked / t_load:.1f}/s booked, "
        f"latency p50 {p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms "
        f"mean {statistics.fmean(lat) * 1000:.1f} ms\n"
        f"  webhooks: {len(Receiver.events)}/{expected} events received "
        f"({max(0, expected - len(Receiver.events))} missing at the end; "
        f"sim says sent {stats['webhooks_sent']}, "
        f"failed {stats['webhooks_failed']}), {hooks_during_load / t_load:.1f}/s during the load, "
        f"{Receiver.received / t_all:.1f}/s overall ({t_all:.1f} s); "
        f"at most {Receiver.most_in_flight} in flight\n"
        f"  simulator CPU: {cpu:.2f} s = {cpu / max(booked, 1) * 1000:.2f} ms per booking, "
        f"{cpu / t_all * 100:.0f} % of a core; benchmark process "
        f"{time.process_time() - bench0:.2f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=50, help="bookings offered per second")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--connections", type=int, default=16, help="booking connections")
    parser.add_argument("--receiver-ms", type=float, default=50, help="webhook answer delay")
    parser.add_argument("--progress-seconds", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=10, help="booking timeout (an error)")
    parser.add_argument("--drain-seconds", type=float, default=20, help="extra wait for webhooks")
    parser.add_argument("--webhook-senders", type=int, default=0, help="0: the simulator's default")
    asyncio.run(main(parser.parse_args()))
