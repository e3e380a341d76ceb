"""Python devices against the Rust `hail` command (crates/hail-cli) on loopback."""

import json

import hail
from conftest import LOOPBACK, bounded, joined, run_hail


def test_python_device_talks_to_hail_listen(group, hail_process):
    rust = hail_process(["listen", "--name", "rusty"], group)
    rust.wait_for("listening")

    async def main():
        py = hail.Device("pyth", interface=LOOPBACK, group=group)
        await joined(py, "rusty")
        # `hail listen` answers a question with the question (no --answer-cmd).
        assert (await py.ask("rusty", b"ping")) == {"rusty": b"ping"}
        assert (await py.ask("rusty", b"")) == {"rusty": b""}
        await py.send("rusty", b"hello from python")
        # Its named methods take and return JSON text: `echo` and `info`.
        assert await py.call("rusty", "echo", {"n": [1, 2]}) == {"n": [1, 2]}
        info = await py.call("rusty", "info")
        assert info["name"] == "rusty"
        await py.close()

    bounded(main())
    assert rust.wait_for("question")["from"] == "pyth"
    msg = rust.wait_for("message")
    assert msg == {"event": "message", "from": "pyth", "message": {"text": "hello from python"}}
    assert rust.wait_for("left")["name"] == "pyth"


def test_sealed_python_device_talks_to_sealed_hail_listen(group, hail_process):
    secret = "a passphrase for the group"
    rust = hail_process(["listen", "--name", "vault"], group, passphrase=secret)
    rust.wait_for("listening")

    async def main():
        py = hail.Device("pyth", passphrase=secret, interface=LOOPBACK, group=group)
        await joined(py, "vault")
        assert (await py.ask("vault", b"sealed?")) == {"vault": b"sealed?"}
        await py.close()

    bounded(main(), timeout=30)


def test_the_cli_asks_sends_and_calls_a_python_device(group):
    async def main():
        py = hail.Device("pyserve", interface=LOOPBACK, group=group)
        py.on_question(lambda sender, q: b"python says " + q)
        py.bind("double", lambda x: x * 2)
        events = py.events()
        loop = __import__("asyncio").get_running_loop()

        ask = await loop.run_in_executor(None, run_hail, ["ask", "pyserve", "hi"], group)
        assert ask.returncode == 0, ask.stderr
        answers = [json.loads(line) for line in ask.stdout.splitlines()]
        answer = next(a for a in answers if a.get("event") == "answer")
        assert answer["from"] == "pyserve"
        assert answer["answer"] == {"text": "python says hi"}

        call = await loop.run_in_executor(None, run_hail, ["call", "pyserve", "double", "21"], group)
        assert call.returncode == 0, call.stderr
        result = next(json.loads(l) for l in call.stdout.splitlines() if '"result"' in l)
        assert result["result"] == 42

        send = await loop.run_in_executor(None, run_hail, ["send", "pyserve", "over the wire"], group)
        assert send.returncode == 0, send.stderr
        while True:
            e = await events.__anext__()
            if isinstance(e, hail.Message):
                assert e.data == b"over the wire"
                assert e.sender.startswith("hail-send-")
                # A fresh key per `hail send` run: its id, 32 hex digits.
                assert len(e.sender_id) == 32 and int(e.sender_id, 16) >= 0
                break
        await py.close()

    bounded(main(), timeout=40)
