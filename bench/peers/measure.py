#!/usr/bin/env python3
"""Run one peer benchmark process and fill in what the runner measures itself.

  measure.py CMD [ARGS...]

The child prints one JSON line (its last non-empty stdout line). This wrapper waits for it
with wait4() and sets, from the kernel's rusage of that child (whole process lifetime,
start-up included):
  cpu_user_s, cpu_sys_s   user / system CPU seconds
  peak_rss_mb             maximum resident set size (MiB)
  cpu_us_per_record       (user + sys) / records, in microseconds
  wall_s                  wall time of the whole process
It prints the merged JSON line on stdout. A child that fails, or prints no JSON, makes this
exit non-zero (its stderr passes through).
"""

import json
import os
import subprocess
import sys
import time


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: measure.py CMD [ARGS...]", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # reaped above; keep Popen from waiting again
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.strip()]
    if code != 0 or not lines:
        sys.stderr.write("".join(ln + "\n" for ln in lines))
        print(f"measure: {sys.argv[1]} exited with {code}", file=sys.stderr)
        return code or 1
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        print(f"measure: last line is not JSON: {lines[-1]!r}", file=sys.stderr)
        return 1
    result["cpu_user_s"] = round(ru.ru_utime, 2)
    result["cpu_sys_s"] = round(ru.ru_stime, 2)
    result["peak_rss_mb"] = round(ru.ru_maxrss / 1024, 1)  # ru_maxrss is KiB on Linux
    if result.get("records"):
        result["cpu_us_per_record"] = round((ru.ru_utime + ru.ru_stime) / result["records"] * 1e6, 2)
    result["wall_s"] = round(wall, 2)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
