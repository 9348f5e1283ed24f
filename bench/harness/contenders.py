"""The chains under test. Each contender starts its proxy pair (A = plain HTTP in, B = mTLS in)
and says where the client connects. Ports follow shared/bench-anchors/README.md."""

import http.client
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import collector
import meshwork
import pods
from paths import CONF, LOGS, WORK, envoy_binary
from procs import Proc, spawn, stop, wait_port

APP_PORT = 18080
HOST_HEADER = "server"  # every contender gets the same request bytes; meshwork routes by it


@dataclass
class Target:
    """Where the load generator connects and how it names the upstream."""

    port: int
    absolute_form: bool = False  # True: send `GET http://server/` (meshwork's forward-proxy form)
    netns: str | None = None     # pod mode: the client runs in this pod and connects to `http://server/`

    @property
    def url(self) -> str:
        if self.netns or self.absolute_form:
            return f"http://{HOST_HEADER}/"
        return f"http://127.0.0.1:{self.port}/"

    def argv(self, argv: list) -> list[str]:
        """A load generator's argv, run inside the client's pod in pod mode."""
        return ["ip", "netns", "exec", self.netns, *map(str, argv)] if self.netns else list(map(str, argv))


@dataclass
class Contender:
    name: str                          # e.g. "haproxy-h2"
    family: str                        # direct | nginx | haproxy | envoy | meshwork
    hop: str                           # protocol on the mTLS hop: h1 | h2 | - (direct)
    port: int                          # where the client connects (proxy A's listener)
    start: Callable[[], list[Proc]]    # measured procs first, A then B
    target: Target | None = None       # filled in by `ready()`
    traced: bool = False               # meshwork with tracing on (`bench/run --tracing`)
    pod: bool = False                  # meshwork in pod mode (issue 10): the client runs in pod A
    app: Proc | None = None            # pod mode: the app inside pod B (set once the pods exist)


def _nginx(name: str) -> list[str]:
    return ["nginx", "-e", LOGS / f"{name}.err", "-p", WORK, "-c", CONF / f"{name}.conf"]


def _haproxy(conf: str) -> list[str]:
    return ["haproxy", "-db", "-f", CONF / conf]


def _envoy(conf: str) -> list[str]:
    return [envoy_binary(), "-c", CONF / conf, "--concurrency", "1", "--disable-hot-restart",
            "-l", "warn"]


def _pair(name: str, a_argv: list[str], b_argv: list[str], a_port: int, b_port: int) -> list[Proc]:
    """Starts B then A and waits for both listeners."""
    b = spawn(f"{name}-B", b_argv)
    a = spawn(f"{name}-A", a_argv)
    try:
        wait_port(b_port, proc=b)
        wait_port(a_port, proc=a)
    except Exception:
        stop([a, b])
        raise
    return [a, b]


def start_app() -> Proc:
    app = spawn("app-nginx", _nginx("nginx-upstream"), measured=False)
    wait_port(APP_PORT, proc=app)
    return app


def all_contenders(with_meshwork_h1: bool, traced: bool = False, pod: bool = False) -> list[Contender]:
    """Every contender; `pod` adds meshwork-pod-<hop> after the meshwork ones (the caller checks
    `pods.unavailable()` first)."""
    cs = [
        Contender("direct", "direct", "-", APP_PORT, lambda: []),
        Contender("nginx-h1", "nginx", "h1", 20001, lambda: _pair(
            "nginx-h1", _nginx("nginx-outbound"), _nginx("nginx-inbound"), 20001, 20443)),
    ]
    for hop, a_port, b_port in (("h1", 21001, 21443), ("h2", 21002, 21444)):
        cs.append(Contender(f"haproxy-{hop}", "haproxy", hop, a_port, lambda hop=hop, a=a_port, b=b_port: _pair(
            f"haproxy-{hop}", _haproxy(f"haproxy-outbound-{hop}.cfg"), _haproxy(f"haproxy-inbound-{hop}.cfg"), a, b)))
    for hop, a_port, b_port in (("h1", 22001, 22443), ("h2", 22002, 22444)):
        cs.append(Contender(f"envoy-{hop}", "envoy", hop, a_port, lambda hop=hop, a=a_port, b=b_port: _pair(
            f"envoy-{hop}", _envoy(f"envoy-outbound-{hop}.yaml"), _envoy(f"envoy-inbound-{hop}.yaml"), a, b)))
    for hop in ("h2", "h1") if with_meshwork_h1 else ("h2",):
        port = meshwork.OUTBOUND_PORT[hop]
        cs.append(Contender(f"meshwork-{hop}", "meshwork", hop, port, lambda hop=hop: meshwork.start_chain(hop)))
        if traced:  # same ports: contenders run one at a time
            cs.append(Contender(f"meshwork-{hop}-traced", "meshwork", hop, port, lambda hop=hop: meshwork.start_chain(
                hop, collector.sidecar_flags()), traced=True))
    for hop in (("h2", "h1") if with_meshwork_h1 else ("h2",)) if pod else ():
        # port 80: the client in pod A connects to `http://server/`, captured by sidecar A
        cs.append(Contender(f"meshwork-pod-{hop}", "meshwork", hop, 80, lambda hop=hop: meshwork.start_pod_chain(
            hop, (pods.CLIENT.path, pods.CLIENT.ip), (pods.SERVER.path, pods.SERVER.ip)), pod=True))
    return cs


_PROBE = """import http.client, sys
conn = http.client.HTTPConnection(sys.argv[1], 80, timeout=5)
conn.request(sys.argv[2], "/", headers={"Host": sys.argv[1]})
response = conn.getresponse()
body = response.read()
sys.stdout.buffer.write(b"%d " % response.status + body)
"""


def probe(target: Target, method: str = "GET") -> tuple[int, bytes]:
    """One request as the load generators send it; returns (status, body). In pod mode it is sent
    from inside the client's pod (a Python child under `ip netns exec`), to `http://server/`."""
    if target.netns:
        done = subprocess.run(target.argv([sys.executable, "-c", _PROBE, HOST_HEADER, method]),
                              capture_output=True, timeout=15)
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            raise OSError(lines[-1] if lines else f"probe in {target.netns} exited {done.returncode}")
        status, _, body = done.stdout.partition(b" ")
        return int(status), body
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=5)
    try:
        path = target.url if target.absolute_form else "/"
        conn.request(method, path, headers={"Host": HOST_HEADER})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def ready(c: Contender, timeout: float = 30.0) -> Target:
    """Waits until a request through the chain gets the app's `200 ok`. For meshwork, tries
    origin-form + Host first (Linkerd-style), then the absolute form of an HTTP proxy; in pod mode
    the one form an app in a pod uses, `http://server/` from inside pod A."""
    if c.pod:
        forms = [Target(c.port, netns=pods.CLIENT.netns)]
    elif c.family == "meshwork":
        forms = [Target(c.port), Target(c.port, absolute_form=True)]
    else:
        forms = [Target(c.port)]
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        for target in forms:
            try:
                status, body = probe(target)
            except OSError as e:
                status, body = 0, str(e).encode()
            if status == 200 and body == b"ok":
                return target
            form = "pod" if target.netns else "absolute" if target.absolute_form else "origin"
            last = f"{form}-form: {status} {body[:200]!r}"
        time.sleep(0.2)
    raise RuntimeError(f"{c.name}: no 200 ok through the chain after {timeout:.0f}s ({last})")


def policy_enforced(target: Target) -> bool:
    """bench/mesh allows only GET from `client`: a POST must be refused (403) by sidecar B."""
    status, _ = probe(target, "POST")
    return status == 403


def metrics_recorded(admin: str) -> bool:
    """Sidecar B's request metrics (always on) count the benchmark's `GET /` under its route
    template: `route="/"` on an inbound series with status 200."""
    import urllib.request
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return any(line.startswith("meshwork_requests_total{") and 'direction="inbound"' in line
               and 'route="/"' in line and 'status_code="200"' in line
               and float(line.rsplit(" ", 1)[1]) > 0 for line in text.splitlines())
