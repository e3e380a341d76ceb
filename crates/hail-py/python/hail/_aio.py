"""asyncio glue for hail's Rust side (internal).

`waker(loop)` is the loop's `_LoopWaker`: hail's runtime threads queue the results of
awaitables there and wake the loop through a socket it watches, so they never wait for the
GIL; the loop sets the results itself. `iterate(events)` is what `async for event in
dev.events()` runs: an event already waiting is handed over with no trip to the runtime.
`next_event` and `next_batch` are what `Events.__anext__` and `Events.batch` return when
they wait: a wait whose task is cancelled after its event was set but before the task
resumed (a timeout firing in the same turn of the loop) hands the event back.
`next_datagram` is `Channel.recv`'s, the same way.
"""

import asyncio
import weakref
from typing import Any, AsyncIterator

from hail._hail import _LoopWaker

_wakers: "weakref.WeakKeyDictionary[Any, _LoopWaker]" = weakref.WeakKeyDictionary()


def waker(loop: Any) -> _LoopWaker:
    """The waker of `loop`, made and watched (`loop.add_reader`) on first use."""
    w = _wakers.get(loop)
    if w is None:
        w = _LoopWaker()
        # First, so that a loop that cannot be weakly referenced (TypeError: hail falls back
        # to another bridge) is not left watching a socket per awaitable.
        _wakers[loop] = w
        try:
            loop.add_reader(w.fileno(), w.drain)
        except BaseException:
            del _wakers[loop]
            raise
    return w


def _hand_back(owner: Any, wait: Any) -> None:
    """`wait`'s result back to `owner` (a `hail.Events` or `hail.Channel`), if it has one:
    its awaiting task was cancelled (the future itself was not: it was done first), so
    nobody else will take it."""
    if wait.done() and not wait.cancelled() and wait.exception() is None:
        owner._give_back(wait.result())


async def _awaited(owner: Any, wait: Any) -> Any:
    """`wait`'s result; if this task is cancelled after `wait` finished, its result goes
    back to `owner` (see `_hand_back`)."""
    try:
        return await wait
    except asyncio.CancelledError:
        _hand_back(owner, wait)
        raise


async def next_event(events: Any) -> Any:
    """The next event of `events` (`Events.__anext__` when none is waiting). The wait
    starts here, when awaited: a coroutine never run took nothing."""
    return await _awaited(events, events._next())


async def next_batch(events: Any, max: int) -> Any:
    """`Events.batch(max)` when none is waiting, as `next_event`."""
    return await _awaited(events, events._batch(max))


async def next_datagram(channel: Any, timeout: Any) -> Any:
    """The next datagram of `channel` (`Channel.recv` when none was handed back), as
    `next_event`."""
    return await _awaited(channel, channel._recv(timeout))


async def iterate(events: Any) -> AsyncIterator[Any]:
    """The events of `events` (a `hail.Events`) until the device is closed."""
    take, start = events.try_next, events._next
    while True:
        event = take()
        if event is None:
            wait = start()
            try:
                event = await wait
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                _hand_back(events, wait)
                raise
        yield event
