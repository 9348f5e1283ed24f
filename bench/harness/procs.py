"""Starting and stopping the processes under test, and reading their cost from /proc."""

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from paths import LOGS

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Proc:
    """A child process with its output in bench/work/logs/<name>.log."""

    name: str
    popen: subprocess.Popen
    measured: bool = True  # False for helpers (meshwork control): not part of the proxy pair
    log: Path = field(default=Path())

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


def spawn(name: str, argv: list[str], measured: bool = True, env: dict | None = None) -> Proc:
    log = LOGS / f"{name}.log"
    out = open(log, "ab")
    out.write(f"\n=== {time.strftime('%F %T')} {' '.join(map(str, argv))}\n".encode())
    out.flush()
    popen = subprocess.Popen(
        [str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=env, start_new_session=True,  # our own process group: Ctrl-C reaches us, not them
    )
    return Proc(name, popen, measured, log)


def stop(procs: list[Proc], grace: float = 10.0) -> None:
    """SIGTERM each (by pid), then SIGKILL whatever is still there after `grace` seconds."""
    for p in procs:
        if p.alive():
            p.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.popen.kill()
            p.popen.wait()


def wait_port(port: int, timeout: float = 30.0, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited early (see {proc.log})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) in seconds, all threads of `pid` (fields 14 and 15 of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; comm may contain spaces
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def counters_of(procs: list[Proc]) -> dict:
    """Summed user and system CPU seconds of the measured processes. (/proc/PID/io's syscall
    counts were tried and dropped: they miss recv/send, which nginx and HAProxy use.)"""
    user = system = 0.0
    for p in procs:
        if p.measured:
            u, s = cpu_split(p.pid)
            user, system = user + u, system + s
    return {"user_s": user, "sys_s": system}


def status_kib(pid: int, key: str) -> int:
    """A `kB` field of /proc/PID/status, e.g. VmRSS or VmHWM."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (e.g. one binary's text in two sidecars) split between users."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise KeyError(f"Pss not in /proc/{pid}/smaps_rollup")


def pss_of(procs: list[Proc]) -> list[float]:
    return [pss_kib(p.pid) / 1024 for p in procs if p.measured]


def cpu_of(procs: list[Proc]) -> float:
    return sum(cpu_seconds(p.pid) for p in procs if p.measured)


def mem_of(procs: list[Proc], key: str) -> list[float]:
    """MiB per measured process, in order (A then B)."""
    return [status_kib(p.pid, key) / 1024 for p in procs if p.measured]
