"""The report document: header, machine, goals, tables, caveats, per-round detail."""

from statistics import median

import report
import stats
from report import num


def header(meta: dict) -> list[str]:
    m, plan = meta["machine"], meta["plan"]
    return [
        f"# meshwork data-path benchmark — {meta['started'][:10]} on `{m['host']}`", "",
        f"`{' '.join(['bench/run', *meta['argv']])}` — {meta['rounds']} interleaved round(s), order rotated each round, "
        f"{meta['minutes']:.0f} min. Medians over rounds; every ratio compares numbers **from this run**.", "",
        "Chain: `client → A (plain HTTP in) → mTLS TLS 1.3, P-256 → B → app` (nginx `return 200 \"ok\"` on 127.0.0.1:18080), "
        "one worker thread per proxy, access logs off, keep-alive pools on both hops, client certificates required.", "",
        f"Phases per contender and round: start the pair; idle RSS; warm-up (wrk, {plan['rate_conns']} conns, {plan['warmup_s']} s); "
        f"unloaded latency (oha, 1 conn, {plan['unloaded_n']} requests); fixed rate (oha `-q {plan['rate']} --latency-correction "
        f"-c {plan['rate_conns']} -z {plan['rate_s']}s`, RSS sampled every 0.25 s); saturation (wrk `-t1 -c{plan['saturation_conns']} "
        f"-d{plan['saturation_s']}s`, pair CPU from /proc/PID/stat ÷ requests); peak RSS (VmHWM); stop.", "",
    ]


def machine_section(meta: dict) -> list[str]:
    m = meta["machine"]
    lines = ["## Machine", "", f"- {m['nproc']} vCPU, `{m['cpu']}`, kernel {m['kernel']}, {m['memory']}",
             f"- load average before / after: {meta['load_before']} / {meta['load_after']}",
             "- **shared machine**: other agents were building Rust on the same 2 cores; per-round build activity is in the detail table. "
             "Trust ratios and CPU µs/req; absolute latency and max rps drift between runs."]
    lines += [f"- {k}: `{v}`" for k, v in m["versions"].items()]
    lines.append(f"- meshwork binary: {meta.get('meshwork_build', '?')}")
    return lines


def caveats(raw: dict, med: dict) -> list[str]:
    meta, lines = raw["meta"], ["## Caveats and what was not measured", ""]
    if "meshwork-h1" not in med:
        lines.append("- **meshwork h1 between proxies: not measured.** The sidecars negotiate h2 by ALPN and the CLI has no "
                     "switch to force HTTP/1.1 on the mTLS hop yet; the h1 goals are reported as NOT MEASURED.")
    enforced = {r.get("policy_enforced") for r in raw["records"] if r["family"] == "meshwork"}
    if enforced == {True}:
        lines.append("- meshwork ran **with policy on**: `bench/mesh/bench.yaml` has an ALLOW (client → server, GET) and a "
                     "DENY policy, and every meshwork round checked that a POST got 403 before measuring. "
                     "The anchors authorise nothing beyond the client certificate.")
    else:
        lines.append(f"- **meshwork policy was not shown to be enforced** (POST → 403 check: {sorted(map(str, enforced))}).")
    recorded = {r.get("metrics_recorded") for r in raw["records"] if r["family"] == "meshwork"}
    if recorded == {True}:
        lines.append("- meshwork ran **with metrics on** (request counters and latency histograms by route template, "
                     "always on; docs/telemetry.md): after every meshwork round sidecar B's `/metrics` showed the "
                     "benchmark's `GET /` counted under `route=\"/\"`.")
    else:
        lines.append(f"- **meshwork metrics were not shown to be recorded** (check per round: {sorted(map(str, recorded))}).")
    forms = sorted({r["client_form"] for r in raw["records"] if r["family"] == "meshwork"})
    if forms:
        lines.append(f"- the client addressed meshwork's outbound listener with: {', '.join(forms)} "
                     "(the anchors get origin-form with the same `Host: server`).")
    lines += [
        "- SPIFFE URI SAN checks: Envoy and meshwork check the peer's SPIFFE ID both ways; nginx and HAProxy verify the chain "
        "and (client side) the DNS SAN `inbound.bench.local` — they have no URI SAN matcher.",
        "- meshwork runs a control plane (`meshwork control`) beside the pair; it is not counted (it is idle on the data path).",
        "- The load generator shares the 2 cores with the proxies, so max rps is bounded by the client as much as by the proxies (ⓘ = informational).",
        "- Idle RSS is read after one readiness request through the chain (so pools hold one connection).",
    ]
    if any(n.startswith("meshwork-pod-") for n in med):
        lines.append("- Pod mode does more kernel work per request than proxy mode: conntrack and NAT on every packet inside "
                     "the pods (the ruleset's nat chains), and the bridge and a veth pair between the host and pod B. /proc CPU "
                     "charges packet processing mostly to the task that sends (loopback and veth deliver in the sender's "
                     "context), so the sidecars' sends to each other and to the apps count; the load generator's sends into "
                     "pod A count to it (not measured), as in proxy mode.")
        left = raw["meta"].get("pods", {}).get("left_after_run")
        if left is not None:
            lines.append("- After the run the pod network was removed: " + (
                "nothing left (namespaces, links, host table, /etc/netns)." if not left else f"**left: {left}**"))
    errors = {n: m["errors"] for n, m in med.items() if m["errors"]}
    if errors:
        lines.append(f"- **errors seen** (sum over rounds): {errors} — those contenders' numbers are suspect.")
    for f in raw["failures"]:
        when = f"round {f['round'] + 1}" if f["round"] >= 0 else "after the rounds"
        lines.append(f"- **{when}: {f['contender']} failed**: `{f['error'][:300]}`")
    return lines


def per_round_table(per: dict, raw: dict, order: list[str]) -> list[str]:
    lines = ["## Per round (to judge the noise)", "",
             "pair CPU µs/req at saturation and added p50 (1 conn, ms) per round; builds seen = other compile jobs running.", "",
             "| contender | " + " | ".join(f"round {i + 1}" for i in range(raw["meta"]["rounds"])) + " |",
             "|---|" + "---:|" * raw["meta"]["rounds"]]
    for name in order:
        cells = [f"{num(m.get('cpu_us_req'), 1)} µs, +{num(m.get('added_p50_1c_ms'), 3)}" for m in per.get(name, [])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    seen = {}
    for r in raw["records"]:
        seen.setdefault(r["round"], set()).update(r.get("builds_seen", []))
    lines += ["", "builds seen per round: " + "; ".join(f"round {k + 1}: {', '.join(sorted(v)) or 'none'}" for k, v in sorted(seen.items()))]
    return lines


def tracing_section(raw: dict, med: dict, per: dict) -> list[str]:
    """`bench/run --tracing`: meshwork-<hop> vs meshwork-<hop>-traced, same rounds."""
    hops = [h for h in ("h2", "h1") if f"meshwork-{h}" in med and f"meshwork-{h}-traced" in med]
    if not hops:
        return []
    t = raw["meta"].get("tracing", {})
    lines = ["## Tracing: added CPU per request (issue 12)", "",
             f"meshwork-<hop>-traced = the same pair with `{' '.join(t.get('flags', []))}`, exporting to "
             f"`{t.get('collector', 'rotel')}` on loopback (blackhole exporter; the collector's CPU is not counted, "
             "the sidecars' export task is). Medians over rounds; each round ran both.", "",
             "| metric | sampling 0 | tracing on | added | on ÷ off | on ÷ off per round |", "|---|---:|---:|---:|---:|---|"]
    rows = [("pair CPU µs/req (saturation)", "cpu_us_req", 2), ("  of which user", "cpu_user_us_req", 2),
            ("  of which kernel", "cpu_sys_us_req", 2), ("pair CPU µs/req @1000 rps", "cpu_us_req_1000", 2),
            ("max rps, 32 conns ⓘ", "max_rps", 0), ("p50, 1 conn (ms)", "p50_1c_ms", 3),
            ("p50 @1000 rps (ms)", "p50_1000_ms", 3), ("peak RSS, larger proxy (MiB)", "peak_rss_max", 1)]
    for hop in hops:
        off, on = med[f"meshwork-{hop}"], med[f"meshwork-{hop}-traced"]
        for label, key, d in rows:
            a, b = off.get(key), on.get(key)
            if a is None or b is None:
                continue
            spread = ", ".join(f"{x:.2f}" for x in stats.per_round_ratios(per, f"meshwork-{hop}-traced", f"meshwork-{hop}", key))
            lines.append(f"| {hop}: {label} | {num(a, d)} | {num(b, d)} | {b - a:+,.{d}f} | {report.times(b / a if a else None)} | {spread} |")
    lines += ["", "Requests behind the CPU figures, and the spans each traced pair reported exporting "
              "(`meshwork_trace_spans_exported_total` / dropped, read from both sidecars' `/metrics` after saturation; "
              "the counters cover the whole round: readiness, warm-up, unloaded, fixed rate and saturation):", "",
              "| round | contender | saturation requests | @1000 rps requests | spans exported A / B | dropped A / B |",
              "|---:|---|---:|---:|---:|---|"]
    for r in sorted(raw["records"], key=lambda r: (r["round"], r["position"])):
        if r["family"] != "meshwork":
            continue
        sp = r.get("spans")
        exported = "—" if sp is None else f"{sp['A'].get('exported', 0):,} / {sp['B'].get('exported', 0):,}"
        dropped = "—" if sp is None else " / ".join(
            str(sum(sp[side].get("dropped", {}).values())) for side in "AB")
        lines.append(f"| {r['round'] + 1} | {r['contender']} | {r['saturation']['requests']:,} | "
                     f"{r['fixed']['requests']:,} | {exported} | {dropped} |")
    return lines + [""]


POD_LIMIT = 1.1  # issue 10: pod-mode pair CPU µs/request ≤ 1.1× proxy mode


def pod_verdicts(med: dict, per: dict) -> list[tuple[str, float | None, str, str]]:
    """(hop, pod ÷ proxy pair CPU µs/req at saturation, per-round ratios, verdict) for each hop
    with both meshwork-<hop> and meshwork-pod-<hop> in the run."""
    out = []
    for hop in ("h2", "h1"):
        pod, proxy = f"meshwork-pod-{hop}", f"meshwork-{hop}"
        if pod not in med or proxy not in med:
            continue
        r = report.ratio(med, pod, proxy, "cpu_us_req")
        spread = ", ".join(f"{x:.3f}" for x in stats.per_round_ratios(per, pod, proxy, "cpu_us_req"))
        out.append((hop, r, spread, "n/a" if r is None else "PASS" if r <= POD_LIMIT else "MISS"))
    return out


def pod_section(raw: dict, med: dict, per: dict) -> list[str]:
    """Issue 10: meshwork-pod-<hop> (pod mode) beside meshwork-<hop> (proxy mode), same rounds.
    Nothing for a run without pod contenders and without a recorded reason (older raw files)."""
    p = raw["meta"].get("pods")
    hops = [h for h in ("h2", "h1") if f"meshwork-pod-{h}" in med]
    if not p and not hops:
        return []
    lines = ["## Pod mode vs proxy mode (issue 10)", ""]
    if p and p.get("skipped"):
        return lines + [f"**Pod mode not measured**: {p['skipped']}", ""]
    net = f"`{p['network']}` on bridge `{p['bridge']}`" if p else "a bench-only bridge"
    a = f"--pod /run/netns/{p['client']['netns']} --pod-ip {p['client']['ip']}" if p else "--pod … --pod-ip …"
    b = f"--pod /run/netns/{p['server']['netns']} --pod-ip {p['server']['ip']}" if p else "--pod … --pod-ip …"
    lines += [f"meshwork-pod-<hop> = the same control plane and single-threaded pair, policy on, in pod mode: two network "
              f"namespaces on {net} (bench/harness/pods.py: veth pairs, the pod ruleset from `meshwork pod-ruleset`, "
              f"`nameserver 127.0.0.1`). A runs with `{a}`, B with `{b} --app 127.0.0.1:18080` (a second nginx, the "
              "same config, inside pod B). wrk and oha run **inside pod A** against `http://server/`: the name is "
              "resolved by A's pod resolver and the connection captured by nftables to A's capture listener, as an "
              "app's would be. Measured: the two sidecars (nginx and the load generator are not, as in proxy mode).", "",
              "| goal (issue 10) | proxy mode | pod mode | pod ÷ proxy | each round | verdict |",
              "|---|---:|---:|---:|---|---|"]
    for hop, r, spread, verdict in pod_verdicts(med, per):
        proxy, pod = med[f"meshwork-{hop}"]["cpu_us_req"], med[f"meshwork-pod-{hop}"]["cpu_us_req"]
        lines.append(f"| {hop}: pair CPU µs/req (saturation), pod ÷ proxy ≤ {POD_LIMIT}× | {proxy:.1f} | {pod:.1f} | "
                     f"**{'—' if r is None else f'{r:.3f}×'}** | {spread} | **{verdict}** |")
    lines += ["", "The same run, other figures (medians; ⓘ informational):", "",
              "| metric | proxy mode | pod mode | pod ÷ proxy |", "|---|---:|---:|---:|"]
    rows = [("of which user (µs/req)", "cpu_user_us_req", 1), ("of which kernel (µs/req)", "cpu_sys_us_req", 1),
            ("pair CPU µs/req @1000 rps", "cpu_us_req_1000", 1), ("added p50, 1 conn (ms)", "added_p50_1c_ms", 3),
            ("added p50 @1000 rps (ms)", "added_p50_1000_ms", 3), ("max rps, 32 conns ⓘ", "max_rps", 0),
            ("idle RSS, larger proxy (MiB)", "idle_rss_max", 1), ("peak RSS, larger proxy (MiB)", "peak_rss_max", 1)]
    for hop in hops:
        if f"meshwork-{hop}" not in med:
            lines.append(f"| {hop}: meshwork-{hop} not in this run | | | |")
            continue
        for label, key, d in rows:
            x, y = med[f"meshwork-{hop}"].get(key), med[f"meshwork-pod-{hop}"].get(key)
            lines.append(f"| {hop}: {label} | {num(x, d)} | {num(y, d)} | {report.times(report.ratio(med, f'meshwork-pod-{hop}', f'meshwork-{hop}', key))} |")
    return lines + [""]


def document(raw: dict, med: dict, per: dict, order: list[str]) -> list[str]:
    return [
        *header(raw["meta"]),
        *pod_section(raw, med, per),
        *tracing_section(raw, med, per),
        "## Goals (issues 6 and 16)", "", *report.goals_table(med, per), "",
        "Verdicts use the medians; \"each round\" shows the same ratio (or MiB) round by round, to judge how firm a verdict is.", "",
        "## Medians per contender", "", "### Latency", "",
        *report.medians_table(med, order, report.LATENCY_COLUMNS), "",
        "\"added\" = contender − direct, same round. ⓘ informational only (noisy here).", "",
        "### Cost", "", *report.medians_table(med, order, report.COST_COLUMNS), "",
        "CPU = utime + stime of both proxies (/proc/PID/stat) ÷ completed requests. RSS per proxy: A = client side, B = server side.", "",
        "### Memory (MiB per proxy)", "", *report.medians_table(med, order, report.MEMORY_COLUMNS), "",
        "RSS counts the pages of the executable that are mapped, not only what the proxy allocated: \"anonymous\" "
        "(RssAnon) is the heap and stacks; PSS splits pages shared by A and B (same binary) between them.", "",
        "## Ratios to HAProxy, Envoy and nginx (same run)", "", *report.ratios_table(med),
        "## First hop (issue 2, item 8): one meshwork hop vs direct", "", *report.hop_section(med), "",
        "## Deterministic signal: callgrind instructions per request", "", *report.callgrind_section(raw.get("callgrind")), "",
        *report.profile_section(raw.get("callgrind")),
        *machine_section(raw["meta"]), "",
        *caveats(raw, med), "",
        *per_round_table(per, raw, order),
    ]


def cpu_document(raw: dict) -> list[str]:
    """`bench/cpu`: pair CPU µs per request at saturation, per contender and round, and (with
    --tracing) tracing on against off from the same rounds."""
    meta, recs = raw["meta"], raw["records"]
    us = lambda r, k: r["saturation"][k] * 1e6 / max(r["saturation"]["requests"], 1)  # noqa: E731
    by: dict[str, list[dict]] = {}
    for r in recs:
        by.setdefault(r["contender"], []).append(r)
    med = {name: {k: median(us(r, k) for r in rs) for k in ("cpu_s", "user_s", "sys_s")} |
           {"rps": median(r["saturation"]["rps"] for r in rs), "requests": sum(r["saturation"]["requests"] for r in rs),
            "errors": sum(r["saturation"]["errors"] for r in rs)} for name, rs in by.items()}
    t = meta.get("tracing")
    lines = [f"`{' '.join(['bench/cpu', *meta['argv']])}` — {meta['rounds']} round(s), {meta['minutes']:.1f} min; "
             f"per contender and round: start the pair, warm-up (`{meta['plan']['warmup']}`), measured load "
             f"(`{meta['plan']['saturation']}`, closed loop): utime + stime of both sidecars (/proc/PID/stat) ÷ completed requests; "
             "stop. The order alternates every round.", ""]
    if t:
        lines += [f"Tracing on (`-traced`) = `{' '.join(t['flags'])}` on both sidecars, exporting to `{t['collector']}` "
                  "on loopback (blackhole exporter, not counted); the sidecars' export task is counted.", ""]
    lines += ["| contender | pair CPU µs/req (median) | of which user | of which kernel | max rps ⓘ | requests (all rounds) | errors |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in med.items():
        lines.append(f"| {name} | {m['cpu_s']:.2f} | {m['user_s']:.2f} | {m['sys_s']:.2f} | {m['rps']:,.0f} | "
                     f"{m['requests']:,} | {m['errors']} |")
    for hop in ("h2", "h1"):
        off, on = med.get(f"meshwork-{hop}"), med.get(f"meshwork-{hop}-traced")
        if not off or not on:
            continue
        rounds = sorted({r["round"] for r in recs})
        per = [us(next(r for r in by[f"meshwork-{hop}-traced"] if r["round"] == k), "cpu_s") /
               us(next(r for r in by[f"meshwork-{hop}"] if r["round"] == k), "cpu_s") for k in rounds]
        lines += ["", f"**{hop}: tracing on vs off** (medians; on ÷ off per round: {', '.join(f'{x:.2f}' for x in per)})", "",
                  "| | sampling 0 | tracing on | added per request | on ÷ off |", "|---|---:|---:|---:|---:|"]
        for label, k in (("pair CPU µs/req", "cpu_s"), ("  user", "user_s"), ("  kernel", "sys_s")):
            lines.append(f"| {label} | {off[k]:.2f} | {on[k]:.2f} | {on[k] - off[k]:+.2f} µs | {on[k] / off[k]:.2f}× |")
    lines += _cpu_pod_lines(meta, by, med, us)
    lines += ["", "## Per round", "", "| round | contender | CPU µs/req | requests | rps | spans exported A / B | dropped A / B | builds seen |",
              "|---:|---|---:|---:|---:|---:|---|---|"]
    for r in recs:
        sp = r.get("spans")
        exported = "—" if sp is None else f"{sp['A'].get('exported', 0):,} / {sp['B'].get('exported', 0):,}"
        dropped = "—" if sp is None else " / ".join(str(sum(sp[s].get("dropped", {}).values())) for s in "AB")
        lines.append(f"| {r['round'] + 1} | {r['contender']} | {us(r, 'cpu_s'):.2f} | {r['saturation']['requests']:,} | "
                     f"{r['saturation']['rps']:,.0f} | {exported} | {dropped} | {', '.join(r['builds_seen']) or 'none'} |")
    m = meta["machine"]
    lines += ["", "Spans: the change in both sidecars' `meshwork_trace_spans_exported_total` / `…_dropped_total` over "
              "the measured load (read 2 s after the warm-up and 2 s after the load; a sampled request is one span in A "
              "and one in B). Dropped spans were not exported, so their export cost is missing from the CPU figure.", "",
              f"Machine: {m['nproc']} vCPU `{m['cpu']}`, load before / after {meta['load_before']} / {meta['load_after']} "
              "(shared with other agents' builds: trust the ratio from the same rounds more than the absolute µs). "
              f"meshwork: {meta['meshwork']}; {meta['meshwork_build']}."]
    return lines


def _cpu_pod_lines(meta: dict, by: dict, med: dict, us) -> list[str]:
    """`bench/cpu --pods`: pod mode ÷ proxy mode per hop, same rounds (issue 10: ≤ 1.1×)."""
    p, lines = meta.get("pods"), []
    if p and p.get("skipped"):
        return ["", f"**Pod mode not measured**: {p['skipped']}"]
    for hop in ("h2", "h1"):
        proxy, pod = med.get(f"meshwork-{hop}"), med.get(f"meshwork-pod-{hop}")
        if not proxy or not pod:
            continue
        rounds = sorted({r["round"] for r in by[f"meshwork-pod-{hop}"]} & {r["round"] for r in by[f"meshwork-{hop}"]})
        per = [us(next(r for r in by[f"meshwork-pod-{hop}"] if r["round"] == k), "cpu_s") /
               us(next(r for r in by[f"meshwork-{hop}"] if r["round"] == k), "cpu_s") for k in rounds]
        r = pod["cpu_s"] / proxy["cpu_s"]
        verdict = "PASS" if r <= POD_LIMIT else "MISS"
        lines += ["", f"**{hop}: pod mode vs proxy mode** (issue 10: pod ÷ proxy ≤ {POD_LIMIT}×; per round: "
                  f"{', '.join(f'{x:.3f}' for x in per)}) — **{r:.3f}×, {verdict}**", "",
                  "| | proxy mode | pod mode | added per request | pod ÷ proxy |", "|---|---:|---:|---:|---:|"]
        for label, k in (("pair CPU µs/req", "cpu_s"), ("  user", "user_s"), ("  kernel", "sys_s")):
            lines.append(f"| {label} | {proxy[k]:.2f} | {pod[k]:.2f} | {pod[k] - proxy[k]:+.2f} µs | {pod[k] / proxy[k]:.3f}× |")
    return lines
