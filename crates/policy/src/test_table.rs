//! The model behind `meshwork policy test FILE`: a table of expected decisions, run against
//! an [`Engine`], giving a report with a diff-like [`Display`](std::fmt::Display).
//!
//! ```yaml
//! cases:
//!   - name: store may create charges
//!     from: store                  # workload name (resolved by the caller) or spiffe:// ID
//!     to: billing
//!     method: POST
//!     path: /charges
//!     expect: allow
//!   - name: anonymous callers are denied
//!     to: billing                  # no `from`: a caller without identity
//!     method: GET
//!     path: /charges
//!     headers: { x-debug: "1" }
//!     expect: deny
//!   - name: store may query billing's port 5432 (opaque TCP)
//!     from: store
//!     to: billing
//!     port: 5432                   # an inbound case with `port`: a TCP connection
//!     expect: allow
//!   - name: billing may reach stripe
//!     egress: true
//!     from: billing
//!     host: api.stripe.com
//!     port: 443
//!     expect: allow
//! ```
//!
//! Inbound cases need `to`, `method` and `path`; inbound TCP cases `to` and `port`; egress cases need `from`, `host` and `port`
//! and may add `method`/`path` for plain-HTTP egress. Reading the file and resolving workload
//! names are the caller's job: [`TestTable::run`] takes a resolver closure.

use std::collections::BTreeMap;
use std::fmt;

use identity::SpiffeId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::decision::Decision;
use crate::dns::{DnsError, Host};
use crate::engine::Engine;
use crate::path::{NormalizedPath, PathError};
use crate::request::{EgressRequest, Request, TcpRequest};

/// A table of cases, as written in a policy test file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestTable {
    /// The cases, run in order.
    pub cases: Vec<TestCase>,
}

/// One case; see the [module docs](self) for which fields each kind needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestCase {
    /// Shown in the report.
    pub name: String,
    /// `true` for an egress case.
    #[serde(default)]
    pub egress: bool,
    /// Caller: a `spiffe://` ID or a workload name for the resolver. Absent on an inbound
    /// case: a caller without verified identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Inbound: the target service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// HTTP method (required inbound; optional egress, plain HTTP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Raw request path, normalised before deciding (required inbound; optional egress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Inbound request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Egress: destination host name or IP literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Egress: destination port. Inbound: the port of an opaque TCP connection (the case
    /// then has no method, path or headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The expected outcome.
    pub expect: Expect,
}

/// Expected outcome of a case.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The request is allowed.
    Allow,
    /// The request is denied.
    #[default]
    Deny,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
        })
    }
}

/// Why a case could not be run (it then counts as failed).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TestTableError {
    /// A required field is missing for this kind of case.
    #[error("{kind} cases need '{field}'")]
    Missing {
        /// `inbound` or `egress`.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A field that this kind of case does not use.
    #[error("{kind} cases do not use '{field}'")]
    NotUsed {
        /// `inbound` or `egress`.
        kind: &'static str,
        /// The superfluous field.
        field: &'static str,
    },
    /// `from` is neither a valid SPIFFE ID nor a workload the resolver knows.
    #[error("from: {0:?} is neither a valid spiffe:// ID nor a known workload")]
    UnknownCaller(String),
    /// `path` is refused by the normaliser.
    #[error("path: {0}")]
    Path(#[source] PathError),
    /// `host` is neither a DNS name nor an IP literal.
    #[error("host: {0}")]
    Host(#[source] DnsError),
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseOutcome {
    /// The case's name.
    pub name: String,
    /// What the table expected.
    pub expected: Expect,
    /// The engine's decision, or why the case could not be run.
    pub result: Result<Decision, TestTableError>,
}

impl CaseOutcome {
    /// Whether the case ran and the decision matched the expectation.
    pub fn passed(&self) -> bool {
        self.result
            .as_ref()
            .is_ok_and(|d| d.allowed == (self.expected == Expect::Allow))
    }
}

/// All outcomes, in table order. `Display` is the diff-like report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestReport {
    /// One outcome per case.
    pub outcomes: Vec<CaseOutcome>,
}

impl TestReport {
    /// Whether every case passed (a CLI exits non-zero otherwise).
    pub fn passed(&self) -> bool {
        self.outcomes.iter().all(CaseOutcome::passed)
    }

    /// Number of failed (or unrunnable) cases.
    pub fn failures(&self) -> usize {
        self.outcomes.iter().filter(|o| !o.passed()).count()
    }
}

impl TestTable {
    /// Runs every case against `engine`. `resolve` maps a workload name (any `from` that does
    /// not start with `spiffe://`) to its SPIFFE ID; returning `None` fails that case.
    pub fn run(&self, engine: &Engine, resolve: impl Fn(&str) -> Option<SpiffeId>) -> TestReport {
        let outcomes = self
            .cases
            .iter()
            .map(|case| CaseOutcome {
                name: case.name.clone(),
                expected: case.expect,
                result: case.decide(engine, &resolve),
            })
            .collect();
        TestReport { outcomes }
    }
}

impl TestCase {
    fn decide(
        &self,
        engine: &Engine,
        resolve: &dyn Fn(&str) -> Option<SpiffeId>,
    ) -> Result<Decision, TestTableError> {
        let caller = self
            .from
            .as_deref()
            .map(|from| resolve_caller(from, resolve))
            .transpose()?;
        if self.egress {
            let kind = "egress";
            not_used(kind, "to", self.to.is_some())?;
            not_used(kind, "headers", !self.headers.is_empty())?;
            let caller = caller.ok_or(TestTableError::Missing {
                kind,
                field: "from",
            })?;
            let host: Host = required(kind, "host", &self.host)?
                .parse()
                .map_err(TestTableError::Host)?;
            let port = self.port.ok_or(TestTableError::Missing {
                kind,
                field: "port",
            })?;
            let path = self
                .path
                .as_deref()
                .map(NormalizedPath::parse)
                .transpose()
                .map_err(TestTableError::Path)?;
            Ok(engine.egress(&EgressRequest {
                caller: &caller,
                host: &host,
                port,
                method: self.method.as_deref(),
                path: path.as_ref(),
            }))
        } else if let Some(port) = self.port {
            let kind = "inbound TCP";
            not_used(kind, "host", self.host.is_some())?;
            not_used(kind, "method", self.method.is_some())?;
            not_used(kind, "path", self.path.is_some())?;
            not_used(kind, "headers", !self.headers.is_empty())?;
            Ok(engine.authorize_tcp(&TcpRequest {
                target_service: required(kind, "to", &self.to)?,
                caller: caller.as_ref(),
                port,
            }))
        } else {
            let kind = "inbound";
            not_used(kind, "host", self.host.is_some())?;
            let path = NormalizedPath::parse(required(kind, "path", &self.path)?)
                .map_err(TestTableError::Path)?;
            Ok(engine.authorize(&Request {
                target_service: required(kind, "to", &self.to)?,
                caller: caller.as_ref(),
                method: required(kind, "method", &self.method)?,
                path: &path,
                headers: &self.headers,
            }))
        }
    }
}

fn resolve_caller(
    from: &str,
    resolve: &dyn Fn(&str) -> Option<SpiffeId>,
) -> Result<SpiffeId, TestTableError> {
    let id = if from.starts_with("spiffe://") {
        from.parse().ok()
    } else {
        resolve(from)
    };
    id.ok_or_else(|| TestTableError::UnknownCaller(from.to_owned()))
}

fn required<'a>(
    kind: &'static str,
    field: &'static str,
    value: &'a Option<String>,
) -> Result<&'a str, TestTableError> {
    value
        .as_deref()
        .ok_or(TestTableError::Missing { kind, field })
}

fn not_used(kind: &'static str, field: &'static str, present: bool) -> Result<(), TestTableError> {
    if present {
        Err(TestTableError::NotUsed { kind, field })
    } else {
        Ok(())
    }
}

impl fmt::Display for TestReport {
    /// ```text
    /// ok   store may create charges
    /// FAIL reporting may create charges
    ///   - expected allow
    ///   + got deny (default deny: service billing is targeted by ALLOW policies ...)
    /// 2 cases: 1 passed, 1 failed
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in &self.outcomes {
            match &o.result {
                Ok(_) if o.passed() => writeln!(f, "ok   {}", o.name)?,
                Ok(decision) => {
                    writeln!(f, "FAIL {}", o.name)?;
                    writeln!(f, "  - expected {}", o.expected)?;
                    writeln!(f, "  + got {decision}")?;
                }
                Err(e) => {
                    writeln!(f, "FAIL {}", o.name)?;
                    writeln!(f, "  - expected {}", o.expected)?;
                    writeln!(f, "  + case could not run: {e}")?;
                }
            }
        }
        let failed = self.failures();
        write!(
            f,
            "{} cases: {} passed, {failed} failed",
            self.outcomes.len(),
            self.outcomes.len() - failed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::PolicySet;

    fn engine() -> Engine {
        let set: PolicySet = serde_saphyr::from_str(
            r#"
authorization:
  store-may-charge:
    targetService: billing
    action: ALLOW
    rules:
      - from: [{spiffeId: "spiffe://td/store"}]
        to: [{methods: [POST], paths: [{exact: /charges}]}, {ports: [5432]}]
egress:
  billing-to-stripe:
    from: [{spiffeId: "spiffe://td/billing"}]
    to: [{host: api.stripe.com, ports: [443]}]
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Engine::compile(&set).unwrap_or_else(|e| panic!("{e}"))
    }

    fn resolve(name: &str) -> Option<SpiffeId> {
        format!("spiffe://td/{name}")
            .parse()
            .ok()
            .filter(|_| name != "ghost")
    }

    fn table(yaml: &str) -> TestTable {
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn passing_table() {
        let report = table(
            r#"
cases:
  - {name: store charges, from: store, to: billing, method: POST, path: /charges/, expect: allow}
  - {name: anonymous, to: billing, method: POST, path: /charges, expect: deny}
  - {name: billing to stripe, egress: true, from: "spiffe://td/billing", host: API.stripe.com, port: 443, expect: allow}
  - {name: store to stripe, egress: true, from: store, host: api.stripe.com, port: 443, expect: deny}
"#,
        )
        .run(&engine(), resolve);
        assert!(report.passed(), "{report}");
        assert!(report.to_string().ends_with("4 cases: 4 passed, 0 failed"));
    }

    #[test]
    fn mismatches_and_broken_cases_fail_with_a_diff() {
        let report = table(
            r#"
cases:
  - {name: wrong expectation, from: reporting, to: billing, method: POST, path: /charges, expect: allow}
  - {name: ghost, from: ghost, to: billing, method: POST, path: /charges, expect: deny}
  - {name: no port, egress: true, from: billing, host: api.stripe.com, expect: allow}
  - {name: bad path, to: billing, method: GET, path: "/a%2Fb", expect: deny}
"#,
        )
        .run(&engine(), resolve);
        assert_eq!(report.failures(), 4);
        let text = report.to_string();
        assert!(
            text.contains("FAIL wrong expectation\n  - expected allow\n  + got deny (default deny: service billing"),
            "{text}"
        );
        assert!(text.contains("from: \"ghost\" is neither"), "{text}");
        assert!(text.contains("egress cases need 'port'"), "{text}");
        assert!(text.contains("path: encoded '/'"), "{text}");
        assert!(text.ends_with("4 cases: 0 passed, 4 failed"));
    }

    #[test]
    fn inbound_cases_with_a_port_are_tcp_connections() {
        let report = table(
            r#"
cases:
  - {name: store queries, from: store, to: billing, port: 5432, expect: allow}
  - {name: other port, from: store, to: billing, port: 5433, expect: deny}
  - {name: reporting queries, from: reporting, to: billing, port: 5432, expect: deny}
  - {name: tcp with a path, from: store, to: billing, port: 5432, path: /x, expect: deny}
"#,
        )
        .run(&engine(), resolve);
        let text = report.to_string();
        assert_eq!(report.failures(), 1, "{text}");
        assert!(
            text.contains("inbound TCP cases do not use 'path'"),
            "{text}"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(
            serde_saphyr::from_str::<TestTable>(
                "cases: [{name: x, expect: allow, expected: deny}]"
            )
            .is_err()
        );
        assert!(serde_saphyr::from_str::<TestTable>("cases: [{name: x, expect: maybe}]").is_err());
    }
}
