"""Pod mode (issue 10) for the benchmark: two network namespaces on a bench-only bridge, the
topology of pod mode (issue 10: what `meshwork up --isolation=pods` makes), built with `ip` and `nft`.

- bridge `mwbench-br` in the host netns with 198.18.250.1/24 (a bench-only /24 inside the
  testing block 198.18.0.0/15; `up` counts its slots up from 198.18.0.0/24) and a host table
  `inet mwbench` dropping anything forwarded in or out of it (pods are never routed off the machine);
- pods `mwbench-a` (the client's: 198.18.250.2) and `mwbench-b` (the server's: 198.18.250.3), each a
  named netns (/run/netns) with a veth pair: host side `mwbench-a-h` on the bridge, pod side `eth0`;
  `lo` up, default route via the bridge, IPv6 off, the pod ruleset that `meshwork pod-ruleset`
  prints (`proxy::pod::PodRules::default()`) applied inside, and `/etc/netns/<ns>/resolv.conf` =
  `nameserver 127.0.0.1` (the sidecar's resolver) plus a `hosts` with the localhost lines;
- a second nginx (the shared app's config, its own pid and error log) inside pod B on 127.0.0.1:18080.

Everything is removed when the `network()` context ends (try/finally), at interpreter exit (atexit)
and on SIGTERM (turned into SystemExit for the duration); a next run removes what a `kill -9` left.
The load generator runs inside pod A (`ip netns exec mwbench-a wrk … http://server/`): its
connection is captured by sidecar A like an app's."""

import atexit
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from paths import CONF, LOGS, MESHWORK, WORK
from procs import Proc, spawn, stop

PREFIX = "198.18.250"
BRIDGE = "mwbench-br"
TABLE = "mwbench"  # host netns: inet mwbench
APP_PORT = 18080


@dataclass(frozen=True)
class Pod:
    netns: str   # name in /run/netns
    ip: str      # eth0's address in the pod
    host_link: str  # the veth end on the bridge

    @property
    def path(self) -> str:
        return f"/run/netns/{self.netns}"


CLIENT = Pod("mwbench-a", f"{PREFIX}.2", "mwbench-a-h")  # sidecar A + the load generator
SERVER = Pod("mwbench-b", f"{PREFIX}.3", "mwbench-b-h")  # sidecar B + nginx
PODS = (CLIENT, SERVER)


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return next((str(p) for p in (Path("/usr/sbin", name), Path("/sbin", name)) if p.exists()), None)


def unavailable() -> str | None:
    """Why pod contenders cannot run here, or None. Root (namespaces, nft), `ip` and `nft`, and
    a meshwork binary with pod mode (`proxy --pod`) and `pod-ruleset` are needed."""
    if os.geteuid() != 0:
        return "not root (pods need CAP_NET_ADMIN and CAP_SYS_ADMIN: run bench/run as root)"
    missing = [t for t in ("ip", "nft") if _tool(t) is None]
    if missing:
        return f"{' and '.join(missing)} not found (apt-get install iproute2 nftables)"
    if not MESHWORK.exists():
        return f"no meshwork binary at {MESHWORK}"
    help_text = subprocess.run([MESHWORK, "proxy", "--help"], capture_output=True, text=True).stdout
    if "--pod-ip" not in help_text:
        return f"{MESHWORK.name} has no pod mode (`meshwork proxy --pod … --pod-ip …`): an older build"
    if subprocess.run([MESHWORK, "pod-ruleset"], capture_output=True).returncode != 0:
        return f"{MESHWORK.name} has no `pod-ruleset` subcommand: an older build"
    return None


def _run(argv: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done


def in_pod(pod: Pod, argv: list) -> list[str]:
    """argv run inside the pod (a new mount namespace with /etc/netns/<ns>/* over /etc)."""
    return ["ip", "netns", "exec", pod.netns, *map(str, argv)]


def _etc(pod: Pod) -> Path:
    return Path("/etc/netns") / pod.netns


def remove() -> None:
    """Removes every object of the bench's pod network that exists (idempotent; errors ignored,
    what is already gone is fine). Processes left inside a pod by a `kill -9`ed run (its nginx, a
    load generator) are killed by pid first, or the namespace would live on through them."""
    for pod in PODS:
        pids = _run(["ip", "netns", "pids", pod.netns], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        _run(["ip", "netns", "delete", pod.netns], check=False)  # takes eth0 and its veth peer along
        _run(["ip", "link", "delete", pod.host_link], check=False)
        shutil.rmtree(_etc(pod), ignore_errors=True)
    _run(["ip", "link", "delete", BRIDGE], check=False)
    _run(["nft", "delete", "table", "inet", TABLE], check=False)


def leftovers() -> list[str]:
    """The bench's pod objects that still exist (empty after `remove()`)."""
    names = set(_run(["ip", "netns", "list"], check=False).stdout.split())
    links = _run(["ip", "-o", "link", "show"], check=False).stdout
    left = [p.netns for p in PODS if p.netns in names]
    left += [link for link in (BRIDGE, *(p.host_link for p in PODS)) if f" {link}:" in links or f" {link}@" in links]
    if _run(["nft", "list", "table", "inet", TABLE], check=False).returncode == 0:
        left.append(f"nft table inet {TABLE}")
    return left + [str(_etc(p)) for p in PODS if _etc(p).exists()]


def _host_side(ruleset_forward: str) -> None:
    _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    _run(["ip", "addr", "add", f"{PREFIX}.1/24", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])
    _run(["nft", "-f", "-"], stdin=ruleset_forward)


def _pod(pod: Pod, ruleset: str) -> None:
    _run(["ip", "netns", "add", pod.netns])
    _run(["ip", "link", "add", pod.host_link, "type", "veth", "peer", "name", "eth0", "netns", pod.netns])
    _run(["ip", "link", "set", pod.host_link, "master", BRIDGE, "up"])
    for args in (["addr", "add", f"{pod.ip}/24", "dev", "eth0"], ["link", "set", "eth0", "up"],
                 ["link", "set", "lo", "up"], ["route", "add", "default", "via", f"{PREFIX}.1"]):
        _run(["ip", "-n", pod.netns, *args])
    _run(in_pod(pod, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]))
    _run(in_pod(pod, ["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"]))
    _run(in_pod(pod, ["nft", "-f", "-"]), stdin=ruleset)
    _etc(pod).mkdir(parents=True, exist_ok=True)
    (_etc(pod) / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (_etc(pod) / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")


FORWARD_DROP = f"""table inet {TABLE} {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{BRIDGE}" drop
    oifname "{BRIDGE}" drop
  }}
}}
"""


def create() -> None:
    """Removes stale objects, then makes the bridge, the host table and both pods."""
    remove()
    ruleset = _run([str(MESHWORK), "pod-ruleset"]).stdout
    _host_side(FORWARD_DROP)
    for pod in PODS:
        _pod(pod, ruleset)


def _app_conf() -> Path:
    """The shared app's nginx config with its own pid file and error log (two run at once)."""
    text = (CONF / "nginx-upstream.conf").read_text()
    conf = CONF / "nginx-pod-upstream.conf"
    conf.write_text(text.replace("nginx-upstream.pid", "nginx-pod-upstream.pid")
                        .replace("nginx-upstream.err", "nginx-pod-upstream.err"))
    return conf


_CONNECT = "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=1).close()"


def wait_port_in(pod: Pod, port: int, proc: Proc, timeout: float = 30.0) -> None:
    """Waits until something listens on 127.0.0.1:port inside the pod."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early (see {proc.log})")
        if subprocess.run(in_pod(pod, [sys.executable, "-c", _CONNECT, port]), capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} in {pod.netns} after {timeout:.0f}s")


def start_app() -> Proc:
    """nginx `return 200 "ok"` on 127.0.0.1:18080 inside pod B (not measured, like the shared app)."""
    app = spawn("app-nginx-pod", in_pod(SERVER, ["nginx", "-e", LOGS / "nginx-pod-upstream.err", "-p", WORK,
                                                 "-c", _app_conf()]), measured=False)
    wait_port_in(SERVER, APP_PORT, app)
    return app


@dataclass
class Network:
    """The pods while they exist; `app` is pod B's nginx."""

    app: Proc


@contextmanager
def network() -> Iterator[Network]:
    """The pod network and pod B's app for the whole command; everything removed on every way out."""
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the finally below runs
    atexit.register(remove)
    app = None
    try:
        create()
        app = start_app()
        yield Network(app)
    finally:
        if app is not None:
            stop([app])
        remove()
        atexit.unregister(remove)
        if previous in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
