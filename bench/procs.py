"""A broker's process tree as /proc shows it: the server process and its children (the
signature workers, broker/services/signatures.py), whose CPU and memory are the broker's too."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """The process and its descendants alive now."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:  # gone meanwhile
                continue
    return out


def own_cpu_seconds(pid: int) -> float:
    """The process's own CPU seconds, without its children's."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) the process and its living descendants have used so far."""
    return sum(own_cpu_seconds(p) for p in tree(pid))


def _own_rss(pid: int) -> float:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mib(pid: int) -> float:
    """Resident MiB of the process and its descendants (shared pages counted in each)."""
    return sum(_own_rss(p) for p in tree(pid))
