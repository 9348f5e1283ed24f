//! `meshwork policy replay --candidate DIR`: the traffic that actually flowed, as the
//! sidecars recorded it (`GET /decisions`: caller × method × route template × count, no raw
//! paths), decided by the baseline — the policies the sidecars enforce now (the running
//! control plane's snapshot), or `--baseline DIR` — and by the candidate; prints the rows the
//! two decide differently (newly denied, newly allowed), with counts and the rules
//! responsible. Exit 1 when anything would newly be denied (for CI), 0 otherwise, 2 on bad
//! input (including a sidecar that cannot be asked: the record would be partial).
//!
//! Inbound authorization only: egress policies are not recorded, so not replayed.
//!
//! `meshwork policy record` exports the same record (a JSON array of
//! `api::contract::observe::DecisionRecord`) for `replay --record FILE`.

mod diff;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use api::contract::observe::DecisionRecord;
use policy::{DecisionReason, Engine};
use serde_json::json;

use super::template::PLACEHOLDER;
use super::{PolicyFiles, RunningPolicies};
use crate::sidecar_admin::{self, Window};
use diff::{Change, Replay, replay};

/// What the output says about egress.
const INBOUND_ONLY: &str =
    "inbound authorization only: egress policies are not recorded, so not replayed";

/// Arguments of `meshwork policy replay`.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Directory of resources holding the candidate policies.
    #[arg(long)]
    candidate: PathBuf,
    /// Directory of resources holding the policies to compare with, instead of the ones the
    /// running mesh enforces now.
    #[arg(long, value_name = "DIR")]
    baseline: Option<PathBuf>,
    /// Replay a record exported by `meshwork policy record` instead of asking the mesh.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    #[command(flatten)]
    mesh: RecordArgs,
    /// `table` or `json` (docs/observe.md).
    #[arg(short = 'o', long, value_parser = ["table", "json"], default_value = "table")]
    output: String,
}

/// Where the decisions come from: the running mesh.
#[derive(clap::Args)]
pub struct RecordArgs {
    /// How far back: whole seconds from 1s to 10m (what the sidecars keep).
    #[arg(long, default_value = "10m")]
    window: Window,
    /// The state directory of the running `meshwork up`.
    #[arg(long, default_value = ".meshwork", env = "MESHWORK_STATE_DIR")]
    state_dir: PathBuf,
}

/// The decisions of every sidecar of the running mesh over the window; an error when any
/// sidecar cannot be asked (a partial record would report fewer changes than there are).
fn fetch(args: &RecordArgs) -> anyhow::Result<Vec<DecisionRecord>> {
    let sidecars = sidecar_admin::discover_all(&args.state_dir)?;
    let target = format!("/decisions?window={}", args.window.secs());
    let answers = sidecar_admin::runtime()?
        .block_on(sidecar_admin::gather::<DecisionRecord>(&sidecars, &target));
    let mut records = Vec::new();
    for (sidecar, answer) in answers {
        let record = answer
            .with_context(|| format!("the record would miss {}'s decisions", sidecar.label))?;
        records.push(record);
    }
    Ok(records)
}

/// `meshwork policy record`: prints the running mesh's decisions as JSON.
pub fn record(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let records = fetch(&args)?;
    println!("{}", serde_json::to_string_pretty(&records)?);
    Ok(ExitCode::SUCCESS)
}

fn read_record(file: &Path) -> anyhow::Result<Vec<DecisionRecord>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a decision record (a JSON array of records as `meshwork policy record` \
             writes it)",
            file.display()
        )
    })
}

/// The policies compared with, and how to name them.
struct Baseline {
    engine: Engine,
    name: String,
}

impl Baseline {
    fn load(args: &ReplayArgs) -> anyhow::Result<Baseline> {
        if let Some(dir) = &args.baseline {
            let files = PolicyFiles::load(dir)?;
            let name = format!("{} (policies {})", dir.display(), files.engine.hash());
            return Ok(Baseline {
                engine: files.engine,
                name,
            });
        }
        let running = RunningPolicies::fetch(&args.mesh.state_dir)
            .context("the baseline is the running mesh's policies (or pass --baseline DIR)")?;
        Ok(Baseline {
            name: format!(
                "the running mesh's policies (snapshot {}, policies {})",
                running.version, running.hash
            ),
            engine: running.engine,
        })
    }
}

/// Replays; see the module docs for the exit codes.
pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let candidate = PolicyFiles::load(&args.candidate)?;
    let baseline = Baseline::load(&args)?;
    let (records, source) = match &args.record {
        Some(file) => (read_record(file)?, format!("record {}", file.display())),
        None => (
            fetch(&args.mesh)?,
            format!(
                "running mesh in {}, last {}s",
                args.mesh.state_dir.display(),
                args.mesh.window.secs()
            ),
        ),
    };
    let replay = replay(&baseline.engine, &candidate.engine, &records);
    if args.output == "json" {
        let doc = json!({
            "candidate": candidate.dir,
            "policy_hash": candidate.engine.hash().to_string(),
            "baseline": baseline.name,
            "source": source,
            "records": records.len(),
            "placeholder": PLACEHOLDER,
            "scope": INBOUND_ONLY,
            "replay": replay,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!(
            "{}",
            render(&replay, &candidate, &baseline, &source, records.len())
        );
    }
    Ok(match replay.newly_denied.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    })
}

fn render(
    replay: &Replay,
    candidate: &PolicyFiles,
    baseline: &Baseline,
    source: &str,
    records: usize,
) -> String {
    let mut out = format!(
        "replayed {records} sidecar records ({source}) against {} (policies {}), \
         compared with {}\n{INBOUND_ONLY}\n",
        candidate.dir.display(),
        candidate.engine.hash(),
        baseline.name
    );
    out += &changes("newly denied", &replay.newly_denied);
    out += &changes("newly allowed", &replay.newly_allowed);
    let unknown: u64 = replay.unknown.iter().map(|u| u.count).sum();
    out += &format!(
        "\nunknown: {} (not decided again)\n",
        rows(replay.unknown.len(), unknown)
    );
    for u in &replay.unknown {
        out += &format!(
            "  {} {} {} {} ×{}: {}\n",
            u.row.service, u.row.caller, u.row.method, u.row.route, u.count, u.why
        );
    }
    out += &format!(
        "unchanged: {}\n",
        rows(replay.unchanged_rows, replay.unchanged_requests)
    );
    out
}

fn changes(title: &str, changes: &[Change]) -> String {
    let requests: u64 = changes.iter().map(|c| c.count).sum();
    if changes.is_empty() {
        return format!("\n{title}: nothing\n");
    }
    let mut cells = vec![
        [
            "SERVICE",
            "CALLER",
            "METHOD",
            "ROUTE",
            "COUNT",
            "CANDIDATE RULE",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for c in changes {
        cells.push(vec![
            c.row.service.clone(),
            c.row.caller.clone(),
            c.row.method.clone(),
            c.row.route.clone(),
            c.count.to_string(),
            rule(&c.candidate),
        ]);
    }
    let table = crate::columns::columns(&cells);
    format!("\n{title}: {}\n{table}", rows(changes.len(), requests))
}

/// `explicit allow: policy default/x rule 1: from[0] …`, as `policy explain` words it, or
/// the matcher alone when no policy decided (it says `default deny: …` itself).
fn rule(reason: &DecisionReason) -> String {
    if reason.policy.is_none() {
        return reason.to_string();
    }
    let kind = serde_json::to_value(reason.kind)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_default();
    format!("{kind}: {reason}")
}

/// `1 row, 5 requests`.
fn rows(rows: usize, requests: u64) -> String {
    let plural = |n: u64, word: &str| match n {
        1 => format!("1 {word}"),
        n => format!("{n} {word}s"),
    };
    format!(
        "{}, {}",
        plural(rows as u64, "row"),
        plural(requests, "request")
    )
}
