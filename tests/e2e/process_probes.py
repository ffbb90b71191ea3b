"""What /proc says about a process under test: open descriptors, resident memory, CPU time. Shared
by the fault suite, the hostile HTTP/2 suite and the soak (tests/soak/soak.py)."""

from __future__ import annotations

import os
import time


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    """VmRSS in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS line for pid {pid}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settled_fds(pid: int) -> int:
    """The open descriptor count once it has not changed for half a second: a few (signal and
    timer descriptors) appear just after the ready line."""
    counts = [open_fds(pid)]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (len(counts) < 6 or len(set(counts[-6:])) > 1):
        time.sleep(0.1)
        counts.append(open_fds(pid))
    return counts[-1]
