"""bench/soak (issue 16): a soak of the meshwork pair. Per hop protocol, a fresh pair (the chain
`bench/run` measures as meshwork-<hop>) gets ≥ N requests (1,000,000 by default) from wrk at
saturation (100 connections), run in segments of at most 10 s until sidecar B's own request counter
has reached N. A thread samples both sidecars every second (VmRSS, RssAnon, RssFile, open fds) with
the request count so far. Verdicts: no errors (wrk's and the sidecars' metrics), and RSS at the end
within +10 % of RSS after the first 100,000 requests (memory is bounded, not leaking); open fds at
the end against the start are reported."""

import json
import math
import os
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import load
import machine
import meshwork
import paths
import soak_report
from contenders import Contender, Target, all_contenders, policy_enforced, ready
from procs import Proc, status_kib, stop

SAMPLE_S = 1.0        # sampling period
SEGMENT_S = 10        # longest wrk run; the last one is sized to what is left
IDLE_AFTER_S = 5.0    # sampled after the load, before the pair is stopped
GROWTH_LIMIT = 0.10   # RSS at the end ÷ RSS after the baseline requests − 1
SERIES_ROWS = 20      # at most this many rows in the markdown's RSS-over-requests series


@dataclass
class Settings:
    requests: int = 1_000_000
    connections: int = 100
    threads: int = 1
    baseline: int = 100_000   # RSS "after the first 100k requests" is the growth reference


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%T')}] {msg}", flush=True)


def request_counts(admin: str, direction: str) -> tuple[int, int]:
    """(all, not 200) summed over a sidecar's `meshwork_requests_total` series of `direction`."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = bad = 0
    for line in text.splitlines():
        if line.startswith("meshwork_requests_total{") and f'direction="{direction}"' in line:
            n = int(float(line.rsplit(" ", 1)[1]))
            total += n
            bad += 0 if 'status_code="200"' in line else n
    return total, bad


APP_PORT = int(meshwork.APP.rsplit(":", 1)[1])


def upstream_connections(pid: int, fds: list[str], port: int) -> int:
    """How many of `pid`'s fds are TCP connections to `port` (from its /proc/PID/net/tcp*): a
    sidecar's pooled connections to its upstream (A's to B's inbound, B's to the app) explain most
    of its fds after the load."""
    inodes = set()
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed since the listing
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:["):-1])
    hex_port, n = f":{port:04X}", 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            f = line.split()  # sl local_address rem_address st … inode (10th)
            if f[2].endswith(hex_port) and f[9] in inodes:
                n += 1
    return n


def memory(pid: int, upstream_port: int) -> dict:
    """MiB of VmRSS, RssAnon, RssFile, the number of open file descriptors of `pid` and how many
    of them are connections to its upstream."""
    out = {key: status_kib(pid, key) / 1024 for key in ("VmRSS", "RssAnon", "RssFile")}
    fds = os.listdir(f"/proc/{pid}/fd")
    out["fds"], out["upstream_conns"] = len(fds), upstream_connections(pid, fds, upstream_port)
    return out


class Sampler:
    """Samples both sidecars every SAMPLE_S on a thread while `phase` says where the run is.
    Request counts are deltas from the counters at construction: B's inbound series (every request
    that reached the server's sidecar) and A's outbound series (what the client's sidecar answered)."""

    def __init__(self, procs: list[Proc], admins: dict[str, str], upstream_ports: dict[str, int]):
        self.procs, self.admins, self.upstream_ports = dict(zip("AB", procs)), admins, upstream_ports
        self.base = self._counts()
        self.t0 = time.monotonic()
        self.phase = "before"
        self.samples: list[dict] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)

    def _counts(self) -> dict:
        return {"B": request_counts(self.admins["B"], "inbound"), "A": request_counts(self.admins["A"], "outbound")}

    def take(self) -> dict:
        phase, t = self.phase, time.monotonic() - self.t0
        counts = self._counts()
        delta = {side: [now - base for now, base in zip(counts[side], self.base[side])] for side in counts}
        sample = {"t": round(t, 2), "phase": phase, "requests": delta["B"][0], "non_200_B": delta["B"][1],
                  "requests_A": delta["A"][0], "non_200_A": delta["A"][1],
                  **{side: memory(p.pid, self.upstream_ports[side]) for side, p in self.procs.items()}}
        self.samples.append(sample)
        return sample

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            try:
                self.take()
            except Exception as e:  # noqa: BLE001 — any failure ends sampling; the driver stops on it
                self.error = f"sampling failed at {time.monotonic() - self.t0:.1f}s: {type(e).__name__}: {e}"
                return

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        self._stop.set()
        self._thread.join()


def contender(hop: str) -> Contender:
    """The benchmark's meshwork-<hop> contender (bench/mesh/bench.yaml, `meshwork.start_chain`)."""
    found = [c for c in all_contenders(with_meshwork_h1=True) if c.name == f"meshwork-{hop}"]
    if not found:
        raise RuntimeError(f"no meshwork-{hop} contender in contenders.py")
    return found[0]


def drive(target: Target, s: Settings, sampler: Sampler, procs: list[Proc]) -> list[dict]:
    """wrk segments until B has counted `s.requests`; each segment's figures, in order."""
    segments: list[dict] = []
    done = 0
    while done < s.requests:
        rate = sum(x["requests"] for x in segments) / sum(x["seconds"] for x in segments) if segments else 0
        # the last segment is sized to what is left, 10 % over: one short of N costs a whole extra second
        seconds = SEGMENT_S if not rate else max(1, min(SEGMENT_S, math.ceil(1.1 * (s.requests - done) / rate)))
        seg = load.wrk(target, s.connections, seconds, threads=s.threads)
        seg["seconds"] = seconds
        now = request_counts(sampler.admins["B"], "inbound")[0] - sampler.base["B"][0]
        seg["counted_B"] = now - done
        segments.append(seg)
        log(f"  segment {len(segments)}: {seconds}s, wrk {seg['requests']:,} ok, {seg['rps']:,.0f} rps, "
            f"errors {seg['errors']}; B has counted {now:,} of {s.requests:,}")
        dead = [p.name for p in procs if not p.alive()]
        if dead or sampler.error:
            raise RuntimeError(f"soak stopped: {dead or ''} {sampler.error or ''} (see bench/work/logs/)")
        if now <= done:
            raise RuntimeError(f"sidecar B counted no request in a {seconds}s segment of wrk ({seg})")
        done = now
    return segments


def soak_hop(hop: str, s: Settings) -> dict:
    """A fresh pair, readiness and the policy check (POST → 403), then the soak; the pair is
    stopped afterwards whatever happened."""
    c = contender(hop)
    procs = c.start()
    try:
        target = ready(c)
        enforced = policy_enforced(target)
        info = meshwork.ready_info(hop)
        sampler = Sampler(procs[:2], {"A": info["client"]["admin"], "B": info["server"]["admin"]},
                          {"A": meshwork.INBOUND_PORT[hop], "B": APP_PORT})
        sampler.take()  # "before": idle, after the readiness and policy probes
        sampler.phase = "load"
        sampler.start()
        t0 = time.monotonic()
        try:
            segments = drive(target, s, sampler, procs)
            load_s = time.monotonic() - t0
            sampler.phase = "after"
            time.sleep(IDLE_AFTER_S)
        finally:
            sampler.finish()
        sampler.take()
        return {"hop": hop, "contender": c.name, "pids": {side: p.pid for side, p in zip("AB", procs)},
                "policy_enforced": enforced, "load_s": load_s, "segments": segments,
                "samples": sampler.samples, "summary": summarise(sampler.samples, segments, load_s, s)}
    finally:
        stop(procs)


def _first(samples: list[dict], pred) -> dict | None:
    return next((x for x in samples if pred(x)), None)


def summarise(samples: list[dict], segments: list[dict], load_s: float, s: Settings) -> dict:
    """The figures the verdicts are made of."""
    loaded = [x for x in samples if x["phase"] == "load"]
    if not loaded:
        raise RuntimeError("no sample was taken under load (the soak was shorter than a second)")
    end, after = loaded[-1], samples[-1]
    # The sampler runs beside the load: its last loaded sample must be from the load's last
    # seconds, or "at the end" would be a stale figure (a stalled sampler).
    lag = (load_s + loaded[0]["t"]) - end["t"]
    if lag > 3 * SAMPLE_S + 10:
        raise RuntimeError(f"the last sample under load is {lag:.0f}s before the load ended: sampling stalled")
    base = _first(loaded, lambda x: x["requests"] >= s.baseline) or end
    wrk_errors = {"non2xx": sum(x["non2xx"] for x in segments)}
    for kind in ("connect", "read", "write", "timeout"):
        wrk_errors[kind] = sum(x["socket_errors"][kind] for x in segments)
    # Three views of the same requests (the client's, A's and B's): each must be 0. The largest
    # is the figure shown, not their sum (one failed request may be seen by all three).
    errors = max(sum(wrk_errors.values()), after["non_200_A"], after["non_200_B"])
    growth = {side: end[side]["VmRSS"] / base[side]["VmRSS"] - 1 for side in "AB"}
    judged = base is not end  # N larger than the baseline: there is a later sample to compare
    return {
        "requests_B": after["requests"], "requests_A": after["requests_A"],
        "requests_wrk": sum(x["requests"] for x in segments), "rps": after["requests"] / load_s,
        "errors": errors, "wrk_errors": wrk_errors, "non_200_A": after["non_200_A"], "non_200_B": after["non_200_B"],
        "before": samples[0], "first_loaded": loaded[0], "baseline": base, "end": end, "after": after,
        "peak_rss": {side: max(x[side]["VmRSS"] for x in samples) for side in "AB"},
        "rss_growth": growth, "growth_judged": judged,
        "verdict_errors": "PASS" if errors == 0 else "MISS",
        "verdict_rss": ("PASS" if max(growth.values()) <= GROWTH_LIMIT else "MISS") if judged else "NOT JUDGED",
    }


def run(hops: list[str], s: Settings, build: str, argv: list[str]) -> dict:
    """Every hop in turn, each on a fresh pair; a hop that fails is recorded and the next one runs."""
    started = datetime.now(timezone.utc)
    meta = {"started": started.isoformat(timespec="seconds"), "argv": argv, "settings": asdict(s),
            "limits": {"rss_growth": GROWTH_LIMIT, "sample_s": SAMPLE_S, "segment_s": SEGMENT_S, "idle_after_s": IDLE_AFTER_S},
            "machine": machine.describe("(not used)"), "load_before": machine.loadavg(), "meshwork_build": build}
    out, failures = [], []
    for hop in hops:
        if hop == "h1" and meshwork.h1_flag() is None:
            failures.append({"hop": hop, "error": f"not run: this meshwork has no {meshwork.H1_FLAG}"})
            continue
        log(f"meshwork-{hop}: {s.requests:,} requests, wrk -t{s.threads} -c{s.connections}, segments ≤ {SEGMENT_S}s")
        try:
            r = soak_hop(hop, s)
        except Exception as e:  # noqa: BLE001 — one hop's failure is recorded; the others still run
            log(f"meshwork-{hop}: FAILED: {type(e).__name__}: {e}")
            failures.append({"hop": hop, "error": f"{type(e).__name__}: {e}"})
            continue
        m = r["summary"]
        log(f"meshwork-{hop}: {m['requests_B']:,} requests in {r['load_s']:.0f}s ({m['rps']:,.0f} rps), errors {m['errors']}, "
            f"RSS growth A {m['rss_growth']['A']:+.1%} B {m['rss_growth']['B']:+.1%}: {m['verdict_errors']} / {m['verdict_rss']}")
        out.append(r)
    meta.update(load_after=machine.loadavg(), minutes=(datetime.now(timezone.utc) - started).total_seconds() / 60)
    return {"kind": "soak", "meta": meta, "hops": out, "failures": failures}


def passed(raw: dict) -> bool:
    return not raw["failures"] and bool(raw["hops"]) and all(
        h["policy_enforced"] and h["summary"]["verdict_errors"] == "PASS" and h["summary"]["verdict_rss"] != "MISS"
        for h in raw["hops"])


def write(name: str, raw: dict) -> None:
    (paths.RESULTS / f"{name}.json").write_text(paths.relative(json.dumps(raw, indent=1)))
    md = paths.RESULTS / f"{name}.md"
    md.write_text(paths.relative("\n".join(soak_report.document(raw)) + "\n"))
    log(f"wrote {md.relative_to(paths.REPO)} and {name}.json")
    print(md.read_text())
