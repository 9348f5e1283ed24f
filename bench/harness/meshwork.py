"""The meshwork chain: `meshwork control` (not measured) plus two single-threaded sidecars,
`client` (A: outbound listener) and `server` (B: mTLS inbound listener → app on 18080).
Flags as in crates/cli/src/up/*.rs; resources in bench/mesh/."""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import collector
from paths import MESH_RESOURCES, MESH_STATE, MESHWORK
from procs import Proc, spawn, stop, wait_port

APP = "127.0.0.1:18080"
OUTBOUND_PORT = {"h2": 23001, "h1": 23002}
INBOUND_PORT = {"h2": 23443, "h1": 23444}

# The flag that forces HTTP/1.1 between the sidecars (checked in
# `meshwork proxy --help`; an older binary without it is measured with the h2 hop only).
H1_FLAG = "--peer-http1"


def h1_flag() -> str | None:
    help_text = subprocess.run([MESHWORK, "proxy", "--help"], capture_output=True, text=True).stdout
    return H1_FLAG if re.search(rf"{H1_FLAG}\b", help_text) else None


def version() -> str:
    out = subprocess.run([MESHWORK, "--version"], capture_output=True, text=True).stdout.strip()
    if "MESHWORK_BIN" in os.environ:  # another build: this checkout's git says nothing about it
        return f"{out or 'meshwork'} (MESHWORK_BIN=…/{MESHWORK.name})"
    rev = subprocess.run(["git", "-C", str(MESHWORK.parents[2]), "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    return f"{out or 'meshwork'} (git {rev or '?'}, working tree as built)"


def control_argv(state: Path) -> list:
    return [MESHWORK, "control", "--resources", MESH_RESOURCES, "--state-dir", state,
            "--socket", state / "control.sock"]


def proxy_argv(workload: str, state: Path, inbound: str, outbound: str, extra: list[str]) -> list:
    return [MESHWORK, "proxy", "--workload", workload, "--control-socket", state / "control.sock",
            "--inbound", inbound, "--outbound", outbound, "--app", APP,
            "--ready-file", state / f"{workload}.ready.json", "--single-thread",
            # Metrics are always recorded; the admin listener only lets the harness check them.
            "--admin", "127.0.0.1:0", *extra]


def wait_file(path: Path, proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early (see {proc.log})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} not written after {timeout:.0f}s (see {proc.log})")
        time.sleep(0.05)


def start_control(state: Path, timeout: float = 30.0) -> Proc:
    shutil.rmtree(state, ignore_errors=True)  # fresh CA and registry: no stale endpoints
    state.mkdir(parents=True)
    control = spawn(f"meshwork-control-{state.name}", control_argv(state), measured=False)
    wait_file(state / "control.sock", control, timeout)
    return control


def start_sidecars(hop: str, state: Path, wrapper: list[str] | None = None,
                   timeout: float = 30.0, flags: list[str] | None = None,
                   pod_flags: dict[str, list[str]] | None = None) -> list[Proc]:
    """B (server) then A (client); `wrapper` prefixes both argv (valgrind for bench/callgrind),
    `flags` are added to both (the tracing flags for `--tracing`; without them, tracing configured
    with sampling 0, as issue 16 measures), `pod_flags` per workload (`--pod … --pod-ip …`: pod mode,
    whose listeners are inside the pods, not on these ports)."""
    extra = ([h1_flag()] if hop == "h1" else []) + (flags or collector.unsampled_flags())
    wrap = wrapper or []
    name = f"meshwork-{'pod-' if pod_flags else ''}{hop}" + ("-traced" if flags else "")
    pod = pod_flags or {}
    b = spawn(f"{name}-B", wrap + proxy_argv(
        "server", state, f"127.0.0.1:{INBOUND_PORT[hop]}", "127.0.0.1:0", extra + pod.get("server", [])))
    a = spawn(f"{name}-A", wrap + proxy_argv(
        "client", state, "127.0.0.1:0", f"127.0.0.1:{OUTBOUND_PORT[hop]}", extra + pod.get("client", [])))
    try:
        for proc, workload in ((b, "server"), (a, "client")):
            wait_file(state / f"{workload}.ready.json", proc, timeout)
        if not pod_flags:
            wait_port(OUTBOUND_PORT[hop], proc=a)
    except Exception:
        stop([a, b])
        raise
    return [a, b]


def state_dir(hop: str, traced: bool = False, pod: bool = False) -> Path:
    """Each chain's own state dir (control socket, CA, ready files)."""
    return MESH_STATE / (("pod-" if pod else "") + hop + ("-traced" if traced else ""))


def start_chain(hop: str, flags: list[str] | None = None) -> list[Proc]:
    """Control plane and pair; `flags` (tracing) get their own state dir (see `ready_info`)."""
    state = state_dir(hop, traced=bool(flags))
    control = start_control(state)
    try:
        return start_sidecars(hop, state, flags=flags) + [control]
    except Exception:
        stop([control])
        raise


def start_pod_chain(hop: str, client_pod: tuple[str, str], server_pod: tuple[str, str]) -> list[Proc]:
    """The same pair in pod mode: A with `--pod <client netns path> --pod-ip <ip>`, B likewise with
    the server's pod (its `--app 127.0.0.1:18080` is then the nginx inside that pod). The pods
    (bench/harness/pods.py) exist for the whole run."""
    state = state_dir(hop, pod=True)
    control = start_control(state)
    flags = {w: ["--pod", path, "--pod-ip", ip] for w, (path, ip) in (("client", client_pod), ("server", server_pod))}
    try:
        return start_sidecars(hop, state, pod_flags=flags) + [control]
    except Exception:
        stop([control])
        raise


def ready_info(hop: str, traced: bool = False, pod: bool = False) -> dict:
    return read_ready(state_dir(hop, traced, pod))


def read_ready(state: Path) -> dict:
    """The ready files of a pair started with `start_sidecars(…, state)` (their admin addresses)."""
    return {w: json.loads((state / f"{w}.ready.json").read_text()) for w in ("client", "server")}
