"""The package README's programs, as they are written there.

The pythonConnect program is taken from README.md (the ```python block after the
`tests/test_readme.py` marker) and run as it is, against a Rust `hail listen` named
`lamp`; only its group is moved to this test's own, so tests never hear each other.
"""

import ast
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import BOUND, run_hail

README = Path(__file__).resolve().parents[1] / "README.md"
DEFAULT_GROUP = '"239.255.72.76:5676"'


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, re.S)


def pythonconnect_program():
    text = README.read_text()
    marker = text.index("<!-- tests/test_readme.py runs the program below")
    return python_blocks(text[marker:])[0]


def test_every_python_block_of_the_readme_compiles():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2
    for b in blocks:
        ast.parse(b)


def test_the_pythonconnect_program_changes_only_its_import_and_keywords():
    program = pythonconnect_program()
    assert "from hail import Connect  # pythonConnect: from connect import Connect" in program
    # pythonConnect's own names, and its calls as its README wrote them.
    for name in ("receivingMessage", "updatingRemotesList", "errorHandling", "answerToQuestion",
                 "connect.sendMessage(", "connect.askDevice(", "connect.leavingNetwork()"):
        assert name in program
    assert "fr=receivingMessage, fhu=updatingRemotesList, fe=errorHandling" in program


class Lines:
    """A process's stdout, line by line, each wait bounded."""

    def __init__(self, stream):
        self.q = queue.Queue()
        self.seen = []

        def read():
            for line in stream:
                self.q.put(line.rstrip("\n"))
            self.q.put(None)

        threading.Thread(target=read, daemon=True).start()

    def wait_for(self, prefix, timeout=BOUND):
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line {prefix!r} within {timeout} s: {self.seen}") from None
            if line is None:
                raise AssertionError(f"the program ended before {prefix!r}: {self.seen}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line


def test_the_readme_pythonconnect_program_talks_to_hail_listen(group, hail_process, tmp_path):
    program = pythonconnect_program()
    assert program.count(DEFAULT_GROUP) == 1
    script = tmp_path / "sensor.py"
    script.write_text(program.replace(DEFAULT_GROUP, repr(group)))

    lamp = hail_process(["listen", "--name", "lamp"], group)
    lamp.wait_for("listening")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    sensor = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        out = Lines(sensor.stdout)
        assert "'lamp'" in out.wait_for("remote devices:")
        # The sensor's message and question reach the Rust device, and its answer comes back
        # (`hail listen` answers with the question).
        # (in either order: `hail listen` prints questions as its handler runs, messages
        # as its event stream hands them out)
        seen = {}
        deadline = time.monotonic() + BOUND
        while not {"message", "question"} <= seen.keys():
            line = lamp.line(max(0.0, deadline - time.monotonic()))
            seen.setdefault(line.get("event"), line)
        assert seen["message"]["from"] == "sensor"
        assert seen["message"]["message"] == {"text": "hello lamp"}
        assert seen["question"]["from"] == "sensor"
        assert out.wait_for("lamp answered:") == "lamp answered: state?"

        # The Rust CLI asks the Python program a question, then tells it to leave.
        ask = run_hail(["ask", "sensor", "temperature?"], group)
        assert ask.returncode == 0, ask.stderr
        answer = next(
            a for a in map(json.loads, ask.stdout.splitlines())
            if a.get("event") == "answer"
        )
        assert answer["from"] == "sensor" and answer["answer"] == {"text": "21.5 C"}
        send = run_hail(["send", "sensor", "bye"], group)
        assert send.returncode == 0, send.stderr
        assert out.wait_for("message from hail-send-").endswith(": bye")
        assert sensor.wait(BOUND) == 0, sensor.stderr.read()
        # It said goodbye on the way out (the CLI's one-shot devices leave too).
        deadline = time.monotonic() + BOUND
        while True:
            left = lamp.wait_for("left", max(0.0, deadline - time.monotonic()))
            if left["name"] == "sensor":
                assert left["reason"] == "goodbye"
                break
    finally:
        if sensor.poll() is None:
            sensor.kill()
            sensor.wait(BOUND)
