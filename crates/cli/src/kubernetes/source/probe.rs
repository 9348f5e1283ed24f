//! Whether the cluster serves an optional kind (the Gateway API's routes): asked once at
//! startup with a one-item list. A 404 (no CRD) or a 403 (RBAC trimmed to meshwork's own
//! kinds) means "not here": the kind is skipped with a warning. Any other failure (a 5xx, a
//! timeout, a refused connection) says nothing about the kind, so the list is retried with
//! backoff ([`RETRIES`]); if it keeps failing the kind is watched anyway, and the source waits
//! for its first list no longer than `OPTIONAL_LIST_WAIT`.

use std::time::Duration;

use kube::api::{Api, DynamicObject, ListParams};

/// The delays between the probe's attempts: about 3.5 s in all, enough to ride out an API
/// server's restart or a dropped connection without holding startup up for long.
pub const RETRIES: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// What a probe found.
#[derive(Debug, PartialEq)]
pub enum Probe {
    /// The kind is served (the list succeeded).
    Served,
    /// The cluster does not serve it or meshwork may not list it: skip it; why.
    Skip(String),
    /// The probe failed for another reason; what happened.
    Unknown(String),
}

/// What one list's outcome says about the kind.
pub fn classify<T>(listed: &Result<T, kube::Error>) -> Probe {
    match listed {
        Ok(_) => Probe::Served,
        Err(kube::Error::Api(status)) if status.code == 404 => Probe::Skip(
            "the cluster does not serve this kind (404: are the Gateway API CRDs installed?)"
                .to_owned(),
        ),
        Err(kube::Error::Api(status)) if status.code == 403 => Probe::Skip(format!(
            "meshwork may not list this kind (403: {}); grant list and watch to use routes",
            status.message
        )),
        Err(error) => Probe::Unknown(error.to_string()),
    }
}

/// Lists one item of `api`'s kind, retrying with [`RETRIES`] while the outcome is
/// [`Probe::Unknown`].
pub async fn probe(api: &Api<DynamicObject>) -> Probe {
    let mut delays = RETRIES.iter();
    loop {
        let found = classify(&api.list(&ListParams::default().limit(1)).await);
        match (found, delays.next()) {
            (Probe::Unknown(error), Some(delay)) => {
                tracing::debug!(%error, ?delay, "probing an optional kind failed; retrying");
                tokio::time::sleep(*delay).await;
            }
            (found, _) => return found,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Result<(), kube::Error> {
        let status = kube::core::Status::failure("forbidden by RBAC", "Forbidden").with_code(code);
        Err(kube::Error::Api(status.boxed()))
    }

    #[test]
    fn not_found_and_forbidden_skip_the_kind_and_other_failures_are_retried() {
        assert_eq!(classify(&Ok::<(), kube::Error>(())), Probe::Served);
        let Probe::Skip(why) = classify(&status(404)) else {
            panic!("a 404 is not served")
        };
        assert!(why.contains("404"), "{why}");
        let Probe::Skip(why) = classify(&status(403)) else {
            panic!("a 403 is skipped")
        };
        assert!(why.contains("403: forbidden by RBAC"), "{why}");
        for code in [500, 503, 429] {
            assert!(
                matches!(classify(&status(code)), Probe::Unknown(_)),
                "{code}"
            );
        }
        let refused = kube::Error::Service(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(matches!(classify::<()>(&Err(refused)), Probe::Unknown(_)));
    }
}
