"""Calling the user's handlers for hail's Rust side (internal).

A handler is a plain function or a coroutine function. `start*` run on the event loop that
was running when the handler was registered (hail hands the calls to that loop), `call*`
on one of hail's handler threads (each keeps its Python thread state) when no loop was
running then. A handler that raises fails the peer's question or call with the exception's
type and message, and is logged on the `hail` logger with its traceback.
"""

import inspect
import json
import logging
from typing import Any, Callable, Tuple

_log = logging.getLogger("hail")


def _no_loop(fn: Callable[..., Any]) -> TypeError:
    """The error for a coroutine function registered where no event loop ran."""
    return TypeError(
        f"{getattr(fn, '__qualname__', fn)!r} returned an awaitable, but no event loop was "
        "running when it was registered: register coroutine functions from async code"
    )


def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Calls a plain `fn(*args)` on a handler thread of hail's (an awaitable result is an error)."""
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise _no_loop(fn)
        return result
    except Exception:
        _log.exception("hail handler %r failed", getattr(fn, "__qualname__", fn))
        raise


def call_json(fn: Callable[..., Any], text: str) -> str:
    """`call` with the argument decoded from JSON text and the result encoded to it."""
    return json.dumps(call(fn, json.loads(text)))


def start(fn: Callable[..., Any], *args: Any) -> Tuple[bool, Any]:
    """Calls `fn(*args)` on the running loop: `(False, result)`, or `(True, a coroutine
    awaiting it)` when `fn` returned an awaitable (hail runs that as a task)."""
    try:
        result = fn(*args)
    except Exception:
        _log.exception("hail handler %r failed", getattr(fn, "__qualname__", fn))
        raise
    if inspect.isawaitable(result):
        return True, _awaited(fn, result)
    return False, result


async def _awaited(fn: Callable[..., Any], awaitable: Any) -> Any:
    try:
        return await awaitable
    except Exception:
        _log.exception("hail handler %r failed", getattr(fn, "__qualname__", fn))
        raise


def start_json(fn: Callable[..., Any], text: str) -> Tuple[bool, Any]:
    """`start` with the argument decoded from JSON text and the result encoded to it."""
    pending, result = start(fn, json.loads(text))
    if pending:
        return True, _dumped(result)
    return False, json.dumps(result)


async def _dumped(coro: Any) -> str:
    return json.dumps(await coro)
