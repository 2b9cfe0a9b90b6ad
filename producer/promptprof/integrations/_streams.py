"""Proxies around provider streams: every chunk passes through unchanged and is read on the way.

The call finishes when the stream is exhausted, closed (directly or by leaving a ``with`` block),
raises (the call is marked failed and the exception re-raised untouched), or is dropped unread.
Anything else (``response``, ``until_done()``, ...) is delegated to the wrapped object.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from promptprof.integrations._common import Tracker

T = TypeVar("T")


class _Proxy:
    """Delegates unknown attributes to the wrapped object; finishes the call when dropped."""

    __slots__ = ("_tracker", "_wrapped")

    def __init__(self, wrapped: Any, tracker: Tracker) -> None:
        self._wrapped = wrapped
        self._tracker = tracker

    def __getattr__(self, name: str) -> Any:
        if name in ("_tracker", "_wrapped", "_iterator", "_entered"):  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self._wrapped, name)

    def __repr__(self) -> str:
        return f"<promptprof proxy of {self._wrapped!r}>"

    def __del__(self) -> None:
        tracker = getattr(self, "_tracker", None)
        if tracker is not None:
            tracker.finish()


class SyncStreamProxy(_Proxy, Generic[T]):
    """A synchronous stream (``openai.Stream``, ``anthropic.Stream``) being profiled."""

    __slots__ = ("_iterator",)

    def __init__(self, stream: Iterable[T], tracker: Tracker) -> None:
        super().__init__(stream, tracker)
        self._iterator: Iterator[T] = iter(stream)

    def __iter__(self) -> SyncStreamProxy[T]:
        return self

    def __next__(self) -> T:
        try:
            item = next(self._iterator)
        except StopIteration:
            self._tracker.finish()
            raise
        except BaseException as exc:
            self._tracker.fail(exc)
            raise
        self._tracker.chunk(item)
        return item

    def close(self) -> None:
        """Close the underlying stream and finish the call."""
        try:
            self._wrapped.close()
        finally:
            self._tracker.finish()

    def __enter__(self) -> SyncStreamProxy[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncStreamProxy(_Proxy, Generic[T]):
    """An asynchronous stream (``openai.AsyncStream``, ``anthropic.AsyncStream``) being profiled."""

    __slots__ = ("_iterator",)

    def __init__(self, stream: AsyncIterable[T], tracker: Tracker) -> None:
        super().__init__(stream, tracker)
        self._iterator: AsyncIterator[T] = stream.__aiter__()

    def __aiter__(self) -> AsyncStreamProxy[T]:
        return self

    async def __anext__(self) -> T:
        try:
            item = await self._iterator.__anext__()
        except StopAsyncIteration:
            self._tracker.finish()
            raise
        except BaseException as exc:
            self._tracker.fail(exc)
            raise
        self._tracker.chunk(item)
        return item

    async def close(self) -> None:
        """Close the underlying stream and finish the call."""
        try:
            await self._wrapped.close()
        finally:
            self._tracker.finish()

    async def aclose(self) -> None:
        """Alias of :meth:`close`."""
        await self.close()

    async def __aenter__(self) -> AsyncStreamProxy[T]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _ManagerProxy(_Proxy):
    """A stream manager (e.g. ``client.messages.stream(...)``): the request starts on enter.

    The entered helper stream reads its events from ``_raw_stream``, which is swapped for a
    profiling proxy; if an SDK version has no such attribute, the call is finished on exit from
    the helper's final message snapshot (without a time to first token).
    """

    __slots__ = ("_entered",)

    def _attach(self, stream: Any, proxy: type[_Proxy]) -> None:
        self._entered = stream
        try:
            raw = getattr(stream, "_raw_stream", None)
            if raw is not None:
                stream._raw_stream = proxy(raw, self._tracker)
        except Exception:
            self._tracker.internal_error("attach")

    def _settle(self) -> None:
        tracker = self._tracker
        if tracker.done:
            return
        try:
            snapshot = self._entered.current_message_snapshot
        except Exception:
            tracker.finish(read=False)
        else:
            tracker.complete(snapshot)

    def __del__(self) -> None:
        if getattr(self, "_entered", None) is not None:
            super().__del__()


class SyncManagerProxy(_ManagerProxy):
    """A synchronous stream manager being profiled."""

    __slots__ = ()

    def __enter__(self) -> Any:
        try:
            stream = self._wrapped.__enter__()
        except BaseException as exc:
            self._tracker.fail(exc)
            raise
        self._attach(stream, SyncStreamProxy)
        return stream

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return self._wrapped.__exit__(exc_type, exc, tb)
        finally:
            self._settle()


class AsyncManagerProxy(_ManagerProxy):
    """An asynchronous stream manager being profiled."""

    __slots__ = ()

    async def __aenter__(self) -> Any:
        try:
            stream = await self._wrapped.__aenter__()
        except BaseException as exc:
            self._tracker.fail(exc)
            raise
        self._attach(stream, AsyncStreamProxy)
        return stream

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return await self._wrapped.__aexit__(exc_type, exc, tb)
        finally:
            self._settle()
