"""Deterministic regression signal: instructions executed by the meshwork proxy pair under
`valgrind --tool=callgrind` for a fixed number of requests from a fixed client (one keep-alive
connection, sequential). A 0-request run shows the fixed start-up/shut-down cost."""

import http.client
import re
import subprocess
import time
from pathlib import Path

import collector
import meshwork
from contenders import HOST_HEADER
from paths import CALLGRIND, MESH_STATE
from procs import Proc, stop

SETTLE_S = 3.0  # after both ready files: lets the snapshot with `server` reach the client sidecar


def _valgrind(tag: str) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={CALLGRIND}/{tag}-%p.out"]


def _total(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no summary line in {path}")


class Client:
    """One keep-alive connection to sidecar A, speaking the form the bench found to work."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.path = "/"

    def get(self) -> int:
        self.conn.request("GET", self.path, headers={"Host": HOST_HEADER})
        response = self.conn.getresponse()
        response.read()
        return response.status

    def first_ok(self, timeout: float = 120.0) -> int:
        """Sends until the first 200 (origin-form, then absolute-form); returns failed attempts."""
        failed, deadline = 0, time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in ("/", f"http://{HOST_HEADER}/"):
                self.path = path
                try:
                    if self.get() == 200:
                        return failed
                except (http.client.HTTPException, OSError):
                    self.conn.close()  # the next request reconnects
                failed += 1
            time.sleep(0.5)
        raise RuntimeError("meshwork chain under callgrind never answered 200")


# `--tracing`: after the last request, how long the pair idles before its `/metrics` is read
# (the exporter sends a partial batch 1 s after its first span; valgrind is ~50× slower), and
# how long to keep re-reading while the exported count is short of N.
EXPORT_WAIT_S = 5.0
EXPORT_DEADLINE_S = 60.0


def _spans(state: Path, n: int, traced: bool) -> dict:
    """Span counters of both sidecars after the requests, from their admin `/metrics`. Called in
    every `--tracing` run (on and off, 0 and N requests) so each pays the same scrapes; a traced
    run re-reads until both sidecars report N exported spans (or the deadline)."""
    admins = {side: meshwork.read_ready(state)[w]["admin"] for side, w in (("A", "client"), ("B", "server"))}
    time.sleep(EXPORT_WAIT_S)
    deadline, scrapes = time.monotonic() + EXPORT_DEADLINE_S, 0
    while True:
        counts = {side: collector.span_counts(admin) for side, admin in admins.items()}
        scrapes += 1
        done = all(c.get("exported", 0) >= n for c in counts.values())
        if not traced or done or time.monotonic() > deadline:
            return {"scrapes": scrapes, **counts}
        time.sleep(2.0)


def _one_run(n: int, hop: str, state: Path, flags: list[str] | None = None, scrape: bool = False,
             setup=None, label: str = "") -> dict:
    """`setup(state)`, when given, runs once both sidecars are ready and before the requests (e.g.
    attaching tappers, `tapcost.py`); what it returns is closed after them."""
    tag = f"{hop}{'-traced' if flags else ''}{label}-n{n}"
    for old in CALLGRIND.glob(f"{tag}-*.out"):
        old.unlink()
    procs: list[Proc] = meshwork.start_sidecars(hop, state, wrapper=_valgrind(tag), timeout=300, flags=flags)
    failed, spans, attached = 0, None, []
    try:
        time.sleep(SETTLE_S)
        if setup:
            attached = setup(state)
        if n:
            client = Client(meshwork.OUTBOUND_PORT[hop])
            failed = client.first_ok()
            statuses = [client.get() for _ in range(n - 1)]
            if any(s != 200 for s in statuses):
                raise RuntimeError(f"non-200 under callgrind: {sorted(set(statuses))}")
            client.conn.close()
        if scrape:
            spans = _spans(state, n, bool(flags))
    finally:
        for thing in attached:
            thing.close()
        stop(procs, grace=120)  # SIGTERM: a clean exit makes callgrind write its file
    files = {side: CALLGRIND / f"{tag}-{p.pid}.out" for side, p in zip("AB", procs)}
    out = {"requests": n, "failed_before_route": failed, "files": {k: str(v) for k, v in files.items()},
           "instructions": {side: _total(f) for side, f in files.items()}}
    if spans is not None:
        out["spans"] = spans
    return out


# Frames every inclusive listing starts with (process start, runtime, generic future combinators):
# true but uninformative, so they are left out of the report (the full file has them).
SCAFFOLDING = ("PROGRAM TOTALS", "(below main)", "libc_start", "lang_start", "__rust_begin_short_backtrace",
               "meshwork::main", "???:main ", "block_on", "enter_runtime", "LocalKey", "run_task", "task::raw::poll",
               "Harness<T,S>::poll", "Core<T,S>::poll", "???:0x", "future::Map<Fut,F>", "map::Map<Fut,F>",
               "poll_fn::PollFn", "MaybeDone", "::Instrumented<T>")


def annotate(path: str, inclusive: bool, top: int = 25) -> list[str]:
    argv = ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", path]
    text = subprocess.run(argv, capture_output=True, text=True).stdout
    lines = [l for l in text.splitlines() if re.match(r"^\s*[\d,]+ \(", l)]
    if inclusive:
        lines = [l for l in lines if not any(s in l for s in SCAFFOLDING)]
    return [l if len(l) <= 220 else l[:217] + "..." for l in lines[:top]]


# Exclusive cost grouped by component; first match wins (function names as callgrind prints them).
CATEGORIES = [
    ("memcpy/memmove/memset", r"mem(cpy|move|set)"),
    ("malloc/free (glibc or mimalloc)", r"malloc|_int_free|\bfree\b|realloc|cfree|tcache|\b_?mi_[a-z_]+"),
    ("handshake crypto (ECDSA, X25519, SHA-2; one-off)", r"nistz256|p256|x25519|sha256_block|sha512_block|bn_mul|limbs_|ecdsa"),
    ("TLS records (rustls, AES-GCM)", r"rustls|tokio_rustls|aes|gcm|ghash|chacha|poly1305|\bring::|ring_core"),
    ("HTTP/2 (h2, hpack)", r"\bh2::"),
    ("HTTP/1 (hyper h1, httparse)", r"hyper::proto::h1|httparse"),
    ("hyper / hyper-util (other)", r"hyper"),
    ("http::HeaderMap", r"http::header"),
    ("hashing (SipHash)", r"Hasher|hash_one|sip"),
    ("OTLP export (opentelemetry, tonic, prost)", r"opentelemetry|tonic|prost"),
    ("tracing", r"tracing"),
    ("tokio runtime, timers, I/O driver", r"tokio|mio::"),
    ("libc (syscall wrappers, locks)", r"libc\.so|syscall|epoll|__libc_|__GI_"),
    ("meshwork policy engine", r"meshwork_policy::|\bpolicy::"),
    ("meshwork trace layer (proxy::trace, span_notes, trace_context)", r"proxy::trace|span_notes|trace_context"),
    ("meshwork proxy code", r"\bproxy::|meshwork_|\bidentity::|\bapi::"),
]


def functions(path: str) -> dict[str, int]:
    """Exclusive instructions per function (every function, no threshold)."""
    argv = ["callgrind_annotate", "--inclusive=no", "--threshold=100", path]
    text = subprocess.run(argv, capture_output=True, text=True).stdout
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.+)$", line)
        if m and "PROGRAM TOTALS" not in line:
            out[m.group(2)] = out.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return out


def marginal(loaded: str, zero: str, n: int) -> dict[str, float]:
    """Per-request exclusive instructions per function: (N-run − 0-run) ÷ N."""
    a, b = functions(loaded), functions(zero)
    return {f: (a.get(f, 0) - b.get(f, 0)) / n for f in a.keys() | b.keys()}


def by_category(per_fn: dict[str, float]) -> list[tuple[str, float]]:
    sums: dict[str, float] = {}
    for fn, cost in per_fn.items():
        cat = next((c for c, pattern in CATEGORIES if re.search(pattern, fn)), "other")
        sums[cat] = sums.get(cat, 0.0) + cost
    return sorted(sums.items(), key=lambda kv: -kv[1])


def top_marginal(per_fn: dict[str, float], top: int = 15) -> list[tuple[str, float]]:
    return [(fn if len(fn) <= 200 else fn[:197] + "...", cost)
            for fn, cost in sorted(per_fn.items(), key=lambda kv: -kv[1])[:top]]


def profile(zero: dict, loaded: dict, n: int) -> dict:
    out = {}
    for side in "AB":
        per_fn = marginal(loaded["files"][side], zero["files"][side], n)
        out[side] = {"categories": by_category(per_fn), "top_marginal": top_marginal(per_fn),
                     "inclusive": annotate(loaded["files"][side], True)}
    return out


def run(n: int = 2000, traced: bool = False) -> list[dict]:
    """One measurement per hop protocol the binary supports (h2 always; h1 with --peer-http1).
    `traced`: per hop, tracing at sampling 0 then on (100 % sampling, OTLP/gRPC to the collector, which
    the caller runs), every run scraping the sidecars' span counters."""
    hops = ["h2"] + (["h1"] if meshwork.h1_flag() else [])
    if not traced:
        return [run_hop(n, hop) for hop in hops]
    return [run_hop(n, hop, flags, scrape=True) for hop in hops for flags in (None, collector.sidecar_flags())]


def run_hop(n: int, hop: str, flags: list[str] | None = None, scrape: bool = False) -> dict:
    CALLGRIND.mkdir(parents=True, exist_ok=True)
    state = MESH_STATE / f"callgrind-{hop}{'-traced' if flags else ''}"
    control = meshwork.start_control(state)
    try:
        zero, loaded = _one_run(0, hop, state, flags, scrape), _one_run(n, hop, state, flags, scrape)
    finally:
        stop([control])
    total = lambda r: sum(r["instructions"].values())  # noqa: E731
    out = {
        "hop": hop, "requests": n, "zero": zero, "loaded": loaded,
        "per_request": total(loaded) / n,
        "marginal_per_request": (total(loaded) - total(zero)) / n,
        "profile": profile(zero, loaded, n),
        # bench/mesh's route (every request matches it) and the sidecars' tracing flags.
        "route": "bench/mesh/route.yaml",
        "tracing_flags": flags or collector.unsampled_flags(),
    }
    if scrape:
        out["tracing"] = {"on": bool(flags), "flags": flags or [],
                          "metrics_scrapes": "every run: once per sidecar after the requests (the same for on and off)"}
    return out


def tracing_delta(off: dict, on: dict, top: int = 20) -> dict:
    """What tracing adds per request, per function and per component: marginal(on) − marginal(off)."""
    n = on["requests"]
    out = {}
    for side in "AB":
        m_on = marginal(on["loaded"]["files"][side], on["zero"]["files"][side], n)
        m_off = marginal(off["loaded"]["files"][side], off["zero"]["files"][side], n)
        delta = {f: m_on.get(f, 0.0) - m_off.get(f, 0.0) for f in m_on.keys() | m_off.keys()}
        out[side] = {"categories": by_category(delta), "top_added": top_marginal(delta, top)}
    return out
