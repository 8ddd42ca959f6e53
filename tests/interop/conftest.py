"""Shared harness for the interop tests: runs the real `triaged` binary.

Each test gets its own broker on ephemeral ports (`127.0.0.1:0`) with its own
data directory. The ports are learnt the way gnsq's own integration harness
learns nsqd's: from the `TCP: listening on ADDR` and `HTTP: listening on ADDR`
lines the daemon logs to stderr.

Environment:
  TRIAGED_BIN       the binary (default: $CARGO_TARGET_DIR/debug/triaged,
                    CARGO_TARGET_DIR defaulting to ~/.cache/triage/target)
  TRIAGE_LOOKUPD_BIN  triage-lookupd, for the `lookupd` fixture (default: beside triaged)
  TRIAGED_ARGS      extra flags appended to the command line (space-separated)
"""

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field

import pytest

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LISTENING = re.compile(r"\b(TCP|HTTP): listening on ([0-9A-Za-z.:\[\]-]+)")


def triaged_bin():
    explicit = os.environ.get("TRIAGED_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/triage/target")
    return os.path.join(target, "debug", "triaged")


@dataclass
class Broker:
    """A running triaged: where it listens and what it has logged so far."""

    process: subprocess.Popen
    data_path: str
    tcp_address: str = ""
    http_address: str = ""
    log: list = field(default_factory=list)
    # Drains stderr into `log` for the broker's whole life.
    reader: threading.Thread = None

    @property
    def tcp_host(self):
        return self.tcp_address.rsplit(":", 1)[0]

    @property
    def tcp_port(self):
        return int(self.tcp_address.rsplit(":", 1)[1])

    @property
    def http_host(self):
        return self.http_address.rsplit(":", 1)[0]

    @property
    def http_port(self):
        return int(self.http_address.rsplit(":", 1)[1])

    def url(self, path, **params):
        query = "?" + urllib.parse.urlencode(params) if params else ""
        return "http://%s%s%s" % (self.http_address, path, query)

    def http(self, method, path, body=None, **params):
        """One request to the HTTP API; returns (status, headers, body bytes)."""
        request = urllib.request.Request(self.url(path, **params), data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def stats(self, topic=None, channel=None):
        params = {"format": "json"}
        if topic is not None:
            params["topic"] = topic
        if channel is not None:
            params["channel"] = channel
        status, _, body = self.http("GET", "/stats", **params)
        assert status == 200, body
        return json.loads(body)

    def channel_stats(self, topic, channel):
        for t in self.stats(topic=topic)["topics"]:
            if t["topic_name"] != topic:
                continue
            for c in t["channels"]:
                if c["channel_name"] == channel:
                    return c
        return None

    def wait_channel_settled(self, topic, channel, timeout=10.0):
        """Waits until the channel holds nothing queued, in flight or
        deferred: every delivered message has been FINished. Returns its stats."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.channel_stats(topic, channel)
            if last and last["depth"] == 0 and last["in_flight_count"] == 0 and last["deferred_count"] == 0:
                return last
            time.sleep(0.05)
        raise AssertionError("channel %s/%s did not settle within %.0fs: %r" % (topic, channel, timeout, last))

    def log_text(self):
        return "".join(self.log)


def _reader(broker, stream, found):
    """Keeps draining stderr for the broker's whole life (a full pipe would
    block it) and reports the listening addresses as they appear."""
    for raw in iter(stream.readline, b""):
        line = _ANSI.sub("", raw.decode("utf-8", "replace"))
        broker.log.append(line)
        match = _LISTENING.search(line)
        if match:
            kind, addr = match.groups()
            if kind == "TCP":
                broker.tcp_address = addr
            else:
                broker.http_address = addr
            if broker.tcp_address and broker.http_address:
                found.set()
    stream.close()


def start_broker(data_path, extra_args=()):
    binary = triaged_bin()
    if not os.path.isfile(binary):
        pytest.fail("triaged binary not found at %s; build it with `cargo build -p triage-broker` "
                    "or set TRIAGED_BIN" % binary, pytrace=False)
    args = [
        binary,
        "--tcp-address=127.0.0.1:0",
        "--http-address=127.0.0.1:0",
        "--data-path=%s" % data_path,
    ]
    args.extend(extra_args)
    args.extend(os.environ.get("TRIAGED_ARGS", "").split())
    return _spawn(args, data_path, "triaged")


def _spawn(args, data_path, name):
    """Starts `args` and waits for its `TCP:`/`HTTP: listening on` lines."""
    env = dict(os.environ, NO_COLOR="1")
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=env)
    broker = Broker(process=process, data_path=str(data_path))
    found = threading.Event()
    thread = threading.Thread(target=_reader, args=(broker, process.stderr, found), daemon=True)
    thread.start()
    broker.reader = thread

    deadline = time.monotonic() + START_TIMEOUT
    while not found.wait(0.05):
        if process.poll() is not None:
            thread.join(2)
            pytest.fail("%s exited with status %s before listening:\n%s"
                        % (name, process.returncode, broker.log_text()), pytrace=False)
        if time.monotonic() > deadline:
            stop_broker(broker)
            pytest.fail("%s did not log both 'TCP: listening on' and 'HTTP: listening on' within "
                        "%.0fs:\n%s" % (name, START_TIMEOUT, broker.log_text()), pytrace=False)
    return broker


def stop_broker(broker):
    """SIGTERM, then SIGKILL past the deadline. Returns the exit status."""
    process = broker.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)
            broker.reader.join(2)
            return "killed after %.0fs without exiting on SIGTERM" % STOP_TIMEOUT
    broker.reader.join(2)
    return process.returncode


@pytest.fixture
def broker(tmp_path):
    data_path = tmp_path / "data"
    data_path.mkdir()
    running = start_broker(data_path)
    yield running
    status = stop_broker(running)
    if status != 0:
        pytest.fail("triaged did not shut down cleanly on SIGTERM (%s):\n%s"
                    % (status, running.log_text()[-4000:]), pytrace=False)


@pytest.fixture
def tls_broker(tmp_path):
    """A triaged that requires TLS, with a self-signed certificate for
    127.0.0.1 made by openssl for this test."""
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    data_path = tmp_path / "data"
    data_path.mkdir()
    running = start_broker(data_path, ["--tls-cert=%s" % cert, "--tls-key=%s" % key,
                                       "--tls-required"])
    running.cert = str(cert)
    yield running
    status = stop_broker(running)
    if status != 0:
        pytest.fail("triaged did not shut down cleanly on SIGTERM (%s):\n%s"
                    % (status, running.log_text()[-4000:]), pytrace=False)


def lookupd_bin():
    explicit = os.environ.get("TRIAGE_LOOKUPD_BIN")
    if explicit:
        return explicit
    return os.path.join(os.path.dirname(triaged_bin()), "triage-lookupd")


@pytest.fixture
def lookupd():
    """A running triage-lookupd on ephemeral ports (a `Broker` record: the
    same addresses, log and process fields)."""
    binary = lookupd_bin()
    if not os.path.isfile(binary):
        pytest.fail("triage-lookupd binary not found at %s; build it with `cargo build -p "
                    "triage-lookupd` or set TRIAGE_LOOKUPD_BIN" % binary, pytrace=False)
    running = _spawn([binary, "--tcp-address=127.0.0.1:0", "--http-address=127.0.0.1:0",
                      "--broadcast-address=127.0.0.1"], "", "triage-lookupd")
    yield running
    status = stop_broker(running)
    if status != 0:
        pytest.fail("triage-lookupd did not shut down cleanly on SIGTERM (%s):\n%s"
                    % (status, running.log_text()[-4000:]), pytrace=False)


@pytest.fixture
def topic():
    """A fresh valid topic name per test."""
    return "interop_" + uuid.uuid4().hex[:16]

