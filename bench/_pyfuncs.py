"""Worker functions for bench/py_overhead.py.

They live in their own small module, not in the benchmark's ``__main__``, so every
pool can import them by name in its workers: fork and spawn contexts of
multiprocessing, ProcessPoolExecutor, loky, pebble and shoal (py_overhead.py puts
this directory on PYTHONPATH for every process it starts).
"""

import time


def inc(x):
    """The tiny task: f(x) = x + 1."""
    return x + 1


def sleep(seconds):
    """Sleep, then return the argument (the skewed and the kill workloads)."""
    time.sleep(seconds)
    return seconds
