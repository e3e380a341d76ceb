"""asyncio glue for hail's Rust side (internal).

`waker(loop)` is the loop's `_LoopWaker`: hail's runtime threads queue the results of
awaitables there and wake the loop through a socket it watches, so they never wait for the
GIL; the loop sets the results itself. `iterate(events)` is what `async for event in
dev.events()` runs: an event already waiting is handed over with no trip to the runtime.
"""

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


async def iterate(events: Any) -> AsyncIterator[Any]:
    """The events of `events` (a `hail.Events`) until the device is closed."""
    take, wait = events.try_next, events.__anext__
    while True:
        event = take()
        if event is None:
            try:
                event = await wait()
            except StopAsyncIteration:
                return
        yield event
