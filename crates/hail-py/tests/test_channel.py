"""hail.Channel, the multicast channel, on loopback (TTL 1, interface named)."""

import asyncio

import pytest

import hail
from conftest import BOUND, LOOPBACK, bounded, cancelling, run_hail, run_hooked


def channel(group, **kw):
    return hail.Channel(group, interface=LOOPBACK, **kw)


def test_datagrams_reach_every_member_with_their_sender(group):
    async def main():
        a, b = channel(group), channel(group)
        await a.send(b"hello group")
        data, sender = await b.recv(timeout=5)
        assert data == b"hello group"
        assert sender.startswith("127.0.0.1:")
        # loopback=True (the default): a hears itself too.
        assert (await a.recv(timeout=5))[0] == b"hello group"
        assert a.stats()["sent"] == 1 and b.stats()["delivered"] == 1
        a.close()
        b.close()

    bounded(main())


def test_sealed_channels_open_only_their_own_passphrase(group):
    async def main():
        a = channel(group, passphrase="one passphrase")
        b = channel(group, passphrase="one passphrase")
        other = channel(group, passphrase="another passphrase")
        plain = channel(group, loopback=False)
        await a.send(b"sealed")
        assert (await b.recv(timeout=5))[0] == b"sealed"
        # The datagram reached `other` too: dropped, counted. A datagram sealed with its own
        # passphrase, sent after, is the first it delivers (one socket, in order).
        own = channel(group, passphrase="another passphrase")
        await own.send(b"its own")
        assert (await other.recv(timeout=5))[0] == b"its own"
        assert other.stats()["dropped_wrong_key"] == 1
        assert other.stats()["delivered"] == 1
        # A plaintext channel gets the sealed bytes, which are longer than the data.
        data, _ = await plain.recv(timeout=5)
        assert data != b"sealed" and len(data) > len(b"sealed")
        # Plaintext injected into the sealed group is dropped, never delivered: the next
        # datagram b delivers is the sealed one sent after it.
        await plain.send(b"forged")
        await a.send(b"after the forgery")
        assert (await b.recv(timeout=5))[0] == b"after the forgery"
        assert b.stats()["dropped_malformed"] == 1
        for c in (a, b, other, plain, own):
            c.close()

    bounded(main(), timeout=30)


def test_close_ends_a_waiting_recv_and_later_calls(group):
    async def main():
        a = channel(group)
        # recv() watches for close from the call on, so this holds whether its task on
        # hail's runtime is already waiting for a datagram or not yet.
        waiting = asyncio.ensure_future(a.recv())
        a.close()
        with pytest.raises(hail.Closed):
            await waiting
        with pytest.raises(hail.Closed):
            await a.send(b"x")
        a.close()  # twice is fine

    bounded(main())


def test_bad_settings_and_oversized_data_raise(group):
    with pytest.raises(hail.ConfigError):
        hail.Channel("127.0.0.1:5000", interface=LOOPBACK)  # not a multicast group
    with pytest.raises(hail.ConfigError):
        hail.Channel(group, interface="no-such-if")

    async def main():
        a = channel(group)
        with pytest.raises(hail.TooLarge):
            await a.send(b"x" * (a.max_payload + 1))
        a.close()

    bounded(main())


def test_a_python_channel_talks_to_hail_mcast(group, hail_process):
    secret = "shared by python and the cli"

    async def main():
        loop = asyncio.get_running_loop()
        py = channel(group, passphrase=secret)
        # The CLI sends one sealed datagram; the Python channel opens it.
        sent = await loop.run_in_executor(None, run_hail, ["mcast", "send", "from rust"], group, secret)
        assert sent.returncode == 0, sent.stderr
        assert (await py.recv(timeout=5))[0] == b"from rust"
        # The CLI receives what Python sends (`--count 1`), with the same passphrase. It
        # says "receiving on ..." once it has joined the group: sent then, one arrives.
        recv = hail_process(
            ["mcast", "recv", "--count", "1", "--timeout", "8s"], group, secret, json=False
        )
        assert (await loop.run_in_executor(None, recv.text_line)).startswith("receiving on ")
        await py.send(b"from python")
        assert (await loop.run_in_executor(None, recv.text_line)).endswith(": from python")
        assert await loop.run_in_executor(None, recv.proc.wait, BOUND) == 0
        py.close()

    bounded(main(), timeout=30)


def _plain_sender(group):
    """Sends datagrams to `group` from a plain UDP socket on loopback (TTL 1): no hail
    awaitable, so the only completion a test's loop sees is the receive's."""
    import socket

    host, port = group.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LOOPBACK))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    return s, lambda data: s.sendto(data, (host, int(port)))


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("path", ["waker", "call_soon_threadsafe"])
def test_a_recv_cancelled_after_its_datagram_arrived_hands_it_back(group, path, when):
    # The receive's result reaches the loop and its task is cancelled right before the
    # loop sets it, or right after (`cancelling`): the datagram must come next.
    victim = {}

    async def main():
        b = channel(group)
        sock, send = _plain_sender(group)

        async def receiving():
            return await b.recv()

        for _ in range(3):
            task = asyncio.ensure_future(receiving())
            await asyncio.sleep(0)  # the receive waits on hail's runtime
            victim["task"] = task
            send(b"after")
            with pytest.raises(asyncio.CancelledError):
                await task
            assert "task" not in victim, "the hook ran"
            # Something after it, so that a lost datagram shows as the wrong one.
            send(b"later")
            assert (await b.recv(timeout=5))[0] == b"after"
            assert (await b.recv(timeout=5))[0] == b"later"
        b.close()
        sock.close()

    run_hooked(path, cancelling(victim, when), main)
