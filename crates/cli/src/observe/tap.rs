//! `meshwork tap WORKLOAD [--to SERVICE] [--route R] [--denied] [--header NAME]… [-o json]`:
//! the requests passing a workload's sidecars (every replica), printed as they finish, from
//! each sidecar's `GET /tap` stream. The filters are the sidecar's: nothing else is sent.

use std::path::PathBuf;
use std::process::ExitCode;

use api::contract::observe::{Decision, Direction, TapEvent};
use tokio::sync::mpsc;

use super::Output;
use crate::sidecar_admin::{self, Sidecar, StreamLine, query};

/// Arguments of `meshwork tap`.
#[derive(clap::Args)]
pub struct TapArgs {
    /// The workload whose sidecars to tap.
    pub workload: String,
    /// Only requests for this mesh service (`[egress]` for egress).
    #[arg(long, value_name = "SERVICE")]
    pub to: Option<String>,
    /// Only requests on this route template (e.g. `/charges/{id}`).
    #[arg(long)]
    pub route: Option<String>,
    /// Only requests a policy denied.
    #[arg(long)]
    pub denied: bool,
    /// Only one listener: inbound or outbound.
    #[arg(long, value_parser = ["inbound", "outbound"])]
    pub direction: Option<String>,
    /// Show this request header's value (repeatable); no header is shown otherwise.
    #[arg(long = "header", value_name = "NAME")]
    pub headers: Vec<String>,
    /// Stop after this many requests (over all replicas).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// `table` (one line per request) or `json` (the sidecars' NDJSON lines as they come).
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
    /// The state directory of the running `meshwork up`.
    #[arg(long, default_value = ".meshwork", env = "MESHWORK_STATE_DIR")]
    pub state_dir: PathBuf,
}

impl TapArgs {
    /// `/tap?…` with the filters.
    fn target(&self) -> String {
        let limit = self.limit.map(|n| n.to_string());
        let mut params: Vec<(&str, &str)> = Vec::new();
        if let Some(d) = &self.direction {
            params.push(("direction", d));
        }
        if let Some(s) = &self.to {
            params.push(("service", s));
        }
        if let Some(r) = &self.route {
            params.push(("route", r));
        }
        if self.denied {
            params.push(("denied", "true"));
        }
        if let Some(n) = &limit {
            params.push(("limit", n));
        }
        for h in &self.headers {
            params.push(("header", h));
        }
        format!("/tap{}", query(&params))
    }
}

/// Prints requests until Ctrl-C, `--limit`, or every tapped sidecar closed its stream
/// (exit 1 then: the taps ended without being asked to).
pub fn run(args: TapArgs) -> anyhow::Result<ExitCode> {
    let sidecars =
        sidecar_admin::of_workload(sidecar_admin::discover(&args.state_dir)?, &args.workload)?;
    let labels: Vec<String> = sidecars.iter().map(|s| s.label.clone()).collect();
    let rt = sidecar_admin::runtime()?;
    rt.block_on(tap(&args, sidecars, &labels))
}

async fn tap(
    args: &TapArgs,
    sidecars: Vec<Sidecar>,
    labels: &[String],
) -> anyhow::Result<ExitCode> {
    let (tx, mut rx) = mpsc::channel(256);
    let target = args.target();
    let mut open = sidecars.len();
    for (i, sidecar) in sidecars.into_iter().enumerate() {
        tokio::spawn(sidecar_admin::stream_lines(
            i,
            sidecar.admin,
            target.clone(),
            tx.clone(),
        ));
    }
    drop(tx);
    let mut printed = 0u64;
    while let Some(message) = rx.recv().await {
        match message {
            StreamLine::Line(i, line) => {
                let from = labels.get(i).map_or("?", String::as_str);
                if print(args.output, from, &line) {
                    printed += 1;
                }
                if args.limit.is_some_and(|n| printed >= n) {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            StreamLine::End(i, result) => {
                let from = labels.get(i).map_or("?", String::as_str);
                match result {
                    Ok(()) => eprintln!("meshwork: the tap of {from} ended"),
                    Err(e) => eprintln!("meshwork: the tap of {from} failed: {e:#}"),
                }
                open -= 1;
                if open == 0 {
                    return Ok(ExitCode::from(1));
                }
            }
        }
    }
    Ok(ExitCode::from(1))
}

/// Prints one line of `from`'s stream; whether it was a request (not a `lost` marker).
fn print(output: Output, from: &str, line: &str) -> bool {
    let event = serde_json::from_str::<TapEvent>(line);
    match (&event, output) {
        (_, Output::Json) => println!("{line}"),
        (Ok(event), Output::Table) => println!("{}", render(from, event)),
        (Err(e), Output::Table) => {
            eprintln!("meshwork: {from} sent a line that is not a tap event ({e}): {line}");
        }
    }
    event.is_ok_and(|e| e.lost.is_none())
}

/// One line: time, sidecar, caller → service, method route, status, latency, decision
/// (and id), trace id, listed headers; or the marker of lost events.
pub fn render(from: &str, e: &TapEvent) -> String {
    let time = clock(&e.time);
    if let Some(lost) = e.lost {
        return format!("{time} {from:<10} -- {lost} events lost: this tap fell behind --");
    }
    let arrow = match e.direction {
        Direction::Inbound => "in ",
        Direction::Outbound => "out",
    };
    let decision = match (e.decision, &e.decision_id) {
        (Decision::Allow, _) => "allow".to_owned(),
        (Decision::Deny, Some(id)) => format!("DENY {id}"),
        (Decision::Deny, None) => "DENY".to_owned(),
    };
    let mut line = format!(
        "{time} {from:<10} {arrow} {} → {}  {} {}  {}  {:.2}ms  {decision}",
        e.caller, e.service, e.method, e.route, e.status_code, e.latency_ms
    );
    if let Some(trace) = &e.trace_id {
        line += &format!("  trace={trace}");
    }
    for (name, value) in &e.headers {
        line += &format!("  {name}={value:?}");
    }
    line
}

/// The time of day of an RFC 3339 time, to the millisecond (`20:01:31.962`); the whole
/// text when it is not one (`-o json` keeps the full time).
fn clock(time: &str) -> &str {
    let Some((_, of_day)) = time.split_once('T') else {
        return time;
    };
    of_day.get(..12).unwrap_or(of_day.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> TapEvent {
        TapEvent {
            time: "2026-12-05T19:00:00.000Z".to_owned(),
            direction: Direction::Inbound,
            caller: "spiffe://meshwork.local/ns/default/sa/reporting".to_owned(),
            callee: None,
            service: "billing".to_owned(),
            method: "POST".to_owned(),
            route: "/charges".to_owned(),
            status_code: 403,
            latency_ms: 0.5,
            decision: Decision::Deny,
            decision_id: Some("dec-1".to_owned()),
            policy: None,
            rule: None,
            trace_id: Some("abc".to_owned()),
            headers: vec![("x-debug".to_owned(), "1".to_owned())],
            lost: None,
        }
    }

    #[test]
    fn a_denial_shows_its_decision_id_and_trace() {
        assert_eq!(clock("2026-12-05T20:01:31.962639785Z"), "20:01:31.962");
        assert_eq!(clock("2026-12-05T20:01:31Z"), "20:01:31");
        let line = render("billing-1", &event());
        assert!(
            line.contains("sa/reporting → billing  POST /charges  403  0.50ms  DENY dec-1  trace=abc  x-debug=\"1\""),
            "{line}"
        );
        let lost = TapEvent {
            lost: Some(7),
            ..event()
        };
        assert!(render("billing-1", &lost).contains("7 events lost"));
    }

    #[test]
    fn filters_become_the_sidecars_query() {
        let args = TapArgs {
            workload: "billing".to_owned(),
            to: Some("billing".to_owned()),
            route: Some("/charges/{id}".to_owned()),
            denied: true,
            direction: None,
            headers: vec!["x-debug".to_owned()],
            limit: Some(3),
            output: Output::Json,
            state_dir: PathBuf::new(),
        };
        assert_eq!(
            args.target(),
            "/tap?service=billing&route=%2Fcharges%2F%7Bid%7D&denied=true&limit=3&header=x%2Ddebug"
        );
    }
}
