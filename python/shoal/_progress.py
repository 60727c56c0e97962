"""The progress bar of `progress=True`: calls done out of calls submitted, the rate and
the time left, on stderr.

Only the dispatcher thread of `_client.Core` draws it, at most `INTERVAL` apart, so it
costs nothing per task. On a terminal it redraws one line in place; elsewhere (a log
file, a pipe) it writes a line every `PLAIN_INTERVAL` seconds instead.
"""

from __future__ import annotations

import sys
import time

INTERVAL = 0.2
PLAIN_INTERVAL = 5.0
WIDTH = 30


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes}:{seconds:02}"


def render(done: int, total: int, elapsed: float) -> str:
    """One line: bar, counts, percentage, rate and time left (when it can be told)."""
    fraction = done / total if total else 0.0
    filled = int(WIDTH * fraction)
    bar = "#" * filled + "." * (WIDTH - filled)
    rate = done / elapsed if elapsed > 0 else 0.0
    line = f"shoal [{bar}] {done}/{total} {fraction:4.0%}"
    if rate > 0:
        line += f" {rate:,.0f}/s" if rate >= 10 else f" {rate:.2f}/s"
        line += (
            f" ETA {_clock((total - done) / rate)}" if done < total else f" in {_clock(elapsed)}"
        )
    return line


class ProgressBar:
    def __init__(self, stream=None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        try:
            self._tty = self._stream.isatty()
        except (AttributeError, ValueError):
            self._tty = False
        self._start: float | None = None
        self._last_draw = 0.0
        self._last_line = ""
        self._width = 0

    def update(self, done: int, total: int, final: bool = False) -> None:
        """Redraws if enough time passed since the last drawing (always when `final`)."""
        if total == 0:
            return
        now = time.monotonic()
        if self._start is None:
            self._start = now
        interval = INTERVAL if self._tty else PLAIN_INTERVAL
        if not final and now - self._last_draw < interval:
            return
        self._last_draw = now
        line = render(done, total, now - self._start)
        if line == self._last_line:
            return
        self._last_line = line
        try:
            if self._tty:
                # Pad over the rest of a longer previous line.
                self._stream.write("\r" + line.ljust(self._width))
                self._width = len(line)
                if final:
                    self._stream.write("\n")
            else:
                self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not break the pool
