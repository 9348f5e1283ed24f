"""The markdown report: medians, same-run ratios, goals (PASS/MISS), the first-hop view,
the callgrind signal, the machine and the caveats."""

from stats import per_round_ratios, ratio

LATENCY_COLUMNS = [  # (metric key, header, digits)
    ("added_p50_1c_ms", "added p50, 1 conn (ms)", 3),
    ("p50_1c_ms", "p50, 1 conn (ms)", 3),
    ("added_p50_1000_ms", "added p50 @1000 rps (ms)", 3),
    ("added_p90_1000_ms", "added p90 @1000 rps (ms)", 3),
    ("p99_1000_ms", "p99 @1000 rps (ms) ⓘ", 2),
    ("errors", "errors", 0),
]
COST_COLUMNS = [
    ("cpu_us_req", "pair CPU µs/req (saturation)", 1),
    ("cpu_user_us_req", "of which user", 1),
    ("cpu_sys_us_req", "of which kernel", 1),
    ("cpu_us_req_1000", "pair CPU µs/req @1000 rps", 1),
    ("vcpu_1000", "pair vCPU @1000 rps", 3),
    ("idle_rss", "idle RSS A / B (MiB)", 1),
    ("rss_1000", "RSS @1000 rps A / B (MiB)", 1),
    ("peak_rss", "peak RSS A / B (MiB)", 1),
    ("max_rps", "max rps, 32 conns ⓘ", 0),
]
MEMORY_COLUMNS = [
    ("idle_rss", "idle RSS A / B", 1),
    ("idle_anon", "of which anonymous A / B", 1),
    ("idle_pss", "idle PSS A / B", 1),
    ("anon_1000", "anonymous @1000 rps A / B", 1),
    ("peak_rss", "peak RSS A / B", 1),
]
MESHWORK = ("meshwork-h2", "meshwork-h1", "meshwork-pod-h2", "meshwork-pod-h1")


def num(x, digits: int = 2) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def times(x) -> str:
    return "—" if x is None else f"{x:.2f}×"


def _cell(med: dict, key: str, digits: int) -> str:
    if key in ("idle_rss", "rss_1000", "peak_rss", "idle_anon", "idle_pss", "anon_1000"):
        a, b = med.get(f"{key}_A"), med.get(f"{key}_B")
        return "—" if a is None else f"{a:.1f} / {b:.1f}"
    return num(med.get(key), digits)


def medians_table(med: dict, order: list[str], columns: list[tuple[str, str, int]]) -> list[str]:
    lines = ["| contender | " + " | ".join(h for _, h, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for name in order:
        if name in med:
            lines.append(f"| {name} | " + " | ".join(_cell(med[name], k, d) for k, _, d in columns) + " |")
    return lines


def ratios_table(med: dict) -> list[str]:
    rows = [("pair CPU µs/req (saturation)", "cpu_us_req"), ("pair CPU µs/req @1000 rps", "cpu_us_req_1000"),
            ("  of which user space", "cpu_user_us_req"),
            ("  of which kernel", "cpu_sys_us_req"), ("added p50, 1 conn", "added_p50_1c_ms"), ("added p50 @1000 rps", "added_p50_1000_ms"),
            ("added p90 @1000 rps", "added_p90_1000_ms"), ("idle RSS (larger proxy)", "idle_rss_max"),
            ("RSS @1000 rps (larger proxy)", "rss_1000_max"), ("peak RSS (larger proxy)", "peak_rss_max"),
            ("idle anonymous memory (larger proxy)", "idle_anon_max"),
            ("max rps ⓘ", "max_rps")]
    lines = []
    for m in (x for x in MESHWORK if x in med):
        hop = m.rsplit("-", 1)[1]
        refs = [f"haproxy-{hop}", f"envoy-{hop}", "nginx-h1"]
        lines += [f"**{m}** ÷ anchor (same run; < 1 means meshwork needs less):", "",
                  "| metric | " + " | ".join(f"÷ {r}" for r in refs) + " |", "|---|" + "---:|" * len(refs)]
        lines += [f"| {label} | " + " | ".join(times(ratio(med, m, r, key)) for r in refs) + " |"
                  for label, key in rows]
        lines.append("")
    return lines


def goals(med: dict, rounds: dict) -> list[tuple[str, str, str, str]]:
    """(goal, measured, per-round ratios, verdict) rows: issue 6's goals, with issue 16's tighter
    limit on RSS at 1000 rps (16 MiB, was 20)."""
    out = []

    def relative(goal: str, m: str, ref: str, key: str, limit: float) -> None:
        if m not in med or ref not in med:
            out.append((goal, "not measured", "", "NOT MEASURED"))
            return
        r = ratio(med, m, ref, key)
        verdict = "n/a" if r is None else ("PASS" if r <= limit else "MISS")
        spread = ", ".join(f"{x:.2f}" for x in per_round_ratios(rounds, m, ref, key))
        out.append((goal, f"{times(r)} ({num(med[m].get(key), 3)} vs {num(med[ref].get(key), 3)})", spread, verdict))

    def absolute(goal: str, m: str, key: str, limit: float) -> None:
        if m not in med:
            out.append((goal, "not measured", "", "NOT MEASURED"))
            return
        v = med[m][key]
        spread = ", ".join(f"{x[key]:.1f}" for x in rounds.get(m, []))
        out.append((goal, f"{v:.1f} MiB", spread, "PASS" if v <= limit else "MISS"))

    for hop in ("h2", "h1"):
        m = f"meshwork-{hop}"
        relative(f"{m}: pair CPU µs/req ≤ 1.0× haproxy-{hop}", m, f"haproxy-{hop}", "cpu_us_req", 1.0)
        relative(f"{m}: pair CPU µs/req ≤ 0.4× envoy-{hop}", m, f"envoy-{hop}", "cpu_us_req", 0.4)
        relative(f"{m}: added unloaded p50 ≤ 1.0× nginx-h1", m, "nginx-h1", "added_p50_1c_ms", 1.0)
        absolute(f"{m}: RSS ≤ 12 MiB per proxy at idle", m, "idle_rss_max", 12.0)
        absolute(f"{m}: RSS ≤ 16 MiB per proxy at 1000 rps", m, "rss_1000_max", 16.0)
    return out


def goals_table(med: dict, rounds: dict) -> list[str]:
    lines = ["| goal (issues 6 and 16) | measured (medians) | each round | verdict |", "|---|---|---|---|"]
    return lines + [f"| {g} | {v} | {r} | **{x}** |" for g, v, r, x in goals(med, rounds)]


def hop_section(med: dict) -> list[str]:
    """Issue 2 item 8: one mesh hop vs direct at a fixed rate, as ratios from the same run."""
    d, m = med.get("direct"), med.get("meshwork-h2")
    if d is None or m is None:
        return ["(meshwork-h2 or direct missing from this run)"]
    lines = ["| at 1000 rps, 4 conns | direct | meshwork-h2 | added | meshwork ÷ direct |", "|---|---:|---:|---:|---:|"]
    for p in ("p50", "p90"):
        dv, mv = d[f"{p}_1000_ms"], m[f"{p}_1000_ms"]
        lines.append(f"| {p} (ms) | {dv:.3f} | {mv:.3f} | +{m[f'added_{p}_1000_ms']:.3f} | {times(mv / dv if dv else None)} |")
    lines += ["", "| proxy pair CPU µs/req | meshwork-h2 | ÷ nginx-h1 | ÷ haproxy-h2 | ÷ envoy-h2 |", "|---|---:|---:|---:|---:|"]
    for label, key in (("at saturation", "cpu_us_req"), ("at 1000 rps", "cpu_us_req_1000")):
        lines.append(f"| {label} | {num(m.get(key), 1)} | " + " | ".join(
            times(ratio(med, "meshwork-h2", r, key)) for r in ("nginx-h1", "haproxy-h2", "envoy-h2")) + " |")
    return lines


def _as_list(runs: list[dict] | dict | None) -> list[dict]:
    """Raw files before h1 support held one callgrind dict instead of one per hop."""
    return [runs] if isinstance(runs, dict) else list(runs or [])


def callgrind_section(runs: list[dict] | None) -> list[str]:
    runs = _as_list(runs)
    if not runs:
        return ["Not run this time (`bench/callgrind` runs it on its own)."]
    return [line for cg in runs for line in _callgrind_hop(cg) + [""]]


def _callgrind_hop(cg: dict) -> list[str]:
    z, l = cg["zero"], cg["loaded"]
    route = f", route `{cg['route']}` (timeouts and retries)" if cg.get("route") else ", no route configured"
    if "tracing" in cg:
        route += (", **tracing on** (100 % sampling, OTLP/gRPC to the collector)" if cg["tracing"]["on"]
                  else ", **tracing off**" if not cg.get("tracing_flags") else ", **tracing at sampling 0**")
    elif cg.get("tracing_flags"):
        route += ", tracing configured at sampling 0"
    lines = [f"**meshwork-{cg['hop']}** pair (policy on{route}), one keep-alive client connection, sequential requests.", "",
             "| run | A (client sidecar) | B (server sidecar) | pair |", "|---|---:|---:|---:|"]
    for label, r in ((f"0 requests (start-up + shut-down)", z), (f"{l['requests']} requests", l)):
        i = r["instructions"]
        lines.append(f"| {label} | {i['A']:,} | {i['B']:,} | {i['A'] + i['B']:,} |")
    lines += ["", f"- **instructions per request (pair total ÷ N): {cg['per_request']:,.0f}**",
              f"- marginal per request ((N-run − 0-run) ÷ N; includes the one mTLS handshake): {cg['marginal_per_request']:,.0f}",
              f"- attempts before the route was there (not counted in N): {l['failed_before_route']}"]
    return lines


def profile_section(runs: list[dict] | None) -> list[str]:
    runs = _as_list(runs)
    if not runs:
        return []
    return [line for cg in runs for line in _profile_hop(cg)]


def _profile_hop(cg: dict) -> list[str]:
    n, pr = cg["requests"], cg["profile"]
    traced = "" if "tracing" not in cg else (", tracing on" if cg["tracing"]["on"] else ", tracing at sampling 0")
    lines = [f"## Profile of meshwork-{cg['hop']}{traced}: where the instructions per request go (callgrind)", "",
             f"Marginal cost = (N-run − 0-run) ÷ N per function, exclusive, grouped by component "
             f"(N = {n}; the one mTLS handshake between the sidecars is spread over N).", "",
             "| component | A (client sidecar) | B (server sidecar) | pair |", "|---|---:|---:|---:|"]
    if "categories" not in pr["A"]:
        return lines[:1] + ["(raw file from an older harness: no breakdown)", ""]
    cats = {side: dict(pr[side]["categories"]) for side in "AB"}
    names = sorted(set(cats["A"]) | set(cats["B"]), key=lambda c: -(cats["A"].get(c, 0) + cats["B"].get(c, 0)))
    for c in names:
        a, b = cats["A"].get(c, 0.0), cats["B"].get(c, 0.0)
        lines.append(f"| {c} | {a:,.0f} | {b:,.0f} | {a + b:,.0f} |")
    ta, tb = sum(cats["A"].values()), sum(cats["B"].values())
    lines += [f"| **total** | **{ta:,.0f}** | **{tb:,.0f}** | **{ta + tb:,.0f}** |", ""]
    for side, label in (("A", "A = client sidecar (outbound)"), ("B", "B = server sidecar (inbound)")):
        lines += [f"**{label}: top functions, marginal exclusive instructions per request**", "", "```"]
        lines += [f"{cost:>9,.0f}  {fn}" for fn, cost in pr[side]["top_marginal"]]
        lines += ["```", "", f"**{label}: top inclusive (N-run, runtime scaffolding frames left out)**", "", "```",
                  *pr[side]["inclusive"], "```", ""]
    return lines


def _pair(run: dict) -> tuple[int, int]:
    i = run["instructions"]
    return i["A"], i["B"]


def tracing_section(runs: list[dict], deltas: dict[str, dict]) -> list[str]:
    """`bench/callgrind --tracing`: per hop, tracing at sampling 0 and on from the same run, their ratio,
    the spans the sidecars said they exported, and what tracing adds per component/function."""
    by_hop: dict[str, dict] = {}
    for cg in runs:
        by_hop.setdefault(cg["hop"], {})["on" if cg["tracing"]["on"] else "off"] = cg
    lines = ["| hop | sampling 0 | tracing on (100 %) | added by sampling | on ÷ off |", "|---|---:|---:|---:|---:|"]
    for hop, pair in by_hop.items():
        off, on = pair["off"], pair["on"]
        for label, key in (("instructions/request (pair total ÷ N)", "per_request"),
                           ("marginal/request ((N-run − 0-run) ÷ N)", "marginal_per_request")):
            lines.append(f"| {hop}: {label} | {off[key]:,.0f} | {on[key]:,.0f} | +{on[key] - off[key]:,.0f} | "
                         f"**{on[key] / off[key]:.3f}×** |")
    lines += ["", "Spans the sidecars counted in their admin `/metrics` after the N requests of the traced run "
              "(`meshwork_trace_spans_exported_total` = batches the collector accepted; dropped by reason):", "",
              "| hop | requests N | A (client span per request) exported | B (server span per request) exported | dropped A | dropped B |",
              "|---|---:|---:|---:|---|---|"]
    for hop, pair in by_hop.items():
        sp = pair["on"]["loaded"].get("spans", {})
        a, b = sp.get("A", {}), sp.get("B", {})
        fmt = lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.get("dropped", {}).items())) or "—"  # noqa: E731
        lines.append(f"| {hop} | {pair['on']['requests']:,} | {a.get('exported', '—'):,} | {b.get('exported', '—'):,} | "
                     f"{fmt(a)} | {fmt(b)} |")
    for hop, delta in deltas.items():
        cats = {side: dict(delta[side]["categories"]) for side in "AB"}
        names = sorted(set(cats["A"]) | set(cats["B"]), key=lambda c: -(cats["A"].get(c, 0) + cats["B"].get(c, 0)))
        lines += ["", f"**{hop}: what tracing adds per request, by component** (marginal on − marginal off, exclusive; "
                  "components that moved by less than 20 instructions left out)", "",
                  "| component | A (client sidecar) | B (server sidecar) | pair |", "|---|---:|---:|---:|"]
        for c in names:
            a, b = cats["A"].get(c, 0.0), cats["B"].get(c, 0.0)
            if abs(a + b) >= 20:
                lines.append(f"| {c} | {a:+,.0f} | {b:+,.0f} | {a + b:+,.0f} |")
        ta, tb = sum(cats["A"].values()), sum(cats["B"].values())
        lines.append(f"| **total** | **{ta:+,.0f}** | **{tb:+,.0f}** | **{ta + tb:+,.0f}** |")
        for side, label in (("A", "A = client sidecar"), ("B", "B = server sidecar")):
            lines += ["", f"{hop}, {label}: functions that grew most with tracing on (instructions per request)", "", "```"]
            lines += [f"{cost:>+9,.0f}  {fn}" for fn, cost in delta[side]["top_added"]]
            lines.append("```")
    return lines
