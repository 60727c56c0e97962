"""One million calls through one `imap_unordered(chunksize=1)`: the caller's peak memory
(shoal's engine lives in the caller's process) and whether the rate holds from the
first tenth of the run to the last. multiprocessing runs the same calls side by side.

    bench/py_scale.py [CALLS] [--only shoal|mp]     (default 1,000,000, both)

Each library runs in a fresh interpreter; the peak is that process's ru_maxrss."""

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, HERE)
from _pyfuncs import inc
calls, lib = int(sys.argv[1]), sys.argv[2]
if lib == "shoal":
    import shoal
    pool = shoal.Pool(2)
else:
    import multiprocessing
    pool = multiprocessing.Pool(2)
tenth = calls // 10
marks, done, total = [time.perf_counter()], 0, 0
for value in pool.imap_unordered(inc, range(calls), chunksize=1):
    total += value
    done += 1
    if done % tenth == 0:
        marks.append(time.perf_counter())
pool.close()
pool.join()
assert total == calls * (calls - 1) // 2 + calls, "wrong sum"
rates = [tenth / (b - a) for a, b in zip(marks, marks[1:])]
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": marks[-1] - marks[0], "rates": rates}))
""".replace("HERE", repr(HERE))


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    calls = int(args[0]) if args else 1_000_000
    libs = ["shoal", "mp"]
    if "--only" in sys.argv:
        libs = [sys.argv[sys.argv.index("--only") + 1]]
    print(f"| library | calls | peak RSS of the caller, MiB | seconds | rate first tenth /s | rate last tenth /s | last / first |")
    print("|---|---|---|---|---|---|---|")
    for lib in libs:
        out = subprocess.run([sys.executable, "-c", CHILD, str(calls), lib],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out)
        first, last = r["rates"][0], r["rates"][-1]
        print(f"| {lib} | {calls:,} | {r['peak_mib']:.0f} | {r['seconds']:.1f} | {first:,.0f} | {last:,.0f} | {last / first:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
