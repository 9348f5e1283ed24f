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
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import anchors
import callgrind
import certs
import collector
import install
import load
import machine
import meshwork
import paths
import pods
import report
import sections
import stats
from contenders import Contender, all_contenders, start_app
from measure import Plan, run_cpu, run_one
from procs import Proc, port_in_use, stop

PORTS = (18080, 20001, 20443, 21001, 21002, 21443, 21444, 22001, 22002, 22443, 22444, 23001, 23002, 23443, 23444,
         collector.GRPC_PORT, collector.HTTP_PORT)


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
    return (f"  {rec['contender']:15} p50 1c {rec['unloaded']['p50_ms']:.3f} ms | "
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
    agent = collector.ensure(args.no_install) if args.tracing else None
    h1 = meshwork.h1_flag()
    pod_meta = pod_mode(not args.no_pods and (not args.only or any(n.startswith("meshwork-pod-") for n in args.only)))
    contenders = [c for c in all_contenders(with_meshwork_h1=h1 is not None, traced=args.tracing,
                                            pod=bool(pod_meta and not pod_meta["skipped"]))
                  if not args.only or c.name.removesuffix("-traced") in args.only or c.name == "direct"]
    started = datetime.now(timezone.utc)
    meta = {"started": started.isoformat(timespec="seconds"), "plan": plan.__dict__, "rounds": n_rounds,
            "argv": sys.argv[2:], "machine": machine.describe(str(tools.oha)), "load_before": machine.loadavg(),
            "meshwork_h1_flag": h1, "meshwork_build": build}
    if agent:
        meta["tracing"] = {"flags": collector.sidecar_flags(), "collector": collector.version(agent)}
    if pod_meta:
        meta["pods"] = pod_meta
    log(f"{n_rounds} round(s) of {[c.name for c in contenders]}")
    pod_failures: list = []
    with running_app() as app, running_collector(agent), running_pods(contenders, pod_failures, pod_meta):
        records, failures = rounds(tools, app, contenders, n_rounds, plan, args.max_wait)
        meta.update(load_after=machine.loadavg(), minutes=(datetime.now(timezone.utc) - started).total_seconds() / 60)
        cg = None if args.no_callgrind else callgrind_or_failure(args.callgrind_n, failures)
    failures = pod_failures + failures
    if pod_meta and not pod_meta["skipped"]:
        pod_meta["left_after_run"] = pods.leftovers()
        if pod_meta["left_after_run"]:
            log(f"WARNING: pod objects left after the run: {pod_meta['left_after_run']}")
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


@contextmanager
def running_collector(agent: Path | None) -> Iterator[Proc | None]:
    """The OTLP collector for `--tracing` (nothing without it)."""
    proc = collector.start(agent) if agent else None
    try:
        yield proc
    finally:
        if proc:
            stop([proc])


def pod_mode(wanted: bool) -> dict | None:
    """Whether the pod contenders run: None when none was asked for (`bench/run --only` without
    any, `--no-pods`; `bench/cpu` without `--pods`), else what the report says about them (why
    they were skipped, the addresses)."""
    if not wanted:
        return None
    skipped = pods.unavailable()
    if skipped:
        log(f"pod mode NOT measured (meshwork-pod-h2/-h1 skipped): {skipped}")
    return {"skipped": skipped, "network": f"{pods.PREFIX}.0/24", "bridge": pods.BRIDGE,
            "client": {"netns": pods.CLIENT.netns, "ip": pods.CLIENT.ip},
            "server": {"netns": pods.SERVER.netns, "ip": pods.SERVER.ip}}


@contextmanager
def running_pods(contenders: list[Contender], failures: list, pod_meta: dict | None) -> Iterator[None]:
    """The pod network for the whole command when a pod contender is in the run. If it cannot be
    made, the pod contenders are dropped (recorded as a failure and in the report), the rest runs."""
    with ExitStack() as stack:
        if any(c.pod for c in contenders):
            try:
                net = stack.enter_context(pods.network())
            except (RuntimeError, OSError) as e:
                log(f"pod network FAILED, pod contenders dropped: {e}")
                failures.append({"round": -1, "contender": "pod network", "error": str(e)})
                pod_meta["skipped"] = f"the pod network could not be made: {e}"
                contenders[:] = [c for c in contenders if not c.pod]
            else:
                for c in contenders:
                    c.app = net.app if c.pod else c.app
        yield


def cmd_callgrind(args: argparse.Namespace) -> int:
    prepare(args.no_install, load_tools=False)
    agent = collector.ensure(args.no_install) if args.tracing else None
    if args.tag:  # its own directory: an A/B of two builds keeps both builds' files
        callgrind.CALLGRIND = paths.CALLGRIND / args.tag
    with running_app(), running_collector(agent):
        cg = callgrind.run(args.n, traced=args.tracing)
    name = stamp(False, f"{args.tag}-callgrind" if args.tag else "callgrind")
    head = []
    if args.tracing:
        pairs = {hop: [r for r in cg if r["hop"] == hop] for hop in dict.fromkeys(r["hop"] for r in cg)}
        deltas = {hop: callgrind.tracing_delta(off, on) for hop, (off, on) in pairs.items()}
        meta = {"meshwork": meshwork.version(), "collector": collector.version(agent),
                "collector_argv": f"rotel-agent start --otlp-grpc-endpoint 127.0.0.1:{collector.GRPC_PORT} "
                                  f"--otlp-http-endpoint 127.0.0.1:{collector.HTTP_PORT} --exporter blackhole"}
        cg = {"meta": meta, "runs": cg, "tracing_delta": deltas}
        head = ["## Tracing at sampling 0 vs on (100 %), same run (issues 12, 16)", "",
                f"`bench/callgrind --tracing` (N = {args.n} sequential requests on one keep-alive connection, policy and "
                f"metrics on). Tracing on = `{' '.join(collector.sidecar_flags())}` on both sidecars, exporting to "
                f"`{meta['collector']}` on loopback (`{meta['collector_argv']}`; it is not measured). The export task "
                "(batching, protobuf encoding, gRPC over tonic/h2) runs inside each sidecar, so callgrind counts it: "
                "that is the honest cost of tracing, not only the span bookkeeping on the request path. Every run "
                "(on and off, 0 and N requests) idles 5 s after its requests and reads both sidecars' `/metrics` once, "
                "so both sides carry the same scrapes.", "",
                *report.tracing_section(cg["runs"], deltas), ""]
    (paths.RESULTS / f"{name}.json").write_text(paths.relative(json.dumps(cg, indent=1)))
    runs = cg["runs"] if args.tracing else cg
    lines = [f"# meshwork callgrind — {name}", "", *head, *report.callgrind_section(runs), "", *report.profile_section(runs)]
    (paths.RESULTS / f"{name}.md").write_text(paths.relative("\n".join(lines) + "\n"))
    print("\n".join(lines))
    return 0


def cmd_cpu(args: argparse.Namespace) -> int:
    """Pair CPU µs per request at saturation (wrk only), meshwork contenders only, tracing at sampling 0 and
    (with --tracing) on in the same rounds, order alternating."""
    build = prepare(args.no_install, load_tools=False)[1]
    agent = collector.ensure(args.no_install) if args.tracing else None
    h1 = meshwork.h1_flag()
    pod_meta = pod_mode(args.pods)
    contenders = [c for c in all_contenders(with_meshwork_h1=h1 is not None, traced=args.tracing,
                                            pod=bool(pod_meta and not pod_meta["skipped"]))
                  if c.family == "meshwork" and c.hop in args.hops]
    plan = Plan(warmup_s=args.warmup, saturation_s=args.seconds, saturation_conns=args.conns)
    started = datetime.now(timezone.utc)
    meta = {"started": started.isoformat(timespec="seconds"), "argv": sys.argv[2:], "rounds": args.rounds,
            "plan": {"warmup": f"wrk -t1 -c{plan.rate_conns} -d{plan.warmup_s}s",
                     "saturation": f"wrk -t1 -c{plan.saturation_conns} -d{plan.saturation_s}s"},
            "machine": machine.describe("(not used)"), "load_before": machine.loadavg(),
            "meshwork": meshwork.version(), "meshwork_build": build}
    if agent:
        meta["tracing"] = {"flags": collector.sidecar_flags(), "collector": collector.version(agent)}
    if pod_meta:
        meta["pods"] = pod_meta
    records, pod_failures = [], []
    with running_app() as app, running_collector(agent), running_pods(contenders, pod_failures, pod_meta):
        for r in range(args.rounds):
            waited = wait_for_quiet(args.max_wait)
            log(f"round {r + 1}/{args.rounds} (waited {waited:.0f}s for other builds; load {machine.loadavg()})")
            order = contenders if r % 2 == 0 else contenders[::-1]
            for pos, c in enumerate(order):
                busy_before = compiles_running()
                rec = run_cpu(c, app, plan)
                rec.update(round=r, position=pos, loadavg=machine.loadavg(),
                           builds_seen=sorted(set(busy_before + compiles_running())))
                records.append(rec)
                sat = rec["saturation"]
                log(f"  {c.name:20} cpu {sat['cpu_s'] * 1e6 / max(sat['requests'], 1):6.1f} µs/req | "
                    f"{sat['requests']} requests | {sat['rps']:8.0f} rps | errors {sat['errors']} | spans {rec.get('spans')}")
    meta.update(load_after=machine.loadavg(), minutes=(datetime.now(timezone.utc) - started).total_seconds() / 60)
    if pod_failures:
        meta["failures"] = pod_failures
    raw = {"meta": meta, "records": records}
    name = stamp(False, f"{args.tag}-cpu" if args.tag else "cpu")
    (paths.RESULTS / f"{name}.json").write_text(paths.relative(json.dumps(raw, indent=1)))
    lines = [f"# meshwork CPU per request — {name}", "", *sections.cpu_document(raw)]
    (paths.RESULTS / f"{name}.md").write_text(paths.relative("\n".join(lines) + "\n"))
    print("\n".join(lines))
    return 0


def cmd_tapcost(args: argparse.Namespace) -> int:
    """bench/tapcost: callgrind instructions per request with no tap, a reading tap and a stalled tap."""
    import tapcost
    prepare(True, load_tools=False)
    callgrind.CALLGRIND = paths.CALLGRIND / "tapcost"
    with running_app():
        runs = tapcost.run(args.n, args.hop)
    name = stamp(False, f"{args.tag}-tapcost" if args.tag else "tapcost")
    none = next(r["per_request"] for r in runs if r["mode"] == "none")
    lines = [f"# meshwork tap cost — {name}", "", tapcost.__doc__.strip(), "",
             f"`bench/tapcost -n {args.n} --hop {args.hop}` (release binary `MESHWORK_BIN`), one keep-alive client, sequential requests.", "",
             "| tap on each sidecar | instructions per request (pair) | ÷ no tap |", "|---|---:|---:|"]
    for r in runs:
        lines.append(f"| {r['mode']} | {r['per_request']:,.0f} | {r['per_request'] / none:.3f} |")
    (paths.RESULTS / f"{name}.json").write_text(json.dumps(runs, indent=2) + "\n")
    (paths.RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    log(f"wrote {paths.RESULTS / name}.md")
    return 0


def cmd_soak(args: argparse.Namespace) -> int:
    """bench/soak (issue 16): ≥ N requests per hop through a fresh meshwork pair, RSS and fds sampled every second."""
    import soak
    build = prepare(args.no_install, load_tools=False)[1]
    with running_app():
        raw = soak.run(args.hops, soak.Settings(args.requests, args.connections, args.threads, args.baseline),
                       build, sys.argv[2:])
    soak.write(stamp(False, f"{args.tag}-soak" if args.tag else "soak"), raw)
    return 0 if soak.passed(raw) else 1


def cmd_fanout(args: argparse.Namespace) -> int:
    """bench/fanout (issue 15): a change's fan-out to N sidecars long-polling one control plane."""
    import fanout
    paths.ensure_dirs()
    if not args.no_install and "MESHWORK_BIN" not in os.environ:
        install.build_meshwork()
    raw = fanout.run(args.sidecars, args.rounds, args.idle, sys.argv[2:], args.replicas)
    md = fanout.write(stamp(False, f"{args.tag}-fanout" if args.tag else "fanout"), raw)
    print(md.read_text())
    return 0 if all("failed" not in r and r.get("missed", 1) == 0 for r in raw["results"]) else 1


def cmd_render(args: argparse.Namespace) -> int:
    """Re-makes the markdown report from a raw JSON file (e.g. after changing the report code)."""
    raw_path = Path(args.raw).resolve()
    raw = json.loads(raw_path.read_text())
    if raw.get("kind") == "soak":
        import soak_report
        raw_path.with_suffix(".md").write_text(paths.relative("\n".join(soak_report.document(raw)) + "\n"))
        return 0
    if raw.get("kind") == "fanout":
        import fanout
        raw_path.with_suffix(".md").write_text(paths.relative(fanout.markdown(raw)))
        return 0
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
    run.add_argument("--tracing", action="store_true",
                     help="add meshwork-<hop>-traced beside each meshwork contender (100 %% sampling, OTLP/gRPC to rotel)")
    run.add_argument("--no-pods", action="store_true",
                     help="leave out meshwork-pod-h2/-h1 (pod mode: two network namespaces, needs root, ip and nft)")
    cg = sub.add_parser("callgrind", help="instructions per request under callgrind (bench/callgrind)")
    cg.add_argument("-n", type=int, default=2000)
    cg.add_argument("--no-install", action="store_true")
    cg.add_argument("--tag", help="suffix for the report name")
    cg.add_argument("--tracing", action="store_true",
                    help="per hop, tracing at sampling 0 then on (100 %% sampling, OTLP/gRPC to a rotel collector on loopback)")
    cpu = sub.add_parser("cpu", help="meshwork pair CPU µs/request at saturation, wrk only (bench/cpu)")
    cpu.add_argument("--tracing", action="store_true",
                     help="also meshwork-<hop>-traced (100 %% sampling, OTLP/gRPC to a rotel collector), same rounds")
    cpu.add_argument("--pods", action="store_true",
                     help="also meshwork-pod-<hop> (pod mode, issue 10), same rounds: pod ÷ proxy pair CPU µs/req")
    cpu.add_argument("--hops", nargs="+", default=["h2"], choices=["h2", "h1"])
    cpu.add_argument("--rounds", type=int, default=3)
    cpu.add_argument("--seconds", type=int, default=5, help="saturation run per contender and round")
    cpu.add_argument("--conns", type=int, default=32,
                     help="wrk connections (32 saturates; fewer = lower rate, e.g. one the span exporter keeps up with)")
    cpu.add_argument("--warmup", type=float, default=2)
    cpu.add_argument("--max-wait", type=float, default=120, help="seconds to wait per round for other builds")
    cpu.add_argument("--no-install", action="store_true")
    cpu.add_argument("--tag", help="suffix for the report name")
    tap = sub.add_parser("tapcost", help="instructions per request with no tap, a reading tap, a stalled tap (bench/tapcost)")
    tap.add_argument("-n", type=int, default=2000)
    tap.add_argument("--hop", default="h2", choices=["h2", "h1"])
    tap.add_argument("--tag", help="suffix for the report name")
    tap.add_argument("--no-install", action="store_true", help="accepted for symmetry: nothing is installed")
    sk = sub.add_parser("soak", help="≥ 1M requests per hop at saturation, RSS and fds sampled every second (bench/soak)")
    sk.add_argument("--requests", type=int, default=1_000_000, help="requests per hop, as counted by sidecar B")
    sk.add_argument("--connections", type=int, default=100)
    sk.add_argument("--threads", type=int, default=1, help="wrk threads")
    sk.add_argument("--baseline", type=int, default=100_000, help="RSS growth is judged from the first sample past this")
    sk.add_argument("--hops", nargs="+", default=["h2", "h1"], choices=["h2", "h1"])
    sk.add_argument("--no-install", action="store_true")
    sk.add_argument("--tag", help="suffix for the report name")
    fo = sub.add_parser("fanout", help="a policy change's fan-out to N simulated sidecars (bench/fanout)")
    fo.add_argument("--sidecars", type=int, nargs="+", default=[100, 1000, 3000, 10000])
    fo.add_argument("--rounds", type=int, default=5, help="measured changes per N")
    fo.add_argument("--idle", type=int, default=30, help="seconds of attached idle measured per N")
    fo.add_argument("--replicas", type=int, default=0,
                    help="K control replicas on a K-member loopback etcd (0: one control on redb)")
    fo.add_argument("--no-install", action="store_true")
    fo.add_argument("--tag", help="suffix for the report name")
    render = sub.add_parser("render", help="re-make a report's markdown from its raw JSON")
    render.add_argument("raw", help="bench/results/<name>.json")
    args = p.parse_args()
    commands = {"run": cmd_run, "callgrind": cmd_callgrind, "cpu": cmd_cpu, "tapcost": cmd_tapcost,
                "soak": cmd_soak, "fanout": cmd_fanout, "render": cmd_render}
    return commands[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
