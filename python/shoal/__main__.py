"""`python -m shoal ...` and the `shoal` command the package installs: the command line
of the `shoal` binary (the same Rust code, linked into the extension), with its output,
exit statuses and handling of SIGINT and SIGTERM.

Python's start changes two signal dispositions that the binary does not have: SIGINT
raises KeyboardInterrupt (it would wait for the command to return, then print a
traceback) and SIGXFSZ is ignored (which every task would inherit). Both go back to
their defaults first; `shoal run` installs its own handlers, as the binary does.
"""

from __future__ import annotations

import signal
import sys


def main(argv: list[str] | None = None) -> int:
    """Runs the command line (`sys.argv[1:]` by default); returns its exit status."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    from shoal._engine import cli_main

    # Anything Python buffered goes out before the command writes to the same streams.
    sys.stdout.flush()
    sys.stderr.flush()
    return cli_main(["shoal", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
