"""Discovery through triage-lookupd with pynsq and gnsq, unchanged: real
`triaged` processes register with a real `triage-lookupd` process
(`--lookupd-tcp-address`), and clients find them with their usual lookupd
settings. Every wait is for a condition, with a deadline.
"""

import asyncio
import json
import time
import urllib.request

import gnsq
import nsq

from conftest import _spawn, start_broker, stop_broker, triaged_bin
from test_pynsq import Collector, run, wait_until
from support import assert_same_bodies

CHANNEL = "interop"


def lookup(lookupd, topic):
    """`/lookup?topic=` as parsed JSON, or None on 404."""
    status, headers, body = lookupd.http("GET", "/lookup", topic=topic)
    if status == 404:
        return None
    assert status == 200, body
    assert headers["X-NSQ-Content-Type"] == "nsq; version=1.0"
    return json.loads(body)


def wait_for_producers(lookupd, topic, tcp_ports, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        found = lookup(lookupd, topic)
        ports = sorted(p["tcp_port"] for p in (found or {}).get("producers", []))
        if ports == sorted(tcp_ports):
            return found
        assert time.monotonic() < deadline, "lookupd lists %r for %s, want %r" % (ports, topic, tcp_ports)
        time.sleep(0.05)


def registered_brokers(tmp_path, lookupd, count):
    brokers = []
    for i in range(count):
        data_path = tmp_path / ("data%d" % i)
        data_path.mkdir()
        brokers.append(start_broker(data_path, [
            "--lookupd-tcp-address=%s" % lookupd.tcp_address,
            "--broadcast-address=127.0.0.1",
        ]))
    return brokers


def test_pynsq_reader_finds_every_broker_through_lookupd(lookupd, tmp_path, topic):
    brokers = registered_brokers(tmp_path, lookupd, 2)
    try:
        sent = []
        for i, broker in enumerate(brokers):
            for j in range(5):
                body = ("broker%d-message%d" % (i, j)).encode()
                status, _, answer = broker.http("POST", "/pub", body, topic=topic)
                assert status == 200, answer
                sent.append(body)
        wait_for_producers(lookupd, topic, [b.tcp_port for b in brokers])

        async def scenario():
            collector = Collector(len(sent))
            reader = nsq.Reader(
                topic=topic, channel=CHANNEL, message_handler=collector,
                lookupd_http_addresses=["http://%s" % lookupd.http_address],
                lookupd_poll_interval=1, max_in_flight=10)
            try:
                await wait_until(lambda: len(reader.conns) == len(brokers),
                                 "the Reader to connect to every broker lookupd lists")
                await collector.wait()
            finally:
                reader.close()
            return collector

        collector = run(scenario)
        assert_same_bodies(collector.bodies(), sent)
    finally:
        for broker in brokers:
            stop_broker(broker)


def test_gnsq_lookupd_client_reads_every_endpoint(lookupd, tmp_path, topic):
    (broker,) = registered_brokers(tmp_path, lookupd, 1)
    try:
        status, _, answer = broker.http("POST", "/channel/create", topic=topic, channel=CHANNEL)
        assert status == 200, answer
        wait_for_producers(lookupd, topic, [broker.tcp_port])
        client = gnsq.LookupdClient(host=lookupd.http_host, port=lookupd.http_port)
        assert client.ping() in (b"OK", "OK")
        assert "version" in client.info()
        found = client.lookup(topic)
        assert found["channels"] == [CHANNEL]
        (producer,) = found["producers"]
        assert (producer["broadcast_address"], producer["tcp_port"], producer["http_port"]) == (
            "127.0.0.1", broker.tcp_port, broker.http_port)
        assert topic in client.topics()["topics"]
        assert client.channels(topic)["channels"] == [CHANNEL]
        (node,) = client.nodes()["producers"]
        assert topic in node["topics"]

        # nsqadmin's topic deletion: tombstone the node, then the broker
        # deletes the topic and unregisters it.
        client.tombstone_topic(topic, "127.0.0.1:%d" % broker.http_port)
        assert lookup(lookupd, topic)["producers"] == []
        status, _, answer = broker.http("POST", "/topic/delete", topic=topic)
        assert status == 200, answer
        deadline = time.monotonic() + 20
        while topic in client.nodes()["producers"][0]["topics"]:
            assert time.monotonic() < deadline, "the deleted topic stayed registered"
            time.sleep(0.05)
        client.delete_topic(topic)
        assert topic not in client.topics()["topics"]
    finally:
        stop_broker(broker)


def test_a_killed_broker_returns_and_delivers_what_it_held(lookupd, tmp_path, topic):
    """Three real brokers, a pynsq Reader through lookupd. One broker is
    killed (SIGKILL) holding acknowledged persistent messages (its channel
    paused); the others carry on; restarted on the same addresses and data,
    it registers again and its messages are delivered."""
    brokers = registered_brokers(tmp_path, lookupd, 3)
    lookupd_args = ["--lookupd-tcp-address=%s" % lookupd.tcp_address, "--broadcast-address=127.0.0.1"]

    def pub(broker, bodies):
        for body in bodies:
            status, _, answer = broker.http("POST", "/pub", body, topic=topic)
            assert status == 200, answer

    def restart(killed):
        return _spawn([triaged_bin(), "--tcp-address=%s" % killed.tcp_address,
                       "--http-address=%s" % killed.http_address,
                       "--data-path=%s" % killed.data_path] + lookupd_args,
                      killed.data_path, "triaged")

    first = [("first-b%d-%d" % (b, i)).encode() for b in range(3) for i in range(3)]
    held = [("held-%d" % i).encode() for i in range(5)]
    during = [("during-b%d-%d" % (b, i)).encode() for b in (0, 2) for i in range(3)]
    try:
        for b, broker in enumerate(brokers):
            pub(broker, first[3 * b:3 * b + 3])
        wait_for_producers(lookupd, topic, [b.tcp_port for b in brokers])

        async def scenario():
            loop = asyncio.get_running_loop()
            collector = Collector(len(first) + len(during) + len(held))
            reader = nsq.Reader(
                topic=topic, channel=CHANNEL, message_handler=collector,
                lookupd_http_addresses=["http://%s" % lookupd.http_address],
                lookupd_poll_interval=1, max_in_flight=10)
            try:
                await wait_until(lambda: set(first) <= set(collector.bodies()), "the first messages", 20)
                status, _, answer = brokers[1].http("POST", "/channel/pause", topic=topic, channel=CHANNEL)
                assert status == 200, answer
                await loop.run_in_executor(None, pub, brokers[1], held)
                brokers[1].process.kill()
                brokers[1].process.wait(10)
                await loop.run_in_executor(None, pub, brokers[0], during[:3])
                await loop.run_in_executor(None, pub, brokers[2], during[3:])
                await wait_until(lambda: set(during) <= set(collector.bodies()),
                                 "the others' messages while one broker is down", 20)
                assert not set(held) & set(collector.bodies()), "held messages arrived while paused"
                brokers[1] = await loop.run_in_executor(None, restart, brokers[1])
                status, _, answer = brokers[1].http("POST", "/channel/unpause", topic=topic, channel=CHANNEL)
                assert status == 200, answer
                # Duplicates may come (at least once: FINs of the last moments before
                # the kill can be lost), so wait for the bodies, not for a count.
                await wait_until(lambda: set(held) <= set(collector.bodies()),
                                 "the returned broker's held messages", 30)
            finally:
                reader.close()
            return collector

        collector = run(scenario, timeout=90)
        assert set(collector.bodies()) == set(first + during + held)
    finally:
        for broker in brokers:
            stop_broker(broker)
