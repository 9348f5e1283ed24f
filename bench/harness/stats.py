"""From raw per-round records to per-contender medians and same-run ratios."""

from statistics import median


def _per_round_metrics(rec: dict, direct: dict | None) -> dict:
    """Derived numbers for one contender in one round (direct = the same round's direct run)."""
    un, fx, sat = rec["unloaded"], rec["fixed"], rec["saturation"]
    m = {
        "round": rec["round"],
        "p50_1c_ms": un["p50_ms"],
        "p50_1000_ms": fx["p50_ms"],
        "p90_1000_ms": fx["p90_ms"],
        "p99_1000_ms": fx["p99_ms"],
        "max_rps": sat["rps"],
        "errors": un["errors"] + fx["errors"] + sat["errors"],
    }
    if direct is not None:
        m["added_p50_1c_ms"] = un["p50_ms"] - direct["unloaded"]["p50_ms"]
        m["added_p50_1000_ms"] = fx["p50_ms"] - direct["fixed"]["p50_ms"]
        m["added_p90_1000_ms"] = fx["p90_ms"] - direct["fixed"]["p90_ms"]
    if rec["family"] != "direct":
        m["cpu_us_req"] = sat["cpu_s"] * 1e6 / max(sat["requests"], 1)
        m["cpu_user_us_req"] = sat["user_s"] * 1e6 / max(sat["requests"], 1)
        m["cpu_sys_us_req"] = sat["sys_s"] * 1e6 / max(sat["requests"], 1)
        m["cpu_us_req_1000"] = fx["cpu_s"] * 1e6 / max(fx["requests"], 1)
        m["vcpu_1000"] = fx["cpu_s"] / fx["wall_s"]
        for i, side in enumerate("AB"):
            m[f"idle_rss_{side}"] = rec["idle_rss_mib"][i]
            m[f"rss_1000_{side}"] = fx["rss_max_mib"][i]
            m[f"peak_rss_{side}"] = rec["peak_rss_mib"][i]
        if "idle_anon_mib" in rec:  # older raw files lack these
            for i, side in enumerate("AB"):
                m[f"idle_anon_{side}"] = rec["idle_anon_mib"][i]
                m[f"idle_pss_{side}"] = rec["idle_pss_mib"][i]
                m[f"anon_1000_{side}"] = fx["anon_max_mib"][i]
            m["idle_anon_max"] = max(rec["idle_anon_mib"])
            m["anon_1000_max"] = max(fx["anon_max_mib"])
        m["idle_rss_max"] = max(rec["idle_rss_mib"])
        m["rss_1000_max"] = max(fx["rss_max_mib"])
        m["peak_rss_max"] = max(rec["peak_rss_mib"])
    return m


def per_round(records: list[dict]) -> dict[str, list[dict]]:
    """contender -> [metrics of each round]."""
    direct_by_round = {r["round"]: r for r in records if r["family"] == "direct"}
    out: dict[str, list[dict]] = {}
    for rec in records:
        m = _per_round_metrics(rec, direct_by_round.get(rec["round"]))
        out.setdefault(rec["contender"], []).append(m)
    return out


def medians(rounds: dict[str, list[dict]]) -> dict[str, dict]:
    """contender -> {metric: median over rounds} (errors are summed, not medianed)."""
    out = {}
    for name, ms in rounds.items():
        keys = set().union(*ms)
        med = {k: median(m[k] for m in ms if k in m) for k in keys if k not in ("errors", "round")}
        med["errors"] = sum(m["errors"] for m in ms)
        med["rounds"] = len(ms)
        out[name] = med
    return out


def ratio(med: dict, a: str, b: str, key: str) -> float | None:
    """med[a][key] / med[b][key], None when either is missing or b is not positive."""
    x, y = med.get(a, {}).get(key), med.get(b, {}).get(key)
    if x is None or y is None or y <= 0:
        return None
    return x / y


def per_round_ratios(rounds: dict[str, list[dict]], a: str, b: str, key: str) -> list[float]:
    """a/b for each round in which both ran (to show how stable a median ratio is)."""
    bs = {m["round"]: m.get(key) for m in rounds.get(b, [])}
    out = []
    for m in rounds.get(a, []):
        x, y = m.get(key), bs.get(m["round"])
        if x is not None and y is not None and y > 0:
            out.append(x / y)
    return out
