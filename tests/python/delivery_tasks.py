"""Functions the delivery tests (test_delivery.py) run in worker processes: workers
that die at a chosen moment, results that fail to arrive, tasks that wait for the
caller to have seen another result. (A module apart from tasks.py, for the same
reason: workers import it by name.)"""

from __future__ import annotations

import os
import signal
import time


def kill_self(_data=None):
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)
