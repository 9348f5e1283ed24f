"""bench/run and bench/callgrind: install what is missing, build meshwork, run interleaved rounds
of every contender, write bench/results/<date>-<host>.md and the raw JSON beside it."""

import sys

sys.dont_write_bytecode = True  # keep bench/harness free of __pycache__, however main.py is started

import argparse  # noqa: E402
import json
import os
import shutil
import socket
import time
from datetime import datetime, timezone
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import anchors
import callgrind
import certs
import install
import load
import machine
import meshwork
import paths
import report
import sections
import stats
from contenders import Contender, all_contenders, start_app
from measure import Plan, run_one
from procs import Proc, port_in_use, stop

PORTS = (18080, 20001, 20443, 21001, 21002, 21443, 21444, 22001, 22002, 22443, 22444, 23001, 23002, 23443, 23444)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%T')}] {msg}", flush=True)


def prepare(skip_install: bool, load_tools: bool = True) -> tuple[load.Tools | None, str]:
    """Installs and builds what is missing; returns the tools and how meshwork was built.
    `load_tools=False` (callgrind: its client is Python) skips oha and Envoy."""
    paths.ensure_dirs()
    oha_build, build = None, ("given by MESHWORK_BIN (not built by this run)" if "MESHWORK_BIN" in os.environ
                              else "not rebuilt (--no-install)")
    if not skip_install:
        install.apt_install()
        if load_tools:
            oha_build = install.start_oha_build()
            install.envoy_install()
        build = install.build_meshwork()
    certs.ensure_certs()
    anchors.render_all()
    busy = [p for p in PORTS if port_in_use(p)]
    if busy:
        raise SystemExit(f"ports already in use on 127.0.0.1: {busy} (another bench running?)")
    if not load_tools:
        return None, build
    return load.Tools(oha=install.finish_oha_build(oha_build)), build


def compiles_running() -> list[str]:
    """Names of other heavy build processes (the machine is shared with agents building Rust)."""
    names = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            name = comm.read_text().strip()
        except OSError:
            continue
        if name in ("rustc", "cc1", "cc1plus", "ld", "cargo-clippy", "clippy-driver"):
            names.append(name)
    return names


def wait_for_quiet(max_wait_s: float) -> float:
    """Waits (up to max_wait_s) while other compile jobs run; returns seconds waited."""
    t0 = time.monotonic()
    while compiles_running() and time.monotonic() - t0 < max_wait_s:
        time.sleep(10)
    return time.monotonic() - t0


@contextmanager
def running_app() -> Iterator[Proc]:
    """The shared upstream app (nginx `return 200 "ok"` on 18080) for the whole command."""
    app = start_app()
    try:
        yield app
    finally:
        stop([app])


def rounds(tools: load.Tools, app: Proc, contenders: list[Contender], n: int, plan: Plan,
           max_wait_s: float) -> tuple[list, list]:
    records, failures = [], []
    for r in range(n):
        waited = wait_for_quiet(max_wait_s)
        log(f"round {r + 1}/{n} (waited {waited:.0f}s for other builds; load {machine.loadavg()})")
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        for pos, c in enumerate(order):
            busy_before = compiles_running()
            try:
                rec = run_one(tools, c, app, plan)
            except Exception as e:  # one broken contender must not lose the whole run
                log(f"  {c.name}: FAILED: {e}")
                failures.append({"round": r, "contender": c.name, "error": str(e)})
                continue
            rec.update(round=r, position=pos, loadavg=machine.loadavg(),
                       builds_seen=sorted(set(busy_before + compiles_running())))
            records.append(rec)
            log(summary_line(rec))
    return records, failures


def summary_line(rec: dict) -> str:
    sat = rec["saturation"]
    errors = rec["unloaded"]["errors"] + rec["fixed"]["errors"] + sat["errors"]
    return (f"  {rec['contender']:12} p50 1c {rec['unloaded']['p50_ms']:.3f} ms | "
            f"cpu {sat['cpu_s'] * 1e6 / max(sat['requests'], 1):6.1f} µs/req | {sat['rps']:8.0f} rps | errors {errors}")


def callgrind_or_failure(n: int, failures: list) -> dict | None:
    """The callgrind section; a valgrind problem is recorded, not fatal to the rounds' report."""
    log(f"callgrind: meshwork pair, {n} requests")
    try:
        return callgrind.run(n)
    except Exception as e:
        log(f"callgrind FAILED: {e}")
        failures.append({"round": -1, "contender": "callgrind", "error": str(e)})
        return None


def stamp(quick: bool, tag: str | None = None) -> str:
    name = f"{datetime.now().strftime('%Y-%m-%d')}-{socket.gethostname()}" + ("-quick" if quick else "")
    return f"{name}-{tag}" if tag else name


def cmd_run(args: argparse.Namespace) -> int:
    plan = Plan.quick() if args.quick else Plan()
    n_rounds = args.rounds or (1 if args.quick else 5)
    tools, build = prepare(args.no_install)
    h1 = meshwork.h1_flag()
    contenders = [c for c in all_contenders(with_meshwork_h1=h1 is not None)
                  if not args.only or c.name in args.only or c.name == "direct"]
    started = datetime.now(timezone.utc)
    meta = {"started": started.isoformat(timespec="seconds"), "plan": plan.__dict__, "rounds": n_rounds,
            "argv": sys.argv[2:], "machine": machine.describe(str(tools.oha)), "load_before": machine.loadavg(),
            "meshwork_h1_flag": h1, "meshwork_build": build}
    log(f"{n_rounds} round(s) of {[c.name for c in contenders]}")
    with running_app() as app:
        records, failures = rounds(tools, app, contenders, n_rounds, plan, args.max_wait)
        meta.update(load_after=machine.loadavg(), minutes=(datetime.now(timezone.utc) - started).total_seconds() / 60)
        cg = None if args.no_callgrind else callgrind_or_failure(args.callgrind_n, failures)
    write(stamp(args.quick, args.tag), meta, records, failures, cg, [c.name for c in contenders])
    return 0


def write(name: str, meta: dict, records: list, failures: list, cg: dict | None, order: list[str]) -> None:
    raw = {"meta": meta, "records": records, "failures": failures, "callgrind": cg}
    raw_path = paths.RESULTS / f"{name}.json"
    raw_path.write_text(paths.relative(json.dumps(raw, indent=1)))
    shutil.copy(raw_path, paths.RAW / raw_path.name)
    md_path = paths.RESULTS / f"{name}.md"
    md_path.write_text(paths.relative("\n".join(document(raw, order)) + "\n"))
    log(f"wrote {md_path.relative_to(paths.REPO)} and {raw_path.relative_to(paths.REPO)}")
    print(md_path.read_text())


def document(raw: dict, order: list[str]) -> list[str]:
    per = stats.per_round(raw["records"])
    med = stats.medians(per)
    return sections.document(raw, med, per, order)


def with_routes() -> Path:
    """bench/mesh/ plus bench/routes/: the same chain with a route configured."""
    target = paths.WORK / "mesh-routes"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for source in (paths.MESH_RESOURCES, paths.BENCH / "routes"):
        for doc in sorted(source.glob("*.yaml")):
            shutil.copy(doc, target / doc.name)
    return target


def cmd_callgrind(args: argparse.Namespace) -> int:
    prepare(args.no_install, load_tools=False)
    if args.routes:
        meshwork.MESH_RESOURCES = with_routes()
    with running_app():
        cg = callgrind.run(args.n)
    for run in cg:
        run["route"] = "bench/routes/server.yaml" if args.routes else None
    name = stamp(False, f"{args.tag}-callgrind" if args.tag else "callgrind")
    (paths.RESULTS / f"{name}.json").write_text(paths.relative(json.dumps(cg, indent=1)))
    lines = [f"# meshwork callgrind — {name}", "", *report.callgrind_section(cg), "", *report.profile_section(cg)]
    (paths.RESULTS / f"{name}.md").write_text(paths.relative("\n".join(lines) + "\n"))
    print("\n".join(lines))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    """Re-makes the markdown report from a raw JSON file (e.g. after changing the report code)."""
    raw_path = Path(args.raw).resolve()
    raw = json.loads(raw_path.read_text())
    order = list(dict.fromkeys(r["contender"] for r in sorted(raw["records"], key=lambda r: (r["round"], r["position"]))
                               if r["round"] == 0)) or sorted({r["contender"] for r in raw["records"]})
    md_path = raw_path.with_suffix(".md")
    md_path.write_text(paths.relative("\n".join(document(raw, order)) + "\n"))
    log(f"wrote {md_path}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="bench")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="the side-by-side benchmark (bench/run)")
    run.add_argument("--quick", action="store_true", help="1 round, short phases (development)")
    run.add_argument("--rounds", type=int, help="rounds (default 5; 1 with --quick)")
    run.add_argument("--only", nargs="+", help="contender names to run (direct is always included)")
    run.add_argument("--no-install", action="store_true", help="skip apt/pip/cargo steps")
    run.add_argument("--no-callgrind", action="store_true", help="skip the callgrind section")
    run.add_argument("--callgrind-n", type=int, default=2000)
    run.add_argument("--max-wait", type=float, default=600, help="seconds to wait per round for other builds")
    run.add_argument("--tag", help="suffix for the report name (<date>-<host>-<tag>.md), e.g. for A/B runs")
    cg = sub.add_parser("callgrind", help="instructions per request under callgrind (bench/callgrind)")
    cg.add_argument("-n", type=int, default=2000)
    cg.add_argument("--no-install", action="store_true")
    cg.add_argument("--tag", help="suffix for the report name")
    cg.add_argument("--routes", action="store_true",
                    help="add bench/routes/ (an HTTPRoute with timeouts and retries) to the resources")
    render = sub.add_parser("render", help="re-make a report's markdown from its raw JSON")
    render.add_argument("raw", help="bench/results/<name>.json")
    args = p.parse_args()
    return {"run": cmd_run, "callgrind": cmd_callgrind, "render": cmd_render}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
