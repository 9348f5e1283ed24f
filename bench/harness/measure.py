"""One contender, one round: start the pair, measure idle memory, warm up, unloaded latency,
fixed-rate latency (sampling RSS and CPU), saturation (CPU per request), peak memory, stop."""

import time
from dataclasses import dataclass

import collector
import load
import meshwork
from contenders import Contender, metrics_recorded, policy_enforced, ready
from procs import Proc, counters_of, cpu_of, cpu_seconds, mem_of, pss_of, stop


@dataclass
class Plan:
    """Durations and sizes of each phase (`--quick` shrinks them)."""

    warmup_s: float = 3
    unloaded_n: int = 5000
    rate: int = 1000
    rate_conns: int = 4
    rate_s: int = 10
    saturation_conns: int = 32
    saturation_s: int = 5

    @classmethod
    def quick(cls) -> "Plan":
        return cls(warmup_s=1, unloaded_n=1000, rate_s=3, saturation_s=2)


class RssSampler:
    """Keeps the largest VmRSS (and RssAnon) seen per measured process while a load runs."""

    def __init__(self, procs: list[Proc]):
        self.procs = procs
        self.peak = mem_of(procs, "VmRSS")
        self.peak_anon = mem_of(procs, "RssAnon")

    def __call__(self) -> None:
        self.peak = [max(a, b) for a, b in zip(self.peak, mem_of(self.procs, "VmRSS"))]
        self.peak_anon = [max(a, b) for a, b in zip(self.peak_anon, mem_of(self.procs, "RssAnon"))]


def _fixed_rate(tools: load.Tools, c: Contender, procs: list[Proc], plan: Plan) -> dict:
    sampler = RssSampler(procs)
    cpu0, t0 = cpu_of(procs), time.monotonic()
    result = load.fixed_rate(tools, c.target, plan.rate, plan.rate_conns, plan.rate_s, sampler)
    result["cpu_s"], result["wall_s"] = cpu_of(procs) - cpu0, time.monotonic() - t0
    sampler()
    result["rss_max_mib"], result["anon_max_mib"] = sampler.peak, sampler.peak_anon
    return result


def _saturation(c: Contender, procs: list[Proc], app: Proc, plan: Plan) -> dict:
    before, app0 = counters_of(procs), cpu_seconds(app.pid)
    result = load.wrk(c.target, plan.saturation_conns, plan.saturation_s)
    after = counters_of(procs)
    result.update({k: after[k] - before[k] for k in after})
    result["cpu_s"] = result["user_s"] + result["sys_s"]
    result["app_cpu_s"] = cpu_seconds(app.pid) - app0
    return result


def run_one(tools: load.Tools, c: Contender, app: Proc, plan: Plan) -> dict:
    app = c.app or app  # pod mode: the nginx inside pod B
    procs = c.start()
    try:
        c.target = ready(c)
        time.sleep(0.5)  # let the readiness probe's allocations settle before "idle"
        form = ("in pod A: http://server/ (pod resolver, captured)" if c.target.netns
                else "absolute-form" if c.target.absolute_form else "origin-form + Host")
        record = {"contender": c.name, "family": c.family, "hop": c.hop, "client_form": form,
                  "idle_rss_mib": mem_of(procs, "VmRSS"), "idle_anon_mib": mem_of(procs, "RssAnon"),
                  "idle_pss_mib": pss_of(procs)}
        if c.family == "meshwork":
            record["policy_enforced"] = policy_enforced(c.target)
        load.wrk(c.target, plan.rate_conns, plan.warmup_s)
        record["unloaded"] = load.unloaded(tools, c.target, plan.unloaded_n)
        record["fixed"] = _fixed_rate(tools, c, procs, plan)
        record["saturation"] = _saturation(c, procs, app, plan)
        record["peak_rss_mib"] = mem_of(procs, "VmHWM")
        if c.family == "meshwork":
            info = meshwork.ready_info(c.hop, c.traced, c.pod)
            record["metrics_recorded"] = metrics_recorded(info["server"]["admin"])
        if c.traced:
            time.sleep(2.0)  # the exporter sends a partial batch 1 s after its first span
            record["spans"] = {side: collector.span_counts(info[w]["admin"]) for side, w in (("A", "client"), ("B", "server"))}
        record["pids_alive"] = all(p.alive() for p in procs)
        return record
    finally:
        stop(procs)


def run_cpu(c: Contender, app: Proc, plan: Plan) -> dict:
    """`bench/cpu`: only what needs no oha: start, warm-up, saturation (CPU µs per request),
    the span counters of a traced pair, stop."""
    app = c.app or app
    procs = c.start()
    try:
        c.target = ready(c)
        load.wrk(c.target, plan.rate_conns, plan.warmup_s)
        info = meshwork.ready_info(c.hop, c.traced, c.pod)
        admins = {side: info[w]["admin"] for side, w in (("A", "client"), ("B", "server"))}
        if c.traced:
            time.sleep(2.0)  # the warm-up's spans go out before the measured load starts
        before = {side: collector.span_counts(a) for side, a in admins.items()} if c.traced else None
        record = {"contender": c.name, "family": c.family, "hop": c.hop,
                  "saturation": _saturation(c, procs, app, plan)}
        record["metrics_recorded"] = metrics_recorded(info["server"]["admin"])
        if c.traced:
            time.sleep(2.0)  # the exporter sends a partial batch 1 s after its first span
            after = {side: collector.span_counts(a) for side, a in admins.items()}
            record["spans"] = {side: _span_delta(before[side], after[side]) for side in admins}
        record["pids_alive"] = all(p.alive() for p in procs)
        return record
    finally:
        stop(procs)


def _span_delta(before: dict, after: dict) -> dict:
    """Spans exported and dropped (per reason) between two reads of a sidecar's counters."""
    dropped = {k: v - before.get("dropped", {}).get(k, 0) for k, v in after.get("dropped", {}).items()}
    return {"exported": after.get("exported", 0) - before.get("exported", 0), "dropped": dropped}
