"""Every outcome is true, arrives, and arrives promptly: a dead worker is reported by its
signal."""

from __future__ import annotations

import signal

import delivery_tasks
import pytest
import tasks
from conftest import FAST

import shoal

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
