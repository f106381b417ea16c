"""The machine a run happened on, and one process's CPU time and memory read from /proc."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Machine:
    date: str
    cores: int
    memory_gib: float
    cpu_model: str
    python: str
    system: str

    def line(self) -> str:
        return (
            f"{self.cores} cores ({self.cpu_model}), {self.memory_gib:.1f} GiB memory, "
            f"Python {self.python}, {self.system}"
        )


def describe_machine() -> Machine:
    """Return the date (UTC), cores, memory, CPU model and Python version of this machine."""
    return Machine(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cores=os.cpu_count() or 1,
        memory_gib=_meminfo_kib("MemTotal") / 1024 / 1024,
        cpu_model=_cpu_model(),
        python=platform.python_version(),
        system=f"{platform.system()} {platform.release()}",
    )


def _meminfo_kib(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.machine() or "unknown CPU"


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU seconds a process (all its threads) has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name is in parentheses and may hold spaces: count fields after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def memory_mib(pid: int) -> tuple[float, float]:
    """Return (current RSS, peak RSS since the process started) in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def self_cpu_seconds() -> float:
    """Return this process's CPU seconds (the fakes' and the load generator's share of the machine)."""
    times = os.times()
    return times.user + times.system
