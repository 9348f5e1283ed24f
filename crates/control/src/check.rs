//! `meshwork check`: turns what control and an agent report into findings.
//!
//! Pure: every input, including the local clock, is an argument, so expiry rules are
//! tested at chosen instants. The rules:
//! - a root CA that has expired is an error; one expiring within `ca_warn` is a
//!   warning (unless a newer root is already published to take over);
//! - an SVID that has expired is an error; one with less than a quarter of its
//!   lifetime left is a warning — renewal happens at 40–50 %, so it is overdue;
//! - control or the agent unreachable, or the agent cut off from control, is an error;
//! - a clock more than [`identity::CLOCK_SKEW_ALLOWANCE`] away from ours is an error
//!   (SVIDs are backdated by that much and no more), more than 5 s a warning.

use std::fmt;

use api::contract::admin::{AgentStatus, AuthorityState, ControlStatus};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Fine.
    Ok,
    /// Needs attention before it becomes a problem.
    Warn,
    /// A problem now: `meshwork check` exits non-zero.
    Error,
}

/// One line of `meshwork check` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// What it is about, e.g. `CA #1`.
    pub subject: String,
    /// What was found.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok   ",
            Level::Warn => "WARN ",
            Level::Error => "ERROR",
        };
        write!(f, "{tag} {:<28} {}", self.subject, self.message)
    }
}

/// What `meshwork check` gathered; `Err` holds why a source could not be asked.
#[derive(Debug, Clone)]
pub struct CheckInput {
    /// The control plane's status.
    pub control: Result<ControlStatus, String>,
    /// The agent's status, when an agent was asked about.
    pub agent: Option<Result<AgentStatus, String>>,
    /// Our clock, unix seconds.
    pub now: i64,
    /// Warn about a CA this many seconds ahead of its expiry.
    pub ca_warn_secs: i64,
}

/// Evaluates every rule.
pub fn evaluate(input: &CheckInput) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |level, subject: &str, message: String| {
        out.push(Finding {
            level,
            subject: subject.to_owned(),
            message,
        })
    };
    match &input.control {
        Err(e) => push(Level::Error, "control plane", format!("unreachable: {e}")),
        Ok(c) => {
            push(
                Level::Ok,
                "control plane",
                format!(
                    "reachable; trust domain {}, {} entries, {} agents",
                    c.trust_domain, c.entries, c.agents
                ),
            );
            push_skew(&mut push, "control clock", c.now, input.now);
            let successor = c
                .authorities
                .iter()
                .any(|a| matches!(a.state, AuthorityState::Prepared { .. }));
            for a in &c.authorities {
                let subject = format!("CA #{} ({})", a.seq, state_name(a.state));
                let (level, message) = expiry(a.not_after, input.now, input.ca_warn_secs);
                let level =
                    if level == Level::Warn && successor && a.state == AuthorityState::Active {
                        Level::Ok
                    } else {
                        level
                    };
                push(level, &subject, message);
            }
        }
    }
    match &input.agent {
        None => {}
        Some(Err(e)) => push(Level::Error, "agent", format!("unreachable: {e}")),
        Some(Ok(a)) => evaluate_agent(a, input, &mut push),
    }
    out
}

fn evaluate_agent(a: &AgentStatus, input: &CheckInput, push: &mut impl FnMut(Level, &str, String)) {
    if a.control_connected {
        push(Level::Ok, "agent -> control", "connected".into());
    } else {
        let since = a
            .last_sync
            .map(|t| format!("last sync {}s ago", input.now - t))
            .unwrap_or_else(|| "never synced".into());
        push(
            Level::Error,
            "agent -> control",
            format!("disconnected ({since}); serving cached SVIDs"),
        );
    }
    push_skew(push, "agent clock", a.now, input.now);
    let ttl = input
        .control
        .as_ref()
        .map(|c| c.svid_ttl_secs)
        .unwrap_or(3600);
    let (level, message) = svid_expiry(a.node_svid_expires_at, input.now, ttl);
    push(level, "node SVID", format!("{} {message}", a.node_id));
    for (entry, id, exp) in &a.svids {
        let (level, message) = svid_expiry(*exp, input.now, ttl);
        push(level, &format!("SVID {entry}"), format!("{id} {message}"));
    }
}

fn push_skew(push: &mut impl FnMut(Level, &str, String), subject: &str, theirs: i64, ours: i64) {
    let skew = (theirs - ours).abs();
    let level = if skew > identity::CLOCK_SKEW_ALLOWANCE.whole_seconds() {
        Level::Error
    } else if skew > 5 {
        Level::Warn
    } else {
        Level::Ok
    };
    push(level, subject, format!("{skew}s from ours"));
}

fn state_name(s: AuthorityState) -> &'static str {
    match s {
        AuthorityState::Prepared { .. } => "prepared",
        AuthorityState::Active => "active",
        AuthorityState::Retiring { .. } => "retiring",
    }
}

fn expiry(not_after: i64, now: i64, warn_secs: i64) -> (Level, String) {
    let left = not_after - now;
    if left <= 0 {
        (Level::Error, format!("EXPIRED {} ago", human(-left)))
    } else if left <= warn_secs {
        (Level::Warn, format!("expires in {}", human(left)))
    } else {
        (Level::Ok, format!("expires in {}", human(left)))
    }
}

fn svid_expiry(not_after: i64, now: i64, ttl_secs: i64) -> (Level, String) {
    let (level, message) = expiry(not_after, now, ttl_secs / 4);
    let message = if level == Level::Warn {
        format!("{message}: renewal is overdue")
    } else {
        message
    };
    (level, message)
}

/// `90061` → `1d1h1m1s`, dropping zero parts.
pub fn human(secs: i64) -> String {
    let mut s = String::new();
    let mut rest = secs;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if rest >= size {
            s.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if s.is_empty() { "0s".into() } else { s }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use api::contract::admin::AuthorityStatus;

    const NOW: i64 = 1_800_000_000;

    fn control(ca_not_after: i64) -> ControlStatus {
        ControlStatus {
            trust_domain: "example.org".into(),
            svid_ttl_secs: 3600,
            authorities: vec![AuthorityStatus {
                seq: 1,
                state: AuthorityState::Active,
                not_after: ca_not_after,
            }],
            entries: 2,
            agents: 1,
            now: NOW,
        }
    }

    fn agent(svid_not_after: i64) -> AgentStatus {
        AgentStatus {
            node_id: "spiffe://example.org/meshwork/agent/x".into(),
            node_svid_expires_at: NOW + 3000,
            control_connected: true,
            control_replica: None,
            last_sync: Some(NOW),
            svids: vec![(
                "billing".into(),
                "spiffe://example.org/billing".into(),
                svid_not_after,
            )],
            ca_expires_at: vec![],
            now: NOW,
        }
    }

    fn input(c: ControlStatus, a: AgentStatus) -> CheckInput {
        CheckInput {
            control: Ok(c),
            agent: Some(Ok(a)),
            now: NOW,
            ca_warn_secs: 30 * 86_400,
        }
    }

    fn worst(findings: &[Finding]) -> Level {
        findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok)
    }

    #[test]
    fn healthy_mesh_is_ok() {
        let f = evaluate(&input(control(NOW + 300 * 86_400), agent(NOW + 2000)));
        assert_eq!(worst(&f), Level::Ok, "{f:#?}");
    }

    #[test]
    fn ca_expiry_warns_ahead_and_fails_after() {
        let f = evaluate(&input(control(NOW + 10 * 86_400), agent(NOW + 2000)));
        assert_eq!(worst(&f), Level::Warn);
        assert!(
            f.iter()
                .any(|f| f.subject.starts_with("CA #1") && f.message == "expires in 10d"),
            "{f:#?}"
        );
        let f = evaluate(&input(control(NOW - 60), agent(NOW + 2000)));
        assert_eq!(worst(&f), Level::Error);
    }

    #[test]
    fn a_prepared_successor_quiets_the_ca_warning() {
        let mut c = control(NOW + 10 * 86_400);
        c.authorities.push(AuthorityStatus {
            seq: 2,
            state: AuthorityState::Prepared {
                activate_at: NOW + 60,
            },
            not_after: NOW + 365 * 86_400,
        });
        assert_eq!(worst(&evaluate(&input(c, agent(NOW + 2000)))), Level::Ok);
    }

    #[test]
    fn an_svid_past_its_renewal_point_warns_and_an_expired_one_fails() {
        let f = evaluate(&input(control(NOW + 300 * 86_400), agent(NOW + 600)));
        assert_eq!(worst(&f), Level::Warn, "{f:#?}");
        let f = evaluate(&input(control(NOW + 300 * 86_400), agent(NOW - 1)));
        assert_eq!(worst(&f), Level::Error);
    }

    #[test]
    fn lost_connectivity_and_skew_are_errors() {
        let mut a = agent(NOW + 2000);
        a.control_connected = false;
        assert_eq!(
            worst(&evaluate(&input(control(NOW + 300 * 86_400), a))),
            Level::Error
        );
        let mut c = control(NOW + 300 * 86_400);
        c.now = NOW + 120;
        assert_eq!(worst(&evaluate(&input(c, agent(NOW + 2000)))), Level::Error);
        let gone = CheckInput {
            control: Err("no socket".into()),
            agent: None,
            now: NOW,
            ca_warn_secs: 0,
        };
        assert_eq!(worst(&evaluate(&gone)), Level::Error);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(90_061), "1d1h1m1s");
        assert_eq!(human(0), "0s");
        assert_eq!(human(600), "10m");
    }
}
