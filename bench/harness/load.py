"""The load generators: oha for latency (1 connection; open-loop fixed rate with
coordinated-omission correction), wrk for warm-up and saturation (lighter per request)."""

import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from contenders import HOST_HEADER, Target
from paths import WORK

ABSOLUTE_FORM_LUA = WORK / "absolute-form.lua"


@dataclass
class Tools:
    oha: Path


def _oha_target_args(t: Target) -> list[str]:
    if t.netns:  # pod mode: `http://server/` resolved by pod A's resolver, the connection captured
        return [t.url]
    if t.absolute_form:  # meshwork as an HTTP forward proxy: `GET http://server/`
        return ["--no-pre-lookup", "-x", f"http://127.0.0.1:{t.port}", t.url]
    return ["--host", HOST_HEADER, t.url]


def _wrk_target_args(t: Target) -> list[str]:
    if t.netns:
        return [t.url]
    if t.absolute_form:
        ABSOLUTE_FORM_LUA.write_text(f'wrk.path = "{t.url}"\nwrk.headers["Host"] = "{HOST_HEADER}"\n')
        return ["-s", str(ABSOLUTE_FORM_LUA), f"http://127.0.0.1:{t.port}/"]
    return ["-H", f"Host: {HOST_HEADER}", f"http://127.0.0.1:{t.port}/"]


def _oha_summary(doc: dict) -> dict:
    """Milliseconds and counts from oha's JSON (seconds in the file)."""
    pct = doc["latencyPercentiles"]
    ok = sum(n for code, n in doc["statusCodeDistribution"].items() if code.startswith("2"))
    total = sum(doc["statusCodeDistribution"].values()) + sum(doc["errorDistribution"].values())
    ms = lambda key: (pct.get(key) or 0.0) * 1e3  # noqa: E731
    return {
        "p50_ms": ms("p50"), "p90_ms": ms("p90"), "p99_ms": ms("p99"),
        "max_ms": (doc["summary"].get("slowest") or 0.0) * 1e3,
        "mean_ms": (doc["summary"].get("average") or 0.0) * 1e3,
        "requests": ok, "errors": total - ok,
        "rps": doc["summary"].get("requestsPerSec") or 0.0,
        "error_kinds": doc["errorDistribution"],
    }


def oha(tools: Tools, t: Target, args: list[str], while_running: Callable[[], None] | None = None) -> dict:
    """Runs oha to completion (calling `while_running` about every 0.25 s) and summarises it."""
    argv = t.argv([tools.oha, "--no-tui", "--output-format", "json", "-w", "--worker-threads", "1", *args, *_oha_target_args(t)])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        if while_running:
            while_running()
        time.sleep(0.25)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"oha failed ({proc.returncode}): {' '.join(argv)}\n{err[-2000:]}")
    return _oha_summary(json.loads(out))


def unloaded(tools: Tools, t: Target, n: int) -> dict:
    """Closed loop over one keep-alive connection: the latency of a request with nothing queued."""
    return oha(tools, t, ["-c", "1", "-n", str(n)])


def fixed_rate(tools: Tools, t: Target, rate: int, conns: int, seconds: int,
               while_running: Callable[[], None]) -> dict:
    """Open loop at `rate` rps, latency measured from the intended send time."""
    return oha(tools, t, ["-c", str(conns), "-q", str(rate), "--latency-correction", "-z", f"{seconds}s"],
               while_running)


_WRK_REQUESTS = re.compile(r"(\d+) requests in ([\d.]+)(\w+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def wrk(t: Target, conns: int, seconds: float, threads: int = 1) -> dict:
    """Closed loop on `threads` wrk threads (one unless asked); returns completed requests, rps and
    errors (non-2xx/3xx responses plus socket errors, each kind also on its own)."""
    argv = t.argv(["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{seconds}s", *_wrk_target_args(t)])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {' '.join(argv)}\n{done.stderr[-2000:]}")
    m = _WRK_REQUESTS.search(done.stdout)
    if m is None:
        raise RuntimeError(f"cannot parse wrk output:\n{done.stdout}")
    requests = int(m.group(1))
    non2xx = int(_WRK_NON2XX.search(done.stdout).group(1)) if _WRK_NON2XX.search(done.stdout) else 0
    sock = _WRK_SOCKET.search(done.stdout)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()) if sock else (0,) * 4))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))
    return {"requests": requests - non2xx, "rps": rps, "errors": non2xx + sum(socket_errors.values()),
            "non2xx": non2xx, "socket_errors": socket_errors}
