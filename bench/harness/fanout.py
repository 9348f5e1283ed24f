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


def one(n: int, rounds: int, idle_s: int) -> dict:
    """A fresh control plane and N simulated sidecars; the tool's JSON report."""
    base = paths.WORK / "fanout" / str(n)
    shutil.rmtree(base, ignore_errors=True)
    resources, state = base / "resources", base / "state"
    shutil.copytree(paths.REPO / "examples" / "store-billing", resources)
    state.mkdir(parents=True)
    control = spawn(f"fanout-control-{n}", [paths.MESHWORK, "control", "--resources", resources,
                                            "--state-dir", state], measured=False)
    try:
        sock = state / "control.sock"
        deadline = time.monotonic() + 30
        while not sock.exists():
            if time.monotonic() > deadline or not control.alive():
                raise RuntimeError(f"control did not start: see {control.log}")
            time.sleep(0.05)
        out = base / "report.json"
        argv = [paths.MESHWORK, "fanout", "--socket", sock, "--sidecars", str(n), "--resources", resources,
                "--control-pid", str(control.pid), "--rounds", str(rounds), "--idle-secs", str(idle_s),
                "--json", out]
        log(f"N={n}: {rounds} changes after a {idle_s} s idle window")
        done = subprocess.run([str(a) for a in argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if not out.exists():
            raise RuntimeError(f"meshwork fanout failed for N={n}: {done.stderr.strip()}")
        report = json.loads(out.read_text())
        report["exit"] = done.returncode
        return report
    finally:
        stop([control])


def run(ns: list[int], rounds: int, idle_s: int, argv: list[str]) -> dict:
    paths.ensure_dirs()
    results = []
    for n in ns:
        try:
            results.append(one(n, rounds, idle_s))
        except (RuntimeError, OSError) as e:
            log(f"N={n}: {e}")
            results.append({"sidecars": n, "failed": str(e)})
    return {
        "kind": "fanout",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "bench/fanout " + " ".join(argv),
        "binary": paths.relative(str(paths.MESHWORK)),
        "nproc": os.cpu_count(),
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
             f"`{raw['command']}`, binary `{raw['binary']}`, {raw['nproc']} cores. One `meshwork control` "
             "(redb store) per N; N simulated sidecars long-poll its contract socket (crates/cli/src/fanout_cmd.rs). "
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
