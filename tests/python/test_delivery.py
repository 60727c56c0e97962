"""Every outcome is true, arrives, and arrives promptly: a crash costs a retry and never a
map, and a dead worker is reported by its signal."""

from __future__ import annotations

import functools
import os
import signal

import delivery_tasks
import pytest
import tasks
from conftest import FAST

import shoal

# ---------------------------------------------------------------------------------------
# A crash costs a retry, never the map.


@pytest.mark.parametrize(
    "api, items, bad",
    [
        ("map", range(5), 0),  # adaptive: the first chunks hold one item
        ("imap_unordered", range(5), 0),
        ("map_chunks", range(7), 6),  # chunksize 3: the last chunk holds one item
        ("executor_map", [1, 2, 0], 0),  # chunksize 2: likewise
    ],
)
def test_a_crash_in_a_chunk_of_one_item_costs_a_retry_not_the_map(tmp_path, api, items, bad):
    marker = str(tmp_path / "died")
    work = functools.partial(delivery_tasks.die_once_on, marker, bad)
    if api == "executor_map":
        with shoal.ProcessPoolExecutor(2, **FAST) as executor:
            assert list(executor.map(work, items, chunksize=2)) == list(items)
    else:
        with shoal.Pool(2, **FAST) as pool:
            if api == "map":
                assert pool.map(work, items) == list(items)
            elif api == "map_chunks":
                assert pool.map(work, items, chunksize=3) == list(items)
            else:
                assert sorted(pool.imap_unordered(work, items)) == list(items)
    assert os.path.exists(marker), "the item did kill its worker once"


def test_a_chunk_of_one_item_keeps_its_retries_of_zero(tmp_path):
    work = functools.partial(delivery_tasks.die_once_on, str(tmp_path / "died"), 0)
    with shoal.Pool(1, retries=0, **FAST) as pool:
        with pytest.raises(shoal.WorkerCrashed) as caught:
            pool.map(work, range(3))
    assert caught.value.attempts == 1


# ---------------------------------------------------------------------------------------
# A dead worker is reported by its signal.


def test_a_worker_killed_with_its_shutdown_unread_names_the_signal():
    # Recycled after each task, the worker is sent Shutdown with its Run; a Run over
    # 64 KiB is read to its end alone, so the Shutdown is still in the socket when the
    # task kills its worker: the channel is reset, which is the death, not a protocol
    # error.
    with shoal.Pool(1, maxtasksperchild=1, retries=0, **FAST) as pool:
        with pytest.raises(shoal.WorkerCrashed) as caught:
            pool.apply(delivery_tasks.kill_self, (b"x" * (1 << 17),))
        assert caught.value.signal == signal.SIGKILL, caught.value
        assert "SIGKILL" in str(caught.value)
        assert pool.apply(tasks.inc, (1,)) == 2
