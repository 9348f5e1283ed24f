"""Deterministic regression signal: instructions executed by the meshwork proxy pair under
`valgrind --tool=callgrind` for a fixed number of requests from a fixed client (one keep-alive
connection, sequential). A 0-request run shows the fixed start-up/shut-down cost."""

import http.client
import re
import subprocess
import time
from pathlib import Path

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


def _one_run(n: int, hop: str, state: Path) -> dict:
    tag = f"{hop}-n{n}"
    for old in CALLGRIND.glob(f"{tag}-*.out"):
        old.unlink()
    procs: list[Proc] = meshwork.start_sidecars(hop, state, wrapper=_valgrind(tag), timeout=300)
    failed = 0
    try:
        time.sleep(SETTLE_S)
        if n:
            client = Client(meshwork.OUTBOUND_PORT[hop])
            failed = client.first_ok()
            statuses = [client.get() for _ in range(n - 1)]
            if any(s != 200 for s in statuses):
                raise RuntimeError(f"non-200 under callgrind: {sorted(set(statuses))}")
            client.conn.close()
    finally:
        stop(procs, grace=120)  # SIGTERM: a clean exit makes callgrind write its file
    files = {side: CALLGRIND / f"{tag}-{p.pid}.out" for side, p in zip("AB", procs)}
    return {"requests": n, "failed_before_route": failed, "files": {k: str(v) for k, v in files.items()},
            "instructions": {side: _total(f) for side, f in files.items()}}


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
    ("malloc/free", r"malloc|_int_free|\bfree\b|realloc|cfree|tcache"),
    ("handshake crypto (ECDSA, X25519, SHA-2; one-off)", r"nistz256|p256|x25519|sha256_block|sha512_block|bn_mul|limbs_|ecdsa"),
    ("TLS records (rustls, AES-GCM)", r"rustls|tokio_rustls|aes|gcm|ghash|chacha|poly1305|\bring::|ring_core"),
    ("HTTP/2 (h2, hpack)", r"\bh2::"),
    ("HTTP/1 (hyper h1, httparse)", r"hyper::proto::h1|httparse"),
    ("hyper / hyper-util (other)", r"hyper"),
    ("http::HeaderMap", r"http::header"),
    ("hashing (SipHash)", r"Hasher|hash_one|sip"),
    ("tracing", r"tracing"),
    ("tokio runtime, timers, I/O driver", r"tokio|mio::"),
    ("libc (syscall wrappers, locks)", r"libc\.so|syscall|epoll|__libc_|__GI_"),
    ("meshwork policy engine", r"meshwork_policy::|\bpolicy::"),
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


def run(n: int = 2000) -> list[dict]:
    """One measurement per hop protocol the binary supports (h2 always; h1 with --peer-http1)."""
    hops = ["h2"] + (["h1"] if meshwork.h1_flag() else [])
    return [run_hop(n, hop) for hop in hops]


def run_hop(n: int, hop: str) -> dict:
    CALLGRIND.mkdir(parents=True, exist_ok=True)
    state = MESH_STATE / f"callgrind-{hop}"
    control = meshwork.start_control(state)
    try:
        zero, loaded = _one_run(0, hop, state), _one_run(n, hop, state)
    finally:
        stop([control])
    total = lambda r: sum(r["instructions"].values())  # noqa: E731
    return {
        "hop": hop, "requests": n, "zero": zero, "loaded": loaded,
        "per_request": total(loaded) / n,
        "marginal_per_request": (total(loaded) - total(zero)) / n,
        "profile": profile(zero, loaded, n),
    }
