"""A description of the machine and the software versions, for the report header."""

import os
import platform
import re
import socket
import subprocess

import meshwork
from paths import envoy_binary


def _first_line(argv: list, pattern: str = "") -> str:
    try:
        done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    text = (done.stdout + done.stderr).strip()
    for line in text.splitlines():
        if re.search(pattern, line):
            return line.strip()
    return text.splitlines()[0] if text else "?"


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def describe(oha: str) -> dict:
    return {
        "host": socket.gethostname(),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "memory": _first_line(["grep", "MemTotal", "/proc/meminfo"]),
        "versions": {
            "meshwork": meshwork.version(),
            "nginx": _first_line(["nginx", "-v"]),
            "haproxy": _first_line(["haproxy", "-v"], "version"),
            "envoy": _first_line([envoy_binary(), "--version"], "version"),
            "oha": _first_line([oha, "--version"]),
            "wrk": _first_line(["wrk", "-v"], "wrk"),
            "openssl": _first_line(["openssl", "version"]),
        },
    }


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])
