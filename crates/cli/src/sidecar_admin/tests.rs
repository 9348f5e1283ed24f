use super::*;

#[test]
fn windows_are_whole_seconds_up_to_ten_minutes() {
    let secs = |s: &str| s.parse::<Window>().map(Window::secs).ok();
    assert_eq!(secs("1m"), Some(60));
    assert_eq!(secs("10s"), Some(10));
    assert_eq!(secs("10m"), Some(600));
    assert_eq!(secs("11m"), None);
    assert_eq!(secs("1500ms"), None);
    assert_eq!(secs("0s"), None);
}

#[test]
fn sidecars_are_found_through_their_ready_files() {
    let state = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let workloads = state.path().join("workloads");
    std::fs::create_dir(&workloads).unwrap_or_else(|e| panic!("{e}"));
    let ready = |file: &str, admin: Option<&str>| {
        let json = serde_json::json!({
            "inbound": "127.0.0.1:1", "outbound": "127.0.0.1:2",
            "spiffe_id": "spiffe://td/ns/default/sa/x", "admin": admin,
        });
        std::fs::write(workloads.join(file), json.to_string()).unwrap_or_else(|e| panic!("{e}"));
    };
    ready("billing.json", Some("127.0.0.1:10"));
    ready("billing.1.json", Some("127.0.0.1:11"));
    ready("store.json", Some("127.0.0.1:12"));
    ready("reporting.json", None);
    std::fs::write(workloads.join("torn.json"), "{").unwrap_or_else(|e| panic!("{e}"));
    // A ready file being replaced: its temporary sibling is no sidecar.
    std::fs::write(workloads.join("store.json.tmp.7"), "{").unwrap_or_else(|e| panic!("{e}"));
    let found = discover(state.path()).unwrap_or_else(|e| panic!("{e:#}"));
    let (_, skipped) = scan(state.path());
    let files: Vec<&str> = skipped.iter().map(|s| s.file.as_str()).collect();
    assert_eq!(files, ["reporting.json", "torn.json"]);
    // What must see every sidecar refuses, naming them.
    let err = discover_all(state.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("workloads/reporting.json: the sidecar runs without an admin listener")
            && err.contains("workloads/torn.json: not a ready file"),
        "{err}"
    );
    let summary: Vec<(&str, u16, &str, u16)> = found
        .iter()
        .map(|s| {
            (
                s.workload.as_str(),
                s.replica,
                s.label.as_str(),
                s.admin.port(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("billing", 0, "billing-0", 10),
            ("billing", 1, "billing-1", 11),
            ("store", 0, "store", 12)
        ]
    );
    let billing = of_workload(found.clone(), "billing").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(billing.len(), 2);
    let err = of_workload(found, "nope")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("running workloads: billing, store"), "{err}");
}

#[test]
fn streamed_lines_are_split_across_frames_and_over_long_ones_dropped() {
    let mut split = Ndjson::default();
    assert_eq!(split.push(b"{\"a\":1}\n{\"b"), ["{\"a\":1}"]);
    assert_eq!(split.push(b"\":2}\r\n\n"), ["{\"b\":2}"]);
    let long = vec![b'x'; MAX_LINE + 1];
    assert!(split.push(&long).is_empty());
    assert!(split.push(b"xx\nok\n").iter().eq(["ok"]));
}

#[test]
fn query_values_are_percent_encoded() {
    assert_eq!(query(&[]), "");
    assert_eq!(
        query(&[("route", "/charges/{id}"), ("denied", "true")]),
        "?route=%2Fcharges%2F%7Bid%7D&denied=true"
    );
}
