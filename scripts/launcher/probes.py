"""Whether a broker accepts clients: a real exchange in its own protocol, stdlib only.

Redis answers PING (after AUTH with the URL's credentials); RabbitMQ completes an AMQP 0-9-1
login (Start/Tune/Open) with the URL's credentials; Kafka answers ApiVersions and lists itself
in a Metadata response (it is unfenced). An open port alone proves none of that.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable

from launcher.endpoints import Endpoint, endpoint


def ready(name: str, timeout: float = 2.0) -> bool:
    """True when broker ``name`` accepts clients right now."""
    try:
        return _PROBES[name](endpoint(name), timeout)
    except (OSError, struct.error, ValueError):
        return False


def port_open(ep: Endpoint, timeout: float = 0.5) -> bool:
    try:
        with _connect(ep, timeout):
            return True
    except OSError:
        return False


def _connect(ep: Endpoint, timeout: float) -> socket.socket:
    return socket.create_connection((ep.host, ep.port), timeout=timeout)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        buf += chunk
    return bytes(buf)


# -- Redis (RESP) --------------------------------------------------------------------------------


def _redis_ready(ep: Endpoint, timeout: float) -> bool:
    def cmd(*args: str) -> bytes:
        out = b"*%d\r\n" % len(args)
        for a in args:
            raw = a.encode()
            out += b"$%d\r\n%s\r\n" % (len(raw), raw)
        return out

    with _connect(ep, timeout) as sock:
        reader = sock.makefile("rb")
        if ep.password:
            auth = (ep.username, ep.password) if ep.username else (ep.password,)
            sock.sendall(cmd("AUTH", *auth))
            if not reader.readline().startswith(b"+OK"):
                return False
        sock.sendall(cmd("PING"))
        return reader.readline().startswith(b"+PONG")


# -- RabbitMQ (AMQP 0-9-1) -----------------------------------------------------------------------


def _amqp_frame(cls: int, meth: int, args: bytes) -> bytes:
    payload = struct.pack(">HH", cls, meth) + args
    return struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"


def _shortstr(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">B", len(raw)) + raw


def _longstr(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


def _amqp_read_method(sock: socket.socket) -> tuple[int, int, bytes]:
    while True:
        ftype, _channel, size = struct.unpack(">BHI", _recv_exact(sock, 7))
        payload = _recv_exact(sock, size)
        if _recv_exact(sock, 1) != b"\xce":
            raise ConnectionError("bad AMQP frame end")
        if ftype == 1:
            cls, meth = struct.unpack(">HH", payload[:4])
            return cls, meth, payload[4:]
        # heartbeats and anything else: ignore


def _rabbitmq_ready(ep: Endpoint, timeout: float) -> bool:
    """A real AMQP 0-9-1 login: protocol header, Start/StartOk (PLAIN), Tune/TuneOk, Open."""
    with _connect(ep, timeout) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        cls, meth, _ = _amqp_read_method(sock)
        if (cls, meth) != (10, 10):  # connection.start
            return False
        props = _shortstr("product") + b"S" + _longstr(b"amb scripts/services.py")
        response = b"\0" + (ep.username or "").encode() + b"\0" + (ep.password or "").encode()
        start_ok = (
            struct.pack(">I", len(props))
            + props
            + _shortstr("PLAIN")
            + _longstr(response)
            + _shortstr("en_US")
        )
        sock.sendall(_amqp_frame(10, 11, start_ok))
        cls, meth, args = _amqp_read_method(sock)
        if (cls, meth) != (10, 30):  # connection.tune (else: close, e.g. bad credentials)
            return False
        channel_max, frame_max, _heartbeat = struct.unpack(">HIH", args[:8])
        sock.sendall(_amqp_frame(10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
        sock.sendall(_amqp_frame(10, 40, _shortstr(ep.vhost) + _shortstr("") + b"\0"))
        cls, meth, _ = _amqp_read_method(sock)
        if (cls, meth) != (10, 41):  # connection.open-ok
            return False
        sock.sendall(_amqp_frame(10, 50, struct.pack(">H", 200) + _shortstr("bye") + b"\0" * 4))
        with contextlib.suppress(OSError):
            _amqp_read_method(sock)  # connection.close-ok
        return True


# -- Kafka ---------------------------------------------------------------------------------------


def _kafka_call(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    client_id = b"amb-services"
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    data = _recv_exact(sock, size)
    (got_corr,) = struct.unpack(">i", data[:4])
    if got_corr != corr:
        raise ConnectionError("Kafka correlation id mismatch")
    return data[4:]


def _kafka_ready(ep: Endpoint, timeout: float) -> bool:
    """ApiVersions v0 answered without error, then Metadata lists at least one live broker."""
    with _connect(ep, timeout) as sock:
        resp = _kafka_call(sock, 18, 0, 1, b"")
        error, count = struct.unpack(">hi", resp[:6])
        if error != 0 or count <= 0:
            return False
        versions: dict[int, tuple[int, int]] = {}
        for i in range(count):
            key, lo, hi = struct.unpack(">hhh", resp[6 + 6 * i : 12 + 6 * i])
            versions[key] = (lo, hi)
        lo, hi = versions.get(3, (0, -1))
        if not lo <= 4 <= hi:
            return True  # cannot ask Metadata v4 (non-flexible); ApiVersions will do
        # Metadata v4: topics = [] (none), allow_auto_topic_creation = false
        resp = _kafka_call(sock, 3, 4, 2, struct.pack(">ib", 0, 0))
        _throttle, brokers = struct.unpack(">ii", resp[:8])
        return bool(brokers > 0)


_PROBES: dict[str, Callable[[Endpoint, float], bool]] = {
    "redis": _redis_ready,
    "rabbitmq": _rabbitmq_ready,
    "kafka": _kafka_ready,
}
