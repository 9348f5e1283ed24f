//! Issue 13's "done when" for the CLI, end to end against a running
//! `examples/store-billing` with traffic: `stat` agrees with the sidecars' own
//! `meshwork_requests_total` counters, `top --once` draws a frame, `edges` shows store →
//! billing over mTLS, `tap --denied` streams reporting's forbidden call with its decision id,
//! and `policy replay` reports what a candidate without store's POST rule would break.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::curl_json;
use crate::harness::{Up, eventually, example, meshwork};
use crate::policy::scrape_replica_metrics;

const TD: &str = "spiffe://meshwork.local/ns/default/sa";
/// Rule 0's first `to` of billing-charges in examples/store-billing/policies.yaml.
const STORE_POST: &str =
    "        - methods: [POST]\n          paths:\n            - exact: /charges\n";
/// How long the sidecars may take to show what they counted (they sample once a second):
/// a hang guard, not a timed assertion.
const SETTLE: Duration = Duration::from_secs(20);

/// `POST http://billing/charges` as `workload`: the status and the JSON body.
fn charge(up: &Up, workload: &str) -> (u16, Value) {
    let args = [
        "curl",
        "-sS",
        "-X",
        "POST",
        "-w",
        "\n%{http_code}",
        "http://billing/charges",
    ];
    curl_json(&up.exec(workload, &args))
}

/// `meshwork ARGS… --state-dir <up's>`: exit code and stdout.
fn run(up: &Up, args: &[&str]) -> (i32, String) {
    let out = meshwork()
        .args(args)
        .arg("--state-dir")
        .arg(up.state.path())
        .output()
        .expect("run meshwork");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 1,
        "meshwork {args:?}: exit {code}: {stderr}"
    );
    (code, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The sum of `meshwork_requests_total` series of `workload`'s sidecars (every replica)
/// whose labels include every one of `labels` (`key="value"`).
fn counted(up: &Up, workload: &str, replicas: u16, labels: &[String]) -> u64 {
    (0..replicas)
        .map(|r| scrape_replica_metrics(up, workload, r))
        .flat_map(|text| {
            text.lines()
                .filter(|l| l.starts_with("meshwork_requests_total{"))
                .filter(|l| labels.iter().all(|label| l.contains(label.as_str())))
                .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// The `stat --by route -o json` row of `workload`'s `direction` `POST /charges`.
fn stat_row(stat: &Value, workload: &str, direction: &str) -> Option<Value> {
    stat["rows"].as_array()?.iter().find_map(|row| {
        (row["workload"] == workload
            && row["direction"] == direction
            && row["service"] == "billing"
            && row["method"] == "POST"
            && row["route"] == "/charges")
            .then(|| row.clone())
    })
}

#[test]
fn stat_top_edges_and_tap_show_the_store_billing_traffic() {
    let up = Up::start(&example("store-billing"));
    for _ in 0..3 {
        assert_eq!(charge(&up, "store").0, 201);
    }
    assert_eq!(charge(&up, "reporting").0, 403);

    assert_stat_agrees_with_the_sidecars_counters(&up);
    assert_top_draws_a_frame(&up);
    assert_edges_show_store_to_billing_over_mtls(&up);
    assert_tap_streams_the_denial_with_its_decision_id(&up);
}

fn assert_stat_agrees_with_the_sidecars_counters(up: &Up) {
    let series = |direction: &str| {
        [
            format!("direction=\"{direction}\""),
            "service=\"billing\"".to_owned(),
            "route=\"/charges\"".to_owned(),
            "method=\"POST\"".to_owned(),
        ]
    };
    let inbound = counted(up, "billing", 2, &series("inbound"));
    let outbound = counted(up, "store", 1, &series("outbound"));
    assert_eq!(inbound, 4, "3 charges by store, 1 refusal of reporting");
    assert_eq!(outbound, 3);
    let mut last = Value::Null;
    eventually("stat to count what the sidecars counted", SETTLE, || {
        let (_, out) = run(
            up,
            &["stat", "--by", "route", "--window", "10m", "-o", "json"],
        );
        last = json(&out);
        let requests = |w, d| stat_row(&last, w, d).and_then(|r| r["requests"].as_u64());
        requests("billing", "inbound") == Some(inbound)
            && requests("store", "outbound") == Some(outbound)
    });
    let row = stat_row(&last, "store", "outbound").unwrap();
    assert_eq!(row["success_rate"], 1.0, "{row}");
    assert_eq!(
        (row["successes"].as_u64(), row["replicas"].as_u64()),
        (Some(3), Some(1))
    );
    for field in ["rps", "p50_ms", "p95_ms", "p99_ms", "mean_ms"] {
        assert!(
            row[field].as_f64().is_some_and(|v| v > 0.0),
            "{field}: {row}"
        );
    }
    let p = |q: &str| row[q].as_f64().unwrap();
    assert!(
        p("p50_ms") <= p("p95_ms") && p("p95_ms") <= p("p99_ms"),
        "{row}"
    );
    // Billing's two replicas are one row; reporting's 403 is not a failure (non-5xx).
    let billing = stat_row(&last, "billing", "inbound").unwrap();
    assert_eq!(billing["success_rate"], 1.0, "{billing}");
    assert_eq!(last["by"], "route");
    assert_eq!(last["window_secs"], 600);
    assert_eq!(last["sidecars"].as_array().map(Vec::len), Some(5), "{last}");
    assert_eq!(last["unreachable"], serde_json::json!([]));

    // The default table: one row per workload and direction, inbound and outbound.
    let (_, table) = run(up, &["stat", "billing", "--window", "10m"]);
    let head = table.lines().next().unwrap_or_default();
    for column in [
        "WORKLOAD",
        "DIRECTION",
        "REQUESTS",
        "SUCCESS",
        "RPS",
        "P50",
        "P95",
        "P99",
    ] {
        assert!(head.contains(column), "{table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("billing ") && l.contains("inbound")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("store ") && l.contains("outbound")),
        "{table}"
    );
}

fn assert_top_draws_a_frame(up: &Up) {
    let (code, frame) = run(up, &["top", "--once", "--window", "10m"]);
    assert_eq!(code, 0);
    assert!(frame.starts_with("meshwork top"), "{frame}");
    assert!(
        !frame.contains('\x1b'),
        "--once does not clear the screen: {frame:?}"
    );
    assert!(
        frame
            .lines()
            .any(|l| l.starts_with("billing ") && l.contains("inbound")),
        "{frame}"
    );
}

fn assert_edges_show_store_to_billing_over_mtls(up: &Up) {
    let (_, out) = run(up, &["edges", "--window", "10m", "-o", "json"]);
    let doc = json(&out);
    let edge = doc["edges"]
        .as_array()
        .and_then(|edges| {
            edges.iter().find(|e| {
                e["caller"] == format!("{TD}/store") && e["callee"] == format!("{TD}/billing")
            })
        })
        .unwrap_or_else(|| panic!("no store → billing edge: {doc:#}"));
    assert_eq!(edge["mtls"], true, "{edge}");
    assert_eq!(edge["requests"], 3, "{edge}");
    assert_eq!(edge["success_rate"], 1.0, "{edge}");
    assert_eq!(edge["seen_by"], "caller", "{edge}");
    let (_, table) = run(up, &["edges", "--window", "10m"]);
    assert!(
        table.lines().any(|l| {
            l.starts_with(&format!("{TD}/store "))
                && l.contains(&format!("{TD}/billing "))
                && l.contains(" yes ")
        }),
        "{table}"
    );
}

/// A running `meshwork tap …` whose stdout lines arrive on a channel.
struct Tap {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Tap {
    fn start(up: &Up, args: &[&str]) -> Tap {
        let mut child = meshwork()
            .arg("tap")
            .args(args)
            .arg("--state-dir")
            .arg(up.state.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn meshwork tap");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Tap { child, lines }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Denied calls are repeated until one shows: the tap only sees requests made after it
/// connected, and nothing says when that is.
fn assert_tap_streams_the_denial_with_its_decision_id(up: &Up) {
    for output in ["json", "table"] {
        let tap = Tap::start(up, &["billing", "--denied", "-o", output]);
        let mut ids = HashSet::new();
        let mut seen = None;
        eventually("tap --denied to print reporting's denial", SETTLE, || {
            let (code, body) = charge(up, "reporting");
            assert_eq!(code, 403, "{body}");
            ids.insert(body["decision_id"].as_str().unwrap().to_owned());
            while let Ok(line) = tap.lines.recv_timeout(Duration::from_millis(500)) {
                if ids.iter().any(|id| line.contains(id.as_str())) {
                    seen = Some(line);
                    return true;
                }
            }
            false
        });
        let line = seen.unwrap();
        if output == "table" {
            assert!(
                line.contains(&format!("{TD}/reporting → billing"))
                    && line.contains("POST /charges")
                    && line.contains(" 403 ")
                    && line.contains("DENY "),
                "{line}"
            );
            continue;
        }
        let event = json(&line);
        assert_eq!(event["direction"], "inbound", "{event}");
        assert_eq!(event["caller"], format!("{TD}/reporting"), "{event}");
        assert_eq!(event["service"], "billing", "{event}");
        assert_eq!(
            (event["method"].as_str(), event["route"].as_str()),
            (Some("POST"), Some("/charges"))
        );
        assert_eq!(event["status_code"], 403, "{event}");
        assert_eq!(event["decision"], "deny", "{event}");
        assert!(event["latency_ms"].as_f64().is_some(), "{event}");
        assert!(
            event["time"].as_str().is_some_and(|t| t.contains('T')),
            "{event}"
        );
        // --denied: nothing allowed came through.
        while let Ok(line) = tap.lines.try_recv() {
            assert_eq!(json(&line)["decision"], "deny", "{line}");
        }
    }
}

/// A copy of the example in a temporary directory, `edit` applied to its policies.yaml.
fn candidate(edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(example("store-billing")).expect("example") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    let policies = dir.path().join("policies.yaml");
    let text = std::fs::read_to_string(&policies).expect("policies.yaml");
    std::fs::write(&policies, edit(text)).expect("write policies.yaml");
    dir
}

#[test]
fn policy_replay_reports_what_a_candidate_would_newly_deny() {
    let up = Up::start(&example("store-billing"));
    const CHARGES: u64 = 4;
    for _ in 0..CHARGES {
        assert_eq!(charge(&up, "store").0, 201);
    }
    assert_eq!(charge(&up, "reporting").0, 403);
    let without_post = candidate(|text| {
        assert!(
            text.contains(STORE_POST),
            "the example changed: update STORE_POST"
        );
        text.replace(STORE_POST, "")
    });
    let without_post = without_post.path().to_str().unwrap();

    let mut replay = Value::Null;
    eventually(
        "the sidecars' record to hold store's charges",
        SETTLE,
        || {
            let (code, out) = run(
                &up,
                &[
                    "policy",
                    "replay",
                    "--candidate",
                    without_post,
                    "-o",
                    "json",
                ],
            );
            replay = json(&out);
            let denied = &replay["replay"]["newly_denied"];
            code == 1 && denied[0]["count"].as_u64() == Some(CHARGES)
        },
    );
    let denied = replay["replay"]["newly_denied"].as_array().unwrap();
    assert_eq!(denied.len(), 1, "{replay:#}");
    let change = &denied[0];
    assert_eq!(change["service"], "billing");
    assert_eq!(change["caller"], format!("{TD}/store"));
    assert_eq!(
        (change["method"].as_str(), change["route"].as_str()),
        (Some("POST"), Some("/charges"))
    );
    assert_eq!(change["baseline"]["kind"], "explicit_allow", "{change}");
    assert_eq!(change["candidate"]["kind"], "default_deny", "{change}");
    assert_eq!(
        replay["replay"]["newly_allowed"],
        serde_json::json!([]),
        "{replay:#}"
    );

    let (code, text) = run(&up, &["policy", "replay", "--candidate", without_post]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.lines().any(|l| {
            l.starts_with("billing ")
                && l.contains(&format!("{TD}/store "))
                && l.contains(" POST ")
                && l.contains(" /charges ")
                && l.contains(&format!(" {CHARGES} "))
                && l.contains("default deny")
        }),
        "{text}"
    );

    let unchanged = candidate(|text| text);
    let unchanged = unchanged.path().to_str().unwrap();
    let (code, text) = run(&up, &["policy", "replay", "--candidate", unchanged]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("newly denied: nothing") && text.contains("newly allowed: nothing"),
        "{text}"
    );

    assert_an_exported_record_replays_the_same(&up, without_post);
}

/// `policy record > FILE`, then `policy replay --record FILE --baseline DIR` without the
/// mesh.
fn assert_an_exported_record_replays_the_same(up: &Up, candidate: &str) {
    let (code, record) = run(up, &["policy", "record"]);
    assert_eq!(code, 0);
    let records = json(&record);
    assert!(
        records.as_array().is_some_and(|r| r.len() == 5),
        "one record per sidecar: {records:#}"
    );
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), &record).expect("write record");
    let out = meshwork()
        .args(["policy", "replay", "--candidate", candidate, "--record"])
        .arg(file.path())
        .arg("--baseline")
        .arg(example("store-billing"))
        .args(["-o", "json"])
        .output()
        .expect("run replay --record");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replay = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        replay["replay"]["newly_denied"][0]["count"], 4,
        "{replay:#}"
    );
}
