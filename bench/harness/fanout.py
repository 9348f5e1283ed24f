"""bench/fanout (issue 15): how long a policy change takes to reach N sidecars long-polling one
control plane, and what the control plane spends on them. Per N, a fresh `meshwork control` on a
copy of examples/store-billing and `meshwork fanout` (N simulated sidecars on its contract socket,
one warm-up change, an idle window, then measured changes; see crates/cli/src/fanout_cmd.rs).

Fan-out of a sidecar = its receipt of the new snapshot − the first sidecar's receipt (the publish).
The directory poll before the publish (0–1 s) is reported apart. Targets from the issue: p99 fan-out
< 1 s at 1,000 proxies; < 100 KiB of control-plane memory per attached proxy."""

import json
import os
import shutil
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import paths
from procs import spawn, stop

FANOUT_P99_MS = 1000.0      # at 1,000 proxies
KIB_PER_PROXY = 100.0


def log(msg: str) -> None:
    print(f"[fanout] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_etcd(base: Path, members: int) -> tuple[list, list[str]]:
    """`members` etcd members on loopback (Debian's etcd-server), healthy; (procs, client URLs)."""
    etcd = shutil.which("etcd")
    if etcd is None:
        raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
    ports = [(free_port(), free_port()) for _ in range(members)]
    cluster = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, (_, p) in enumerate(ports))
    procs, urls = [], []
    for i, (client, peer) in enumerate(ports):
        url = f"http://127.0.0.1:{client}"
        procs.append(spawn(f"fanout-etcd-{i}", [
            etcd, "--name", f"m{i}", "--data-dir", base / f"etcd-{i}",
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--heartbeat-interval", "50", "--election-timeout", "500"], measured=False))
        urls.append(url)
    deadline = time.monotonic() + 30
    while True:
        ok = subprocess.run(["etcdctl", "--endpoints", ",".join(urls), "endpoint", "health"],
                            env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True).returncode == 0
        if ok:
            return procs, urls
        if time.monotonic() > deadline:
            stop(procs)
            raise RuntimeError("etcd did not become healthy in 30 s")
        time.sleep(0.2)


def start_controls(base: Path, resources: Path, replicas: int) -> tuple[list, list, list[Path]]:
    """One control on redb (replicas = 0), or `replicas` replicas on a fresh etcd cluster of
    as many members; (control procs, etcd procs, control sockets)."""
    etcd_procs, urls = ([], []) if replicas == 0 else start_etcd(base, replicas)
    extra = []
    if replicas:
        kek = base / "kek"
        subprocess.run([str(paths.MESHWORK), "ca", "kek", "create", str(kek)], check=True,
                       stdout=subprocess.DEVNULL)
        for url in urls:
            extra += ["--etcd", url]
        extra += ["--kek-file", kek]
    controls, sockets = [], []
    for i in range(max(replicas, 1)):
        state = base / f"state-{i}"
        state.mkdir(parents=True)
        ident = ["--replica-id", f"r{i}"] if replicas else []
        controls.append(spawn(f"fanout-control-{i}", [paths.MESHWORK, "control", "--resources", resources,
                                                      "--state-dir", state, *extra, *ident], measured=False))
        sockets.append(state / "control.sock")
    deadline = time.monotonic() + 30
    for sock, control in zip(sockets, controls):
        while not sock.exists():
            if time.monotonic() > deadline or not control.alive():
                stop(controls + etcd_procs)
                raise RuntimeError(f"control did not start: see {control.log}")
            time.sleep(0.05)
    return controls, etcd_procs, sockets


def one(n: int, rounds: int, idle_s: int, replicas: int) -> dict:
    """Fresh control plane(s) and N simulated sidecars (spread over the replicas); the tool's
    JSON report."""
    base = paths.WORK / "fanout" / f"{n}-r{replicas}"
    shutil.rmtree(base, ignore_errors=True)
    resources = base / "resources"
    shutil.copytree(paths.REPO / "examples" / "store-billing", resources)
    controls, etcd_procs, sockets = start_controls(base, resources, replicas)
    try:
        out = base / "report.json"
        argv = [paths.MESHWORK, "fanout", "--sidecars", str(n), "--resources", resources,
                "--rounds", str(rounds), "--idle-secs", str(idle_s), "--json", out]
        for sock in sockets:
            argv += ["--socket", sock]
        for c in controls:
            argv += ["--control-pid", str(c.pid)]
        for e in etcd_procs:
            argv += ["--etcd-pid", str(e.pid)]
        where = f"{replicas} replicas on {replicas} etcd members" if replicas else "one control (redb)"
        log(f"N={n}, {where}: {rounds} changes after a {idle_s} s idle window")
        done = subprocess.run([str(a) for a in argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if not out.exists():
            raise RuntimeError(f"meshwork fanout failed for N={n}: {done.stderr.strip()}")
        report = json.loads(out.read_text())
        report["exit"] = done.returncode
        return report
    finally:
        stop(controls)
        stop(etcd_procs)


def run(ns: list[int], rounds: int, idle_s: int, argv: list[str], replicas: int = 0) -> dict:
    paths.ensure_dirs()
    results = []
    for n in ns:
        try:
            results.append(one(n, rounds, idle_s, replicas))
        except (RuntimeError, OSError) as e:
            log(f"N={n}: {e}")
            results.append({"sidecars": n, "failed": str(e)})
    return {
        "kind": "fanout",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "bench/fanout " + " ".join(argv),
        "binary": paths.relative(str(paths.MESHWORK)),
        "nproc": os.cpu_count(),
        "replicas": replicas,
        "results": results,
    }


def verdicts(raw: dict) -> list[str]:
    out = []
    at_1000 = [r for r in raw["results"] if r.get("sidecars") == 1000 and "fanout_ms" in r]
    if at_1000:
        p99 = at_1000[0]["fanout_ms"]["p99"]
        out.append(f"p99 fan-out at 1,000 proxies: {p99:.1f} ms (target < {FANOUT_P99_MS:.0f} ms): "
                   + ("PASS" if p99 < FANOUT_P99_MS else "MISS"))
    per = [r["control"]["rss_per_proxy_kib"] for r in raw["results"]
           if r.get("control") and r["control"].get("rss_per_proxy_kib") is not None]
    if per:
        worst = max(per)
        out.append(f"control-plane memory per attached proxy, worst N: {worst:.1f} KiB (target < "
                   f"{KIB_PER_PROXY:.0f} KiB): " + ("PASS" if worst < KIB_PER_PROXY else "MISS"))
    missed = sum(r.get("missed", 0) for r in raw["results"])
    failed = [r["sidecars"] for r in raw["results"] if "failed" in r]
    out.append(f"sidecars that missed a change within 10 s: {missed}; runs that failed: {failed or 'none'}")
    return out


def markdown(raw: dict) -> str:
    lines = [f"# Control-plane fan-out, {raw['when']}", "",
             f"`{raw['command']}`, binary `{raw['binary']}`, {raw['nproc']} cores. "
             + (f"{raw['replicas']} `meshwork control` replicas on a fresh {raw['replicas']}-member loopback etcd per N, "
                "the sidecars spread round-robin over their sockets; control figures are the replicas' sums, etcd's the "
                "members' sums. " if raw.get("replicas") else "One `meshwork control` (redb store) per N. ")
             + "N simulated sidecars long-poll the contract socket(s) (crates/cli/src/fanout_cmd.rs). "
             "Fan-out = a sidecar's receipt of the new snapshot − the first sidecar's receipt; the directory "
             "poll before the publish is the separate *poll delay*.", "", "## Verdicts", ""]
    lines += [f"- {v}" for v in verdicts(raw)]
    lines += ["", "## Results", "",
              "| N | fan-out p50 ms | p90 | p99 | max | poll delay p50 ms | missed | errors | control RSS idle → attached MiB | KiB / proxy | idle CPU % / 1,000 | CPU ms / change / 1,000 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in raw["results"]:
        if "failed" in r:
            lines.append(f"| {r['sidecars']} | failed: {r['failed']} |" + " |" * 10)
            continue
        f, c = r["fanout_ms"], r.get("control") or {}
        num = lambda v, fmt: "n/a" if v is None else format(v, fmt)  # noqa: E731 (null: not measurable)
        rss = (f"{c.get('rss_before_kib', 0) / 1024:.1f} → {c.get('rss_attached_kib', 0) / 1024:.1f}" if c else "")
        lines.append(f"| {r['sidecars']} | {num(f['p50'], '.1f')} | {num(f['p90'], '.1f')} | {num(f['p99'], '.1f')} | "
                     f"{num(f['max'], '.1f')} | {num(r['poll_delay_ms']['p50'], '.0f')} | {r['missed']} | {r['errors']} | "
                     f"{rss} | {num(c.get('rss_per_proxy_kib'), '.1f')} | {num(c.get('idle_cpu_percent_per_1000'), '.2f')} | "
                     f"{num(c.get('cpu_ms_per_change_per_1000'), '.0f')} |")
    stores = [(r["sidecars"], r["etcd"]) for r in raw["results"] if r.get("etcd")]
    if stores:
        lines += ["", "## etcd (all members)", "", "| N | RSS before → after MiB | idle CPU % | CPU ms / change |",
                  "|---|---|---|---|"]
        for n, e in stores:
            num = lambda v, fmt: "n/a" if v is None else format(v, fmt)  # noqa: E731
            lines.append(f"| {n} | {e['rss_before_kib'] / 1024:.1f} → {e['rss_after_kib'] / 1024:.1f} | "
                         f"{num(e['idle_cpu_percent'], '.2f')} | {num(e['cpu_ms_per_change'], '.1f')} |")
    lines += ["", "## Per change", "", "| N | change | p50 ms | p99 ms | max ms | poll delay ms | missed |",
              "|---|---|---|---|---|---|---|"]
    for r in raw["results"]:
        for i, rd in enumerate(r.get("rounds", []), 1):
            cell = lambda v, fmt: "n/a" if v is None else format(v, fmt)  # noqa: E731 (every sidecar missed)
            lines.append(f"| {r['sidecars']} | {i} (v{rd['version']}) | {cell(rd['p50_ms'], '.1f')} | "
                         f"{cell(rd['p99_ms'], '.1f')} | {cell(rd['max_ms'], '.1f')} | "
                         f"{cell(rd['poll_delay_ms'], '.0f')} | {rd['missed']} |")
    return "\n".join(lines) + "\n"


def write(name: str, raw: dict) -> Path:
    md = paths.RESULTS / f"{name}.md"
    (paths.RESULTS / f"{name}.json").write_text(json.dumps(raw, indent=2) + "\n")
    md.write_text(paths.relative(markdown(raw)))
    log(f"wrote {md}")
    return md
