"""asyncio fronts: `submit_async` of the executor, `apply_awaitable`, `imap_async` and
`imap_unordered_async` of the pool: results, exceptions, cancellation, many awaits
from one loop without a thread each, and a clean end of the loop."""

from __future__ import annotations

import asyncio
import functools
import threading
import time

import pytest

import shoal
import tasks
from conftest import FAST, run_script
from test_failures import _interrupt
from test_futures import quiet_dispatcher


def test_submit_async_gives_results(executor):
    async def main():
        first = await executor.submit_async(tasks.add, 1, b=2)
        viewed = await executor.options(priority=5).submit_async(tasks.square, 7)
        return first, viewed

    assert asyncio.run(main()) == (3, 49)


def test_submit_async_raises_the_calls_exception_with_its_traceback(executor):
    async def main():
        with pytest.raises(ValueError, match="broken") as raised:
            await executor.submit_async(tasks.boom, "broken")
        return raised.value

    error = asyncio.run(main())
    synchronous = executor.submit(tasks.boom, "broken").exception(10)
    assert type(error) is type(synchronous)
    assert isinstance(error.__cause__, shoal.errors.RemoteTraceback)
    assert "in boom" in str(error.__cause__)
    assert str(error.__cause__) == str(synchronous.__cause__)


def test_a_call_that_cannot_be_pickled_fails_its_own_await(executor):
    async def main():
        with pytest.raises(shoal.PicklingError):
            await executor.submit_async(tasks.inc, threading.Lock())
        return await executor.submit_async(tasks.inc, 1)

    assert asyncio.run(main()) == 2


def test_outside_an_event_loop_it_says_so(executor, pool):
    with pytest.raises(RuntimeError, match="running event loop"):
        executor.submit_async(tasks.inc, 1)
    with pytest.raises(RuntimeError, match="running event loop"):
        pool.imap_async(tasks.inc, [1])


def test_cancelling_the_awaiting_task_withdraws_a_call_not_started(tmp_path, capfd):
    marker = tmp_path / "ran"

    async def main(ex):
        blocker = ex.submit_async(tasks.sleep_then, 0.6, "blocker")
        waiting = asyncio.ensure_future(ex.submit_async(open, str(marker), "w"))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await blocker == "blocker"
        # The engine dropped it: it never runs, even once the worker is free.
        return await ex.submit_async(tasks.inc, 1)

    with shoal.ProcessPoolExecutor(1, **FAST) as ex:
        assert asyncio.run(main(ex)) == 2
        assert ex.stats().finished == 3  # the cancelled one ended in the engine too
    assert not marker.exists()
    assert quiet_dispatcher(capfd.readouterr().err)


def test_cancelling_a_started_call_leaves_it_running_and_the_executor_usable(executor, capfd):
    async def main():
        started = executor.submit_async(tasks.sleep_then, 0.4, "late")
        await asyncio.sleep(0.2)
        started.cancel()
        with pytest.raises(asyncio.CancelledError):
            await started
        return await executor.submit_async(tasks.inc, 1)

    assert asyncio.run(main()) == 2
    deadline = time.monotonic() + 10
    while executor.stats().finished < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert executor.stats().finished == 2  # it ran to its end, its outcome dropped
    assert quiet_dispatcher(capfd.readouterr().err)


def test_many_awaits_from_one_loop_take_no_thread_each(executor):
    async def main():
        before = threading.active_count()
        calls = [executor.submit_async(tasks.inc, x) for x in range(2000)]
        during = threading.active_count()
        gathered = await asyncio.gather(*calls[:1000])
        in_completion_order = [await call for call in asyncio.as_completed(calls[1000:])]
        return before, during, gathered, in_completion_order

    before, during, gathered, rest = asyncio.run(main())
    assert during == before
    assert gathered == [x + 1 for x in range(1000)]
    assert sorted(rest) == [x + 1 for x in range(1000, 2000)]


def test_shutdown_with_cancel_futures_cancels_awaits_not_started():
    ex = shoal.ProcessPoolExecutor(1, **FAST)

    async def main():
        running = ex.submit_async(tasks.sleep_then, 0.4, "finished")
        await asyncio.sleep(0.2)
        queued = [ex.submit_async(tasks.sleep_then, 5) for _ in range(3)]
        started = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: ex.shutdown(wait=True, cancel_futures=True)
        )
        assert time.monotonic() - started < 3
        for call in queued:
            with pytest.raises(asyncio.CancelledError):
                await call
        return await running

    assert asyncio.run(main()) == "finished"


def test_pool_apply_awaitable(pool):
    async def main():
        value = await pool.apply_awaitable(tasks.add, (1,), {"b": 2})
        with pytest.raises(ValueError, match="bad"):
            await pool.options(priority=3).apply_awaitable(tasks.boom)
        return value

    assert asyncio.run(main()) == 3


def test_imap_async_in_order_and_unordered(pool):
    async def main():
        ordered = [x async for x in pool.imap_async(tasks.square, range(300))]
        unordered = [x async for x in pool.imap_unordered_async(tasks.square, range(300))]
        chunked = [x async for x in pool.imap_async(tasks.inc, iter(range(50)), chunksize=7)]
        return ordered, unordered, chunked

    ordered, unordered, chunked = asyncio.run(main())
    assert ordered == [x * x for x in range(300)]
    assert sorted(unordered) == ordered
    assert chunked == [x + 1 for x in range(50)]


def test_imap_async_raises_an_items_exception_and_goes_on(pool):
    async def main():
        seen = []
        iterator = pool.imap_async(functools.partial(tasks.fail_on, bad=(2,)), range(5), chunksize=1)
        while True:
            try:
                seen.append(await iterator.__anext__())
            except ValueError as error:
                seen.append(f"error: {error}")
            except StopAsyncIteration:
                return seen

    seen = asyncio.run(main())
    assert seen[:2] == [0, 1] and seen[2].startswith("error") and seen[3:] == [3, 4]


def test_cancelling_an_async_iteration_stops_its_map(tmp_path):
    async def main(p):
        iterator = p.imap_unordered_async(tasks.sleep_then, [0.3] * 20, chunksize=1)

        async def read():
            async for _ in iterator:
                pass

        reader = asyncio.ensure_future(read())
        await asyncio.sleep(0.5)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        return iterator  # still referenced: its cancellation alone stopped the map

    with shoal.Pool(1, **FAST) as p:
        iterator = asyncio.run(main(p))
        started = time.monotonic()
        assert p.apply(tasks.inc, (1,)) == 2
        assert time.monotonic() - started < 2, "the map's items kept the worker busy"
        assert sum(w.tasks for w in p.stats().workers) < 10  # the rest were cancelled
        del iterator


def test_a_loop_that_ends_before_its_calls_ends_cleanly():
    result = run_script(
        """
        import asyncio, shoal, tasks

        async def main(ex, pool):
            pending = ex.submit_async(tasks.sleep_then, 0.3, "never awaited")
            queued = ex.submit_async(tasks.sleep_then, 0.3, "queued")
            iterator = pool.imap_unordered_async(tasks.sleep_then, [0.2] * 10)
            assert await iterator.__anext__() is None
            assert await ex.submit_async(tasks.inc, 1) == 2  # queued behind the others
            ex.submit_async(tasks.sleep_then, 0.3, "never awaited either")
            return "done"

        with shoal.ProcessPoolExecutor(1) as ex, shoal.Pool(1) as pool:
            print(asyncio.run(main(ex, pool)))
            # Outcomes meant for the closed loop arrive now: nobody awaits them.
            ex.submit(tasks.sleep_then, 0.3).result()
        print("exit")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["done", "exit"]
    assert result.stderr == ""


@pytest.mark.parametrize(
    "awaiting",
    [
        "await asyncio.gather(*(ex.submit_async(tasks.sleep_then, 1.0) for _ in range(40)))",
        "[x async for x in pool.imap_unordered_async(tasks.sleep_then, [1.0] * 40, chunksize=1)]",
    ],
)
def test_ctrl_c_in_asyncio_run_cancels_the_calls_and_ends_promptly(awaiting):
    # asyncio.run turns Ctrl-C into the main task's cancellation: the calls it awaits are
    # withdrawn, the fronts' `with` blocks then have only the running ones to wait for.
    started = time.monotonic()
    _interrupt(
        f"""
        import asyncio, shoal, tasks

        async def main(ex, pool):
            print("waiting", flush=True)
            {awaiting}

        with shoal.ProcessPoolExecutor(1) as ex, shoal.Pool(1) as pool:
            asyncio.run(main(ex, pool))
        """
    )
    assert time.monotonic() - started < 10, "the caller waited for the work after Ctrl-C"
