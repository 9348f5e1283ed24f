//! Writing metric families as OpenMetrics text — the one encoder of the admin `/metrics`
//! (identity gauges, request metrics, tap counters; `crate::prometheus` says why not
//! prometheus-client's) — the format it serves,
//! which Prometheus scrapes natively and whose sample lines are also valid in the older
//! Prometheus text format: `# HELP`/`# TYPE` per family, counters named `<family>_total`,
//! label values quoted and escaped.
//!
//! Writing to a `String` cannot fail, so the `fmt::Result`s are dropped here, once.

use std::fmt::Write;

/// The kind of a family, as written in its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A monotonic counter (samples are `<family>_total`).
    Counter,
    /// A histogram (`_bucket`, `_sum`, `_count` samples).
    Histogram,
    /// A value that goes up and down (the sample is named as the family).
    Gauge,
    /// Constant facts as labels (one `<family>_info` sample, value 1).
    Info,
}

/// Writes the `# HELP` and `# TYPE` lines of `family`. `help` is written as given: keep it
/// free of `\\` and newlines (they would need escaping).
pub fn family(out: &mut String, family: &str, kind: Kind, help: &str) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Histogram => "histogram",
        Kind::Gauge => "gauge",
        Kind::Info => "info",
    };
    let _ = writeln!(out, "# HELP {family} {help}");
    let _ = writeln!(out, "# TYPE {family} {kind}");
}

/// Writes one sample line: `name{k="v",…} value`. Values are escaped.
pub fn sample(
    out: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    value: impl std::fmt::Display,
) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            escape_label_value(value, out);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Appends `value` escaped for a quoted label value: `\` → `\\`, `"` → `\"`, newline →
/// `\n` (the exposition formats' three escapes); everything else as is.
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_per_the_exposition_rules() {
        let mut out = String::new();
        escape_label_value("a\\b\"c\nd/{id}é", &mut out);
        assert_eq!(out, r#"a\\b\"c\nd/{id}é"#);
    }

    #[test]
    fn samples_and_family_headers() {
        let mut out = String::new();
        family(&mut out, "meshwork_requests", Kind::Counter, "Requests.");
        sample(
            &mut out,
            "meshwork_requests_total",
            &[("route", "/charges/{id}"), ("peer", "say \"hi\"")],
            2,
        );
        sample(&mut out, "meshwork_x", &[], 0.25);
        assert_eq!(
            out,
            "# HELP meshwork_requests Requests.\n# TYPE meshwork_requests counter\n\
             meshwork_requests_total{route=\"/charges/{id}\",peer=\"say \\\"hi\\\"\"} 2\n\
             meshwork_x 0.25\n"
        );
    }
}
