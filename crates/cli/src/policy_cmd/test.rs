//! `meshwork policy test FILE`: a table of expected decisions (`policy::TestTable` YAML) run
//! against the resources' policies. Prints one row per case, then a diff-like report of the
//! mismatches; exit 0 when every case holds, 1 on any mismatch, 2 on bad input (including a
//! case that cannot run, e.g. naming an unknown workload).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use policy::{AuditOutcome, CaseOutcome, Decision, DecisionReason, TestReport, TestTable};

use super::PolicyFiles;

/// Arguments of `meshwork policy test`.
#[derive(clap::Args)]
pub struct TestArgs {
    /// The table of cases (YAML with `cases:`; see docs/policy.md).
    file: PathBuf,
    /// Directory of resources (workloads and policies); default: the directory containing FILE.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Runs the table; see the module docs for the exit codes.
pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let table = read_table(&args.file)?;
    let dir = args.dir.unwrap_or_else(|| match args.file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    });
    let files = PolicyFiles::load(&dir)?;
    let report = table.run(&files.engine, |name| files.workload_id(name));
    print!("{}", render(&report, &files));
    let broken = report.outcomes.iter().any(|o| o.result.is_err());
    Ok(match (broken, report.passed()) {
        (true, _) => ExitCode::from(2),
        (false, false) => ExitCode::from(1),
        (false, true) => ExitCode::SUCCESS,
    })
}

fn read_table(file: &Path) -> anyhow::Result<TestTable> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    serde_saphyr::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        let message = e.to_string();
        let message = message.lines().next().unwrap_or_default();
        let message = message.strip_prefix("error: ").unwrap_or(message);
        anyhow!(
            "{}:{at}: not a policy test table: {message}",
            file.display()
        )
    })
}

/// The table, the mismatches (`-` expected, `+` got), and a summary line.
fn render(report: &TestReport, files: &PolicyFiles) -> String {
    let width = report
        .outcomes
        .iter()
        .map(|o| o.name.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 60);
    let mut out = format!(
        "{:<6}  {:<6}  {:<5}  {:<width$}  DECIDED BY\n",
        "RESULT", "EXPECT", "GOT", "CASE"
    );
    for o in &report.outcomes {
        let (result, got, by) = match &o.result {
            Ok(d) => (
                if o.passed() { "ok" } else { "FAIL" },
                verdict(d),
                decided_by(d),
            ),
            Err(e) => ("ERROR", "-", e.to_string()),
        };
        let _ = writeln!(
            out,
            "{result:<6}  {:<6}  {got:<5}  {:<width$}  {by}",
            o.expected.to_string(),
            o.name
        );
    }
    let failed: Vec<&CaseOutcome> = report.outcomes.iter().filter(|o| !o.passed()).collect();
    out += &mismatches(&failed);
    let _ = writeln!(
        out,
        "\n{} cases: {} passed, {} failed (policies {} in {})",
        report.outcomes.len(),
        report.outcomes.len() - failed.len(),
        failed.len(),
        files.engine.hash(),
        files.dir.display()
    );
    out
}

/// Each failed case as `- expected` / `+ got` lines (empty when nothing failed).
fn mismatches(failed: &[&CaseOutcome]) -> String {
    let mut out = String::new();
    if !failed.is_empty() {
        out += "\nmismatches (- expected, + got):\n";
    }
    for o in failed {
        let _ = writeln!(out, "  {}\n  - {}", o.name, o.expected);
        let _ = match &o.result {
            Ok(d) => writeln!(out, "  + {d}"),
            Err(e) => writeln!(out, "  + case could not run: {e}"),
        };
    }
    out
}

fn verdict(decision: &Decision) -> &'static str {
    if decision.allowed { "allow" } else { "deny" }
}

/// `default/billing-charges rule 0` (or the kind when no policy decided), then audit notes.
fn decided_by(decision: &Decision) -> String {
    let mut by = reason_name(&decision.reason);
    for note in &decision.audit {
        let would = match note.outcome {
            AuditOutcome::WouldDeny => "would deny",
            AuditOutcome::WouldAllow => "would allow",
        };
        let _ = write!(by, "; audit: {would} by {}", reason_name(&note.reason));
    }
    by
}

fn reason_name(reason: &DecisionReason) -> String {
    match (&reason.policy, reason.rule) {
        (Some(p), Some(r)) => format!("{p} rule {r}"),
        (Some(p), None) => p.clone(),
        _ => serde_json::to_value(reason.kind)
            .ok()
            .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
            .unwrap_or_default(),
    }
}
