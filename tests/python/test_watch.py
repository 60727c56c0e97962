"""`shoal watch` following the run of a Python pool with a store, from another process:
the calls' failures shown as they happen with their exception, and the watch ending
with the pool's run."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import shoal
from conftest import FAST, HERE

ROOT = os.path.dirname(os.path.dirname(HERE))
BINARY = os.environ.get("SHOAL_BIN") or os.path.join(ROOT, "target", "debug", "shoal")


def fails(n):
    import time as t

    t.sleep(0.2)
    raise ValueError(f"bad input {n}")


def slow(n):
    import time as t

    t.sleep(0.3)
    return n


class Watch:
    """`shoal watch` in the background, its stderr lines kept as they come."""

    def __init__(self, store, *args):
        self.proc = subprocess.Popen(
            [BINARY, "--store", str(store), "watch", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def seen(self, text: str):
        return next((at for at, line in self.lines if text in line), None)

    def wait_for(self, text: str, limit: float = 30.0) -> float:
        deadline = time.monotonic() + limit
        while (at := self.seen(text)) is None:
            assert self.proc.poll() is None or self.seen(text), self.text()
            assert time.monotonic() < deadline, f"never saw {text!r}:\n{self.text()}"
            time.sleep(0.01)
        return at

    def finish(self, limit: float = 30.0) -> int:
        try:
            code = self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self.reader.join(timeout=5)
        return code

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def test_watch_follows_a_pool_with_a_store_and_shows_its_exceptions(tmp_path):
    store = tmp_path / "pool.db"
    with shoal.Pool(2, store=str(store), **FAST) as pool:
        first = pool.apply_async(slow, (0,))
        watch = Watch(store)
        try:
            watch.wait_for("shoal: watching run 1")
            results = [pool.apply_async(slow, (n,)) for n in range(1, 5)]
            failing = pool.apply_async(fails, (7,))
            try:
                failing.get(timeout=30)
            except ValueError:
                pass
            failed_at = watch.wait_for("(ValueError: bad input 7)")
            # Shown while the pool still runs: it ends only once we close it.
            assert watch.proc.poll() is None, watch.text()
            assert [r.get(timeout=30) for r in results] == [1, 2, 3, 4]
            first.get(timeout=30)
            closed_at = time.monotonic()
            pool.close()
            pool.join()
            code = watch.finish()
        finally:
            if watch.proc.poll() is None:
                watch.proc.kill()
    text = watch.text()
    assert failed_at < closed_at, text
    failures = [line for _, line in watch.lines if "failed (" in line and "shoal: task" in line]
    assert failures == ["shoal: task 6 failed (ValueError: bad input 7)"], text
    # The pool's run finished with one failed call: `shoal run`'s status for that, 1.
    assert code == 1, text
    last = text.splitlines()[-1]
    assert last.startswith("shoal: run 1: 5 succeeded, 1 failed in "), text
    assert "--resume" not in text, "a pool's run is not resumed by `shoal run`"
