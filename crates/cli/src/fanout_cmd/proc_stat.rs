//! The control plane's CPU and memory from `/proc/<pid>`, and this process's open-file
//! limit (each simulated sidecar holds a connection).

use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

/// Linux's `USER_HZ` on every architecture meshwork builds for: `/proc/<pid>/stat` counts
/// CPU time in these ticks.
const TICKS_PER_SECOND: f64 = 100.0;

/// Raises the soft open-file limit to the hard one; refuses `sidecars` it cannot hold.
pub fn raise_open_files(sidecars: usize) -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raising RLIMIT_NOFILE")?;
    let need = sidecars as u64 + 64;
    anyhow::ensure!(
        need <= hard,
        "{sidecars} sidecars need {need} open files; the hard limit is {hard} (ulimit -Hn)"
    );
    Ok(())
}

/// Refuses when the control plane (`pid`) cannot hold `sidecars` connections: its soft
/// open-file limit, from `/proc/<pid>/limits`, is what it inherited, not ours.
pub fn check_control_limit(pid: u32, sidecars: usize) -> anyhow::Result<()> {
    let path = format!("/proc/{pid}/limits");
    let limits = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("{path}: no \"Max open files\" line"))?;
    if soft == "unlimited" {
        return Ok(());
    }
    let soft: u64 = soft
        .parse()
        .with_context(|| format!("{path}: open files {soft:?}"))?;
    let need = sidecars as u64 + 64;
    anyhow::ensure!(
        need <= soft,
        "the control plane (pid {pid}) may open {soft} files but {sidecars} sidecars need \
         {need}: raise its limit (ulimit -n) before starting it"
    );
    Ok(())
}

/// One reading of a process.
#[derive(Debug, Clone)]
pub struct Sample {
    cpu_seconds: f64,
    rss_kib: u64,
    at: Instant,
}

impl Sample {
    /// Reads `/proc/<pid>/stat` (utime + stime) and `/proc/<pid>/status` (VmRSS).
    pub fn take(pid: u32) -> anyhow::Result<Sample> {
        let stat_path = format!("/proc/{pid}/stat");
        let stat =
            std::fs::read_to_string(&stat_path).with_context(|| format!("reading {stat_path}"))?;
        // Fields after the command (which may hold spaces) start after the last ')'.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
        let tick = |i: usize| -> anyhow::Result<f64> {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .with_context(|| format!("{stat_path}: field {} is not a tick count", i + 3))
        };
        let cpu_seconds = (tick(11)? + tick(12)?) / TICKS_PER_SECOND;
        let status_path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&status_path)
            .with_context(|| format!("reading {status_path}"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{status_path}: no VmRSS line"))?;
        Ok(Sample {
            cpu_seconds,
            rss_kib,
            at: Instant::now(),
        })
    }
}

/// The control plane's cost, per the units.
#[derive(Debug, Serialize)]
pub struct ControlCost {
    rss_before_kib: u64,
    rss_attached_kib: u64,
    /// (attached − before) / sidecars.
    rss_per_proxy_kib: f64,
    /// Attached and idle (only the 25 s refresh answers), CPU % of one core per 1,000;
    /// `None` when the idle window was under a second (too short for 10 ms ticks).
    idle_cpu_percent_per_1000: Option<f64>,
    /// CPU milliseconds one change costs, idle work subtracted, per 1,000 proxies (`None`
    /// without an idle rate to subtract).
    cpu_ms_per_change_per_1000: Option<f64>,
}

impl ControlCost {
    /// From samples taken before attaching, once attached, after the idle window and
    /// after the rounds.
    pub fn new(
        sidecars: usize,
        rounds: usize,
        [before, attached, idle, after]: [&Sample; 4],
    ) -> ControlCost {
        let thousands = sidecars as f64 / 1000.0;
        let idle_window = idle.at.duration_since(attached.at).as_secs_f64();
        let idle_rate =
            (idle_window >= 1.0).then(|| (idle.cpu_seconds - attached.cpu_seconds) / idle_window);
        let rounds_window = after.at.duration_since(idle.at).as_secs_f64();
        let change_cpu =
            idle_rate.map(|r| (after.cpu_seconds - idle.cpu_seconds) - r * rounds_window);
        ControlCost {
            rss_before_kib: before.rss_kib,
            rss_attached_kib: attached.rss_kib,
            rss_per_proxy_kib: attached.rss_kib.saturating_sub(before.rss_kib) as f64
                / sidecars.max(1) as f64,
            idle_cpu_percent_per_1000: idle_rate.map(|r| r * 100.0 / thousands),
            cpu_ms_per_change_per_1000: change_cpu
                .map(|c| c.max(0.0) * 1000.0 / rounds.max(1) as f64 / thousands),
        }
    }
}

/// One reading of the control replicas (summed) and of the etcd members (summed); `None`
/// for a group given no pids.
#[derive(Debug, Clone)]
pub struct Samples {
    control: Option<Sample>,
    etcd: Option<Sample>,
}

impl Samples {
    /// Reads every pid of both groups.
    pub fn take(control: &[u32], etcd: &[u32]) -> anyhow::Result<Samples> {
        Ok(Samples {
            control: Sample::sum(control)?,
            etcd: Sample::sum(etcd)?,
        })
    }

    /// The control replicas' cost, from samples taken before attaching, once attached,
    /// after the idle window and after the rounds.
    pub fn control_cost(
        sidecars: usize,
        rounds: usize,
        [b, a, i, f]: [&Samples; 4],
    ) -> Option<ControlCost> {
        let [b, a, i, f] = [&b.control, &a.control, &i.control, &f.control];
        Some(ControlCost::new(
            sidecars,
            rounds,
            [b.as_ref()?, a.as_ref()?, i.as_ref()?, f.as_ref()?],
        ))
    }

    /// The etcd members' cost over the same windows.
    pub fn store_cost(rounds: usize, [b, a, i, f]: [&Samples; 4]) -> Option<StoreCost> {
        let [b, a, i, f] = [
            b.etcd.as_ref()?,
            a.etcd.as_ref()?,
            i.etcd.as_ref()?,
            f.etcd.as_ref()?,
        ];
        Some(StoreCost::new(rounds, [b, a, i, f]))
    }
}

impl Sample {
    /// The sum over `pids` (`None` for none).
    fn sum(pids: &[u32]) -> anyhow::Result<Option<Sample>> {
        let mut total: Option<Sample> = None;
        for &pid in pids {
            let one = Sample::take(pid)?;
            total = Some(match total {
                None => one,
                Some(t) => Sample {
                    cpu_seconds: t.cpu_seconds + one.cpu_seconds,
                    rss_kib: t.rss_kib + one.rss_kib,
                    at: one.at,
                },
            });
        }
        Ok(total)
    }
}

/// The store's (etcd's) cost: it should not grow with the number of sidecars, only with
/// replicas and changes (each replica holds one watch).
#[derive(Debug, Serialize)]
pub struct StoreCost {
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// CPU % of one core while the sidecars were attached and idle.
    idle_cpu_percent: Option<f64>,
    /// CPU milliseconds per change, idle work subtracted.
    cpu_ms_per_change: Option<f64>,
}

impl StoreCost {
    fn new(rounds: usize, [before, attached, idle, after]: [&Sample; 4]) -> StoreCost {
        let idle_window = idle.at.duration_since(attached.at).as_secs_f64();
        let idle_rate =
            (idle_window >= 1.0).then(|| (idle.cpu_seconds - attached.cpu_seconds) / idle_window);
        let rounds_window = after.at.duration_since(idle.at).as_secs_f64();
        let change = idle_rate.map(|r| (after.cpu_seconds - idle.cpu_seconds) - r * rounds_window);
        StoreCost {
            rss_before_kib: before.rss_kib,
            rss_after_kib: after.rss_kib,
            idle_cpu_percent: idle_rate.map(|r| r * 100.0),
            cpu_ms_per_change: change.map(|c| c.max(0.0) * 1000.0 / rounds.max(1) as f64),
        }
    }
}
