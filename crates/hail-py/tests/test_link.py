"""hail.Server and hail.Client, framed links with callbacks, on loopback."""

import asyncio
import json
import socket
import struct
import threading

import pytest

import hail
from conftest import BOUND, LOOPBACK, bounded, wait_until


class Inbox:
    """Coroutine callbacks that put what they get on one asyncio queue, tagged."""

    def __init__(self):
        self.q = asyncio.Queue()

    def cb(self, tag):
        async def put(*args):
            await self.q.put((tag, *args))

        return put

    async def next(self, tag=None):
        while True:
            item = await asyncio.wait_for(self.q.get(), BOUND)
            if tag is None or item[0] == tag:
                return item


def test_server_and_client_exchange_messages_with_callbacks():
    async def main():
        s_in, c_in = Inbox(), Inbox()
        server = hail.Server(
            f"{LOOPBACK}:0",
            on_connect=s_in.cb("connect"),
            on_message=s_in.cb("message"),
            on_close=s_in.cb("close"),
        )
        client = hail.Client(
            server.address,
            on_connect=c_in.cb("connect"),
            on_message=c_in.cb("message"),
            on_close=c_in.cb("close"),
        )
        _, cid, addr = await s_in.next("connect")
        assert addr.startswith("127.0.0.1:")
        assert (await c_in.next("connect"))[1] == server.address
        assert server.clients() == {cid: addr}

        await client.send(b"one")
        client.send_nowait(b"two")
        assert await s_in.next("message") == ("message", cid, b"one")
        assert await s_in.next("message") == ("message", cid, b"two")

        await server.send_to(cid, b"to you")
        assert server.broadcast(b"to all") == 1
        assert await c_in.next("message") == ("message", b"to you")
        assert await c_in.next("message") == ("message", b"to all")
        with pytest.raises(hail.UnknownName):
            await server.send_to(cid + 1000, b"nobody")

        assert await client.close() == 0
        _, closed_id, reason = await s_in.next("close")
        assert closed_id == cid and reason in ("peer_closed", "closed")
        with pytest.raises(hail.Closed):
            await client.send(b"after close")
        await server.close()
        with pytest.raises(hail.Closed):
            server.clients()

    bounded(main())


def test_json_mode_over_a_sealed_link_and_a_wrong_passphrase_refused():
    async def main():
        s_in, c_in = Inbox(), Inbox()
        server = hail.Server(
            f"{LOOPBACK}:0", passphrase="link secret", mode="json",
            on_connect=s_in.cb("connect"), on_message=s_in.cb("message"),
        )
        client = hail.Client(
            server.address, passphrase="link secret", mode="json", on_message=c_in.cb("message")
        )
        _, cid, _ = await s_in.next("connect")
        await client.send({"temp": 21.5, "tags": ["a", "b"]})
        assert await s_in.next("message") == ("message", cid, {"temp": 21.5, "tags": ["a", "b"]})
        await server.send_to(cid, [1, 2, 3])
        assert await c_in.next("message") == ("message", [1, 2, 3])

        with pytest.raises(hail.AuthFailed):
            hail.Client(server.address, passphrase="wrong secret", reconnect=False)
        # The server counts the refusal on its side of the handshake, which the client may
        # finish first: nothing to wait on but the counter.
        wait_until(lambda: server.stats()["auth_failures"] == 1)
        assert len(server.clients()) == 1
        await client.close()
        await server.close()

    bounded(main(), timeout=30)


def comms_frame(obj) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack("<I", len(body)) + body


def read_comms_frame(sock) -> bytes:
    def exactly(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            assert chunk, "the server closed the connection"
            buf += chunk
        return buf

    (n,) = struct.unpack("<I", exactly(4))
    return exactly(n)


def test_python_comms_mode_talks_to_a_python_comms_peer_on_its_wire():
    """A raw socket speaking Python Comms' framing (little-endian u32 length, JSON)."""

    async def main():
        s_in = Inbox()
        server = hail.Server(
            f"{LOOPBACK}:0", mode="json", python_comms=True,
            on_connect=s_in.cb("connect"), on_message=s_in.cb("message"),
        )
        host, port = server.address.rsplit(":", 1)
        loop = asyncio.get_running_loop()
        peer = socket.create_connection((host, int(port)), timeout=BOUND)
        _, cid, _ = await s_in.next("connect")
        # Two frames in one write: both arrive, whole (Python Comms' own reads did not).
        await loop.run_in_executor(None, peer.sendall, comms_frame({"n": 1}) + comms_frame("two"))
        assert await s_in.next("message") == ("message", cid, {"n": 1})
        assert await s_in.next("message") == ("message", cid, "two")
        # Not JSON: dropped and counted, the connection goes on. Frames are handled in
        # order, so once the next one's callback ran the bad one was counted.
        bad = b"not json"
        await loop.run_in_executor(
            None, peer.sendall, struct.pack("<I", len(bad)) + bad + comms_frame("after")
        )
        assert await s_in.next("message") == ("message", cid, "after")
        assert server.stats()["undecodable"] == 1
        await server.send_to(cid, {"reply": True})
        assert json.loads(await loop.run_in_executor(None, read_comms_frame, peer)) == {"reply": True}
        peer.close()

        # A hail Client in Python Comms mode against the same server.
        client = hail.Client(server.address, mode="json", python_comms=True)
        _, cid2, _ = await s_in.next("connect")
        await client.send({"from": "client"})
        assert await s_in.next("message") == ("message", cid2, {"from": "client"})
        await client.close()
        await server.close()

        with pytest.raises(hail.ConfigError):
            hail.Server(f"{LOOPBACK}:0", python_comms=True, passphrase="x")
        with pytest.raises(hail.ConfigError):
            hail.Server(f"{LOOPBACK}:0", mode="pickle")

    bounded(main())


def test_plain_callbacks_run_on_a_worker_thread_without_a_loop():
    got = []
    threads = set()
    done = threading.Event()

    def on_message(cid, msg):
        threads.add(threading.get_ident())
        got.append(msg)
        if len(got) == 2:
            done.set()

    server = hail.Server(f"{LOOPBACK}:0", mode="string", on_message=on_message)

    async def send():
        client = hail.Client(server.address, mode="string")
        await client.send("héllo")
        await client.send("wörld")
        await client.close()

    bounded(send())
    assert done.wait(BOUND)
    assert got == ["héllo", "wörld"]
    assert threading.get_ident() not in threads

    async def close():
        await server.close()

    bounded(close())


def test_a_client_reconnects_by_itself_after_the_server_drops_it():
    async def main():
        s_in, c_in = Inbox(), Inbox()
        server = hail.Server(f"{LOOPBACK}:0", on_connect=s_in.cb("connect"))
        client = hail.Client(server.address, on_close=c_in.cb("close"), on_connect=c_in.cb("connect"))
        _, cid, _ = await s_in.next("connect")
        await c_in.next("connect")
        server.disconnect(cid)
        assert (await c_in.next("close"))[1] in ("peer_closed", "closed", "shutdown")
        # Reconnected by itself (100 ms backoff, jittered).
        await c_in.next("connect")
        assert client.connected and client.stats()["reconnects"] == 1
        await client.close()
        await server.close()

    bounded(main())
