//! SVID and CA expiry per sidecar, from the gauges of its `/metrics` (`proxy/src/admin.rs`):
//! `meshwork_svid_expiry_timestamp_seconds` and `meshwork_ca_expiry_timestamp_seconds`.

use serde::Serialize;

use crate::sidecar_admin::Sidecar;

/// notAfter of the sidecar's X.509-SVID (Unix seconds).
pub const SVID_EXPIRY: &str = "meshwork_svid_expiry_timestamp_seconds";
/// notAfter of the earliest-expiring root of its trust bundle (Unix seconds).
pub const CA_EXPIRY: &str = "meshwork_ca_expiry_timestamp_seconds";

/// `/api/identities`: one sidecar's identity and when it expires.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    /// The workload.
    pub workload: String,
    /// Its replica.
    pub replica: u16,
    /// The SPIFFE ID it serves with.
    pub spiffe_id: String,
    /// SVID notAfter, Unix seconds (`None`: the sidecar did not answer).
    pub svid_expiry: Option<i64>,
    /// Earliest CA root notAfter, Unix seconds.
    pub ca_expiry: Option<i64>,
    /// Why the expiry is unknown, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Identity {
    /// `sidecar`'s identity as its `/metrics` text (or the error fetching it) tells.
    pub fn from_metrics(sidecar: &Sidecar, metrics: Result<&str, String>) -> Identity {
        let (svid_expiry, ca_expiry, error) = match metrics {
            Ok(text) => (gauge(text, SVID_EXPIRY), gauge(text, CA_EXPIRY), None),
            Err(e) => (None, None, Some(e)),
        };
        Identity {
            workload: sidecar.workload.clone(),
            replica: sidecar.replica,
            spiffe_id: sidecar.spiffe_id.clone(),
            svid_expiry,
            ca_expiry,
            error,
        }
    }
}

/// The value of the first sample of gauge `name` in an OpenMetrics/Prometheus text.
pub fn gauge(text: &str, name: &str) -> Option<i64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        // Timestamps in seconds: far inside i64.
        Some(value as i64)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn expiry_gauges_are_read_from_the_exposition() {
        let text = "# HELP meshwork_svid_expiry_timestamp_seconds notAfter\n\
            # TYPE meshwork_svid_expiry_timestamp_seconds gauge\n\
            meshwork_svid_expiry_timestamp_seconds{spiffe_id=\"spiffe://meshwork.local/ns/default/sa/store\"} 1796000000\n\
            meshwork_svid_expiry_remaining_seconds{spiffe_id=\"x\"} 3599\n\
            meshwork_ca_expiry_timestamp_seconds 1827000000\n# EOF\n";
        assert_eq!(gauge(text, SVID_EXPIRY), Some(1_796_000_000));
        assert_eq!(gauge(text, CA_EXPIRY), Some(1_827_000_000));
        assert_eq!(
            gauge(text, "meshwork_svid_expiry"),
            None,
            "a prefix is not a name"
        );
        let sidecar = Sidecar {
            workload: "store".into(),
            replica: 0,
            spiffe_id: "spiffe://meshwork.local/ns/default/sa/store".into(),
            admin: "127.0.0.1:1".parse().unwrap(),
            label: "store".into(),
        };
        let down = Identity::from_metrics(&sidecar, Err("refused".into()));
        assert_eq!(
            (down.svid_expiry, down.error.as_deref()),
            (None, Some("refused"))
        );
    }
}
