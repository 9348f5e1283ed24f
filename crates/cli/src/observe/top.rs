//! `meshwork top`: `stat`'s table, redrawn every second (ANSI clear and home, no TUI),
//! busiest rows first (requests per second), until Ctrl-C; `--once` prints one frame.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::aggregate::{GroupBy, aggregate};
use super::fetch_stats_quietly;
use super::stat::{rows, table};
use crate::sidecar_admin::Window;

/// Arguments of `meshwork top`.
#[derive(clap::Args)]
pub struct TopArgs {
    /// Only this workload's sidecars and the rows naming this service.
    pub target: Option<String>,
    /// One row per route template or per peer instead of per workload.
    #[arg(long, value_enum, default_value = "workload")]
    pub by: GroupBy,
    /// How far back each frame looks: whole seconds from 1s to 10m.
    #[arg(long, default_value = "10s")]
    pub window: Window,
    /// Print one frame (without clearing the screen) and exit.
    #[arg(long)]
    pub once: bool,
    /// The state directory of the running `meshwork up`.
    #[arg(long, default_value = ".meshwork", env = "MESHWORK_STATE_DIR")]
    pub state_dir: PathBuf,
}

/// Draws frames until Ctrl-C (or once).
pub fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    if args.once {
        print!("{}", frame(&args)?);
        return Ok(ExitCode::SUCCESS);
    }
    // Ctrl-C's SIGINT ends the process as it does any plain command: nothing here changes
    // the terminal's modes, so there is nothing to restore.
    loop {
        let text = frame(&args).unwrap_or_else(|e| format!("meshwork top: {e:#}\n"));
        let mut out = std::io::stdout().lock();
        write!(out, "\x1b[2J\x1b[H{text}")?;
        out.flush()?;
        drop(out);
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One frame: a title line, what did not answer, and the table, busiest rows first (warnings
/// are part of the frame: printed apart, the next screen clear would wipe them).
fn frame(args: &TopArgs) -> anyhow::Result<String> {
    let (stats, unreachable, skipped) = fetch_stats_quietly(&args.state_dir, args.window)?;
    let agg = aggregate(&stats, args.by, args.target.as_deref())?;
    let mut rows = rows(&agg);
    rows.sort_by(|a, b| b.1.rps.total_cmp(&a.1.rps).then_with(|| a.0.cmp(b.0)));
    let now = time::OffsetDateTime::now_utc();
    let mut text = format!(
        "meshwork top — {} sidecars, window {}s, {:02}:{:02}:{:02} UTC — Ctrl-C to quit\n",
        stats.len(),
        args.window.secs(),
        now.hour(),
        now.minute(),
        now.second()
    );
    for u in &unreachable {
        text += &format!(
            "({}-{} did not answer: {})\n",
            u.workload, u.replica, u.error
        );
    }
    for s in &skipped {
        text += &format!("(workloads/{} skipped: {})\n", s.file, s.why);
    }
    text.push('\n');
    text += &table(&agg, args.by, &mut rows);
    Ok(text)
}
