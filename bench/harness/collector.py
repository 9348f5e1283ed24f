"""The OTLP collector the traced sidecars export to (`--tracing`): rotel, the PyPI package the
e2e tests use too, run on loopback with its blackhole exporter (it receives and decodes every
batch, then throws it away). Not measured, like the app: only the sidecars' own cost counts,
and that includes encoding and sending the spans (the export task runs in the sidecar)."""

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from paths import LOGS, WORK
from procs import Proc, spawn, stop, wait_port

ROTEL = "rotel==0.0.1a15"
GRPC_PORT = 24317
HTTP_PORT = 24318
ENDPOINT = f"http://127.0.0.1:{GRPC_PORT}"


def binary() -> Path | None:
    """rotel-agent inside the installed `rotel` package (the interpreter running the harness)."""
    found = subprocess.run([sys.executable, "-c", "import rotel, os; print(os.path.dirname(rotel.__file__))"],
                           capture_output=True, text=True)
    if found.returncode != 0:
        return None
    agent = Path(found.stdout.strip()) / "rotel-agent"
    return agent if agent.exists() else None


def ensure(skip_install: bool) -> Path:
    agent = binary()
    if agent is None and not skip_install:
        print(f"[install] pip install --user {ROTEL}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--user", "--break-system-packages", ROTEL],
                       check=True)
        agent = binary()
    if agent is None:
        raise SystemExit(f"rotel-agent not found: `pip install --user --break-system-packages {ROTEL}` "
                         "(or drop --no-install)")
    return agent


def start(agent: Path) -> Proc:
    state = WORK / "rotel"
    state.mkdir(parents=True, exist_ok=True)
    argv = [agent, "start", "--otlp-grpc-endpoint", f"127.0.0.1:{GRPC_PORT}",
            "--otlp-http-endpoint", f"127.0.0.1:{HTTP_PORT}", "--exporter", "blackhole",
            "--pid-file", state / "rotel.pid", "--log-file", LOGS / "rotel-agent.file.log"]
    proc = spawn("rotel-agent", argv, measured=False, env=dict(os.environ))
    try:
        wait_port(GRPC_PORT, proc=proc)
    except Exception:
        stop([proc])
        raise
    return proc


def version(agent: Path) -> str:
    out = subprocess.run([agent, "--version"], capture_output=True, text=True).stdout.strip()
    return f"{out or 'rotel-agent'} (PyPI {ROTEL})"


def unsampled_flags() -> list[str]:
    """Tracing configured but sampling 0, as issue 16 measures meshwork: every sidecar of every meshwork contender runs with these unless
    it is a `-traced` one. Nothing is sampled, so nothing is exported and no collector is needed;
    a request that arrives with a sampled `traceparent` would still be traced (wrk sends none)."""
    return ["--tracing", "--otlp-endpoint", ENDPOINT, "--otlp-protocol", "grpc", "--trace-sampling", "0"]


def sidecar_flags() -> list[str]:
    """`meshwork proxy` flags for tracing on, 100 % sampling, OTLP/gRPC to the collector."""
    return ["--tracing", "--otlp-endpoint", ENDPOINT, "--otlp-protocol", "grpc", "--trace-sampling", "1.0"]


def span_counts(admin: str) -> dict:
    """`meshwork_trace_spans_exported_total` and the dropped counters (per reason) from a sidecar's
    admin `/metrics`; empty when the families are absent (tracing off)."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    out: dict = {}
    for line in text.splitlines():
        if line.startswith("meshwork_trace_spans_exported_total"):
            out["exported"] = int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("meshwork_trace_spans_dropped_total"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0] if 'reason="' in line else "?"
            out.setdefault("dropped", {})[reason] = int(float(line.rsplit(" ", 1)[1]))
    return out
