//! The dashboard's HTML: the page (`page.html`: inline CSS and script, no external assets)
//! and a denial's explanation, rendered on the server.

use std::fmt::Write as _;
use std::path::Path;

use api::contract::observe::Direction;

use super::denials::Denial;

const INDEX: &str = include_str!("page.html");

/// The page, naming the state directory it shows.
pub fn index(state: &Path) -> String {
    INDEX.replace("__STATE_DIR__", &escape(&state.display().to_string()))
}

/// `&`, `<`, `>`, `"` and `'` as entities.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const HEAD: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
    <title>meshwork: decision</title><style>body{font:14px/1.5 system-ui,sans-serif;\
    margin:24px;color:#1d2330}th{text-align:left;color:#667085;padding-right:1.5em;white-space:nowrap;\
    vertical-align:top}td{font-family:ui-monospace,monospace;font-size:13px}\
    pre{background:#f2f4f7;padding:8px 12px;border-radius:4px}</style></head><body>";

/// The explanation of one denial: what the tap reported and what decided it.
pub fn explain(d: &Denial, state: &Path) -> String {
    let mut html = String::from(HEAD);
    let _ = write!(
        html,
        "<h1>Denied: {} {} {}</h1><table>",
        escape(&d.method),
        escape(&d.service),
        escape(&d.route)
    );
    for (name, value) in facts(d) {
        let _ = write!(html, "<tr><th>{name}</th><td>{}</td></tr>", escape(&value));
    }
    let _ = write!(html, "</table><p>{}</p>", escape(&d.note));
    if d.direction == Direction::Inbound {
        let from = d.caller_workload.as_deref().unwrap_or(&d.caller);
        let command = format!(
            "meshwork policy explain --state-dir {} --from {from} --to {} {} {}",
            state.display(),
            d.service,
            d.method,
            d.route
        );
        let _ = write!(
            html,
            "<p>The same question from a terminal:</p><pre>{}</pre>",
            escape(&command)
        );
    }
    html.push_str("<p><a href=\"/\">back to the dashboard</a></p></body></html>");
    html
}

/// The explanation's table: name → value.
fn facts(d: &Denial) -> Vec<(&'static str, String)> {
    let mut rows: Vec<(&str, String)> = vec![
        ("decision id", d.decision_id.clone().unwrap_or_default()),
        ("time", d.time.clone()),
        (
            "caller",
            match &d.caller_workload {
                Some(w) => format!("{} ({w})", d.caller),
                None => d.caller.clone(),
            },
        ),
        ("service", d.service.clone()),
        ("method", d.method.clone()),
        ("route", d.route.clone()),
        ("status", d.status_code.to_string()),
        (
            "decided by",
            format!("{} sidecar, replica {}", d.workload, d.replica),
        ),
    ];
    if let Some(trace) = &d.trace_id {
        rows.push(("trace id", trace.clone()));
    }
    if let Some(by) = d.named_by {
        rows.push(("policy", d.policy.clone().unwrap_or_else(|| "–".into())));
        rows.push(("rule", d.rule.map_or_else(|| "–".into(), |n| n.to_string())));
        rows.push(("named by", by.to_owned()));
    }
    if let Some(r) = &d.reason {
        let kind = serde_json::to_value(r.kind).unwrap_or_default();
        rows.push(("matcher", r.matcher.clone()));
        rows.push(("kind", kind.as_str().unwrap_or_default().to_owned()));
    }
    rows
}

/// A decision id the dashboard does not remember.
pub fn not_found(id: &str) -> String {
    format!(
        "{HEAD}<h1>Unknown decision</h1><p>The dashboard keeps the last {} denials since it \
         started; <code>{}</code> is not among them. The sidecar's log line with this id \
         names the policy and rule.</p><p><a href=\"/\">back to the dashboard</a></p></body></html>",
        super::denials::RING,
        escape(id)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_explanation_escapes_what_peers_sent() {
        let d = Denial {
            decision_id: Some("00ff00ff00ff00ff".into()),
            time: "2026-12-05T19:00:00Z".into(),
            workload: "billing".into(),
            replica: 1,
            direction: Direction::Inbound,
            caller: "spiffe://meshwork.local/ns/default/sa/reporting".into(),
            caller_workload: Some("reporting".into()),
            service: "billing".into(),
            method: "POST".into(),
            route: "/<script>".into(),
            status_code: 403,
            trace_id: None,
            policy: None,
            rule: None,
            named_by: None,
            reason: None,
            note: "n".into(),
        };
        let html = explain(&d, Path::new("/s"));
        assert!(
            html.contains("/&lt;script&gt;") && !html.contains("<script>"),
            "{html}"
        );
        assert!(
            html.contains("--from reporting --to billing POST"),
            "{html}"
        );
        assert!(index(Path::new("/a<b")).contains("/a&lt;b"));
    }
}
