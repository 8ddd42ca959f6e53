"""pynsq (the official Python client, Tornado-based), unchanged, against triaged.

Each scenario runs as one coroutine on a fresh event loop (`asyncio.run`):
pynsq's Reader and Writer take `IOLoop.current()` when built, which inside the
coroutine is Tornado's wrapper of that running loop, and the loop is stopped
and closed when the scenario returns or times out. Nothing waits on a bare
sleep: every wait is for a condition, with a deadline.
"""

import asyncio
import time

import nsq
import pytest

from support import assert_same_bodies, payloads

# The longest any one scenario may take, start to finish.
SCENARIO_TIMEOUT = 30.0
CHANNEL = "interop"


def run(scenario, timeout=SCENARIO_TIMEOUT):
    """Runs `scenario()` on a new event loop, which is closed afterwards."""
    async def bounded():
        return await asyncio.wait_for(scenario(), timeout)
    return asyncio.run(bounded())


async def wait_until(predicate, what, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        await asyncio.sleep(0.01)


async def connected_writer(broker, **conn_kwargs):
    writer = nsq.Writer([broker.tcp_address], **conn_kwargs)
    await wait_until(lambda: any(c.connected() for c in writer.conns.values()),
                     "the pynsq Writer to connect and IDENTIFY")
    return writer


def close_writer(writer):
    for conn in list(writer.conns.values()):
        conn.close()


async def publish(writer, method, *args):
    """Calls Writer.pub/mpub/dpub and waits for the broker's answer, which
    must be OK."""
    future = asyncio.get_running_loop().create_future()

    def answered(conn, data):
        if future.done():
            return
        if isinstance(data, Exception):
            future.set_exception(AssertionError("%s failed: %r" % (method, data)))
        else:
            future.set_result(data)

    getattr(writer, method)(*args, callback=answered)
    response = await asyncio.wait_for(future, 10)
    assert response == b"OK", "%s answered %r" % (method, response)
    return response


class Collector:
    """A Reader's message handler that records every delivery and signals
    once `expected` deliveries have arrived. `verdict(message, deliveries)`
    decides what the handler returns (True finishes, False requeues)."""

    def __init__(self, expected, verdict=None):
        self.expected = expected
        self.verdict = verdict or (lambda message, deliveries: True)
        self.deliveries = []
        self.done = asyncio.Event()

    def __call__(self, message):
        self.deliveries.append({
            "id": message.id,
            "body": message.body,
            "attempts": message.attempts,
            "timestamp": message.timestamp,
            "received": time.monotonic(),
        })
        if len(self.deliveries) >= self.expected:
            self.done.set()
        return self.verdict(message, self.deliveries)

    async def wait(self, timeout=20.0):
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError("got %d of %d deliveries within %.0fs" % (
                len(self.deliveries), self.expected, timeout)) from None

    def bodies(self):
        return [d["body"] for d in self.deliveries]


def make_reader(broker, topic, handler, **kwargs):
    kwargs.setdefault("max_in_flight", 10)
    return nsq.Reader(
        topic=topic,
        channel=CHANNEL,
        message_handler=handler,
        nsqd_tcp_addresses=[broker.tcp_address],
        **kwargs,
    )


async def settle(broker, topic):
    """Waits (off the loop) until every delivery has been FINished on the broker."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, broker.wait_channel_settled, topic, CHANNEL)


def assert_first_deliveries(deliveries, published_after_ns):
    now_ns = time.time_ns()
    ids = [d["id"] for d in deliveries]
    assert len(set(ids)) == len(ids), "message ids repeat across distinct messages"
    for d in deliveries:
        assert len(d["id"]) == 16, d["id"]
        assert d["attempts"] == 1, d
        # nsqd stamps each message with the publish time, in ns since the epoch.
        assert published_after_ns - 5e9 <= d["timestamp"] <= now_ns + 5e9, d["timestamp"]


DEFER_MS = 500


@pytest.mark.parametrize("compression", [{}, {"snappy": True}, {"deflate": True}],
                         ids=["plain", "snappy", "deflate"])
def test_writer_pub_mpub_dpub_reader_receives_all(broker, topic, compression):
    bodies = payloads("pynsq-" + ("-".join(compression) or "plain"))
    singles, batch = bodies[:10], bodies[10:]
    deferred = b"deferred body " + topic.encode()

    async def scenario():
        started_ns = time.time_ns()
        collector = Collector(len(bodies) + 1)
        # Subscribe first, so the topic has its channel before anything is published.
        reader = make_reader(broker, topic, collector, **compression)
        await wait_until(lambda: reader.conns, "the pynsq Reader to connect and SUB")
        writer = await connected_writer(broker)
        try:
            for body in singles:
                await publish(writer, "pub", topic, body)
            await publish(writer, "mpub", topic, batch)
            dpub_sent = time.monotonic()
            await publish(writer, "dpub", topic, DEFER_MS, deferred)
            await collector.wait()
            stats = await settle(broker, topic)
        finally:
            close_writer(writer)
            reader.close()
        return collector, started_ns, dpub_sent, stats

    collector, started_ns, dpub_sent, stats = run(scenario)
    assert_same_bodies(collector.bodies(), bodies + [deferred])
    assert_first_deliveries(collector.deliveries, started_ns)
    (late,) = [d for d in collector.deliveries if d["body"] == deferred]
    waited = late["received"] - dpub_sent
    assert waited >= DEFER_MS / 1000 - 0.02, "DPUB %d ms was delivered after %.3fs" % (DEFER_MS, waited)
    assert stats["message_count"] == len(bodies) + 1, stats
    assert stats["requeue_count"] == 0, stats


@pytest.mark.parametrize("compression", [{}, {"snappy": True}, {"deflate": True}],
                         ids=["tls", "tls+snappy", "tls+deflate"])
def test_tls_reader_and_writer_on_a_broker_that_requires_tls(tls_broker, topic, compression):
    """pynsq's TLS mode (tls_v1, verifying the broker's certificate), alone
    and under snappy or deflate, against a broker with --tls-required."""
    import ssl
    tls = dict(compression, tls_v1=True,
               tls_options={"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": tls_broker.cert})
    bodies = payloads("pynsq-tls-" + ("-".join(compression) or "plain"))

    async def scenario():
        collector = Collector(len(bodies))
        reader = make_reader(tls_broker, topic, collector, **tls)
        await wait_until(lambda: reader.conns, "the pynsq Reader to connect over TLS and SUB")
        writer = await connected_writer(tls_broker, **tls)
        try:
            await publish(writer, "mpub", topic, bodies)
            await collector.wait()
            stats = await settle(tls_broker, topic)
        finally:
            close_writer(writer)
            reader.close()
        return collector, stats

    collector, stats = run(scenario)
    assert_same_bodies(collector.bodies(), bodies)
    assert stats["clients"], stats
    assert all(c["tls"] and c["tls_version"].startswith("TLS1.") for c in stats["clients"]), stats


@pytest.mark.parametrize("compression", [{"snappy": True}, {"deflate": True, "deflate_level": 1}],
                         ids=["snappy", "deflate"])
def test_compressed_writer_publishes(broker, topic, compression):
    """The producer side of compression: the broker must decode what a
    snappy or deflate Writer sends (the Reader here is plain)."""
    bodies = payloads("pynsq-writer")

    async def scenario():
        collector = Collector(len(bodies))
        reader = make_reader(broker, topic, collector)
        await wait_until(lambda: reader.conns, "the pynsq Reader to connect and SUB")
        writer = await connected_writer(broker, **compression)
        try:
            for body in bodies[:5]:
                await publish(writer, "pub", topic, body)
            await publish(writer, "mpub", topic, bodies[5:])
            await collector.wait()
            await settle(broker, topic)
        finally:
            close_writer(writer)
            reader.close()
        return collector

    collector = run(scenario)
    assert_same_bodies(collector.bodies(), bodies)


def test_requeue_redelivers_with_attempts_2(broker, topic):
    body = b"requeue me " + topic.encode()

    def fail_first(message, deliveries):
        # False makes pynsq send REQ (with requeue_delay=0: `REQ <id> 0`).
        return len(deliveries) > 1

    async def scenario():
        collector = Collector(2, verdict=fail_first)
        # requeue_delay=0 so the REQ asks for an immediate retry; a short
        # max_backoff_duration so pynsq's backoff after the failure stays short.
        reader = make_reader(broker, topic, collector, max_in_flight=1, requeue_delay=0,
                             max_backoff_duration=1)
        await wait_until(lambda: reader.conns, "the pynsq Reader to connect and SUB")
        writer = await connected_writer(broker)
        try:
            await publish(writer, "pub", topic, body)
            await collector.wait()
            stats = await settle(broker, topic)
        finally:
            close_writer(writer)
            reader.close()
        return collector, stats

    collector, stats = run(scenario)
    first, second = collector.deliveries
    assert first["body"] == body and second["body"] == body
    assert (first["attempts"], second["attempts"]) == (1, 2)
    assert first["id"] == second["id"], "a requeued message keeps its id (as nsqd does)"
    assert len(collector.deliveries) == 2
    assert stats["requeue_count"] == 1, stats
    assert stats["message_count"] == 1, stats


def test_http_pub_and_mpub_reach_reader(broker, topic):
    """Publishing over nsqd's HTTP API (/pub, /pub?defer=, /mpub text and
    binary), consuming with pynsq."""
    pub_body = b"http pub \x00\x01\xff binary-safe \n newline inside"
    deferred = b"http deferred"
    text_lines = [b"line one", b"line two", b"line three"]
    binary_msgs = [b"bin \n with newline", b"\x00" * 10, b"x" * 5000]

    # Create the topic and its channel first, so nothing waits for a consumer.
    status, _, body = broker.http("POST", "/channel/create", topic=topic, channel=CHANNEL)
    assert status == 200, body

    def post(path, payload, **params):
        status, headers, answer = broker.http("POST", path, body=payload, topic=topic, **params)
        assert status == 200, (path, params, status, answer)
        assert answer == b"OK", answer
        assert headers.get("X-NSQ-Content-Type") == "nsq; version=1.0", dict(headers)

    post("/pub", pub_body)
    post("/pub", deferred, defer="300")
    # Text /mpub: one message per line, empty lines skipped.
    post("/mpub", b"\n".join(text_lines[:2]) + b"\n\n" + text_lines[2] + b"\n")
    binary = len(binary_msgs).to_bytes(4, "big") + b"".join(
        len(m).to_bytes(4, "big") + m for m in binary_msgs)
    post("/mpub", binary, binary="true")

    expected = [pub_body, deferred] + text_lines + binary_msgs

    async def scenario():
        collector = Collector(len(expected))
        reader = make_reader(broker, topic, collector)
        try:
            await collector.wait()
            await settle(broker, topic)
        finally:
            reader.close()
        return collector

    collector = run(scenario)
    assert_same_bodies(collector.bodies(), expected)
    assert all(d["attempts"] == 1 for d in collector.deliveries)
