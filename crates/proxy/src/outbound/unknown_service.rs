//! Requests for a name that looks like a mesh service but is not one.
//!
//! Mesh services are single DNS labels (`billing`); destinations outside the mesh are
//! reached by fully qualified names (`api.stripe.com`). So a single-label name that is not a
//! service of the current snapshot, and that no `EgressPolicy` allows, is almost certainly
//! a misspelt service (`http://biling/`): the caller is told there is no such service (with
//! the nearest names), not that egress was denied. A name with a dot, an IP literal, and
//! `localhost` keep the egress answer, and an `EgressPolicy` that allows a single-label name
//! (a search-domain host) still wins.

use http::{Response, StatusCode};
use policy::Host;
use serde_json::json;

use crate::body::{ProxyBody, json_response};

/// Names this far (edits) from the requested one are offered as "did you mean".
const MAX_DISTANCE: usize = 2;
/// At most this many suggestions.
const MAX_SUGGESTIONS: usize = 3;

/// True for a name the egress denial should be answered as an unknown service.
pub fn looks_like_a_service(host: &Host) -> bool {
    match host {
        Host::Dns(name) => !name.as_str().contains('.') && name.as_str() != "localhost",
        Host::Ip(_) => false,
    }
}

/// `404 {"error":"unknown_service","service","side":"client","retryable":false,
/// "description","did_you_mean":[…]}` for `name`, given the mesh's `services`.
pub fn not_found(name: &str, services: &[String]) -> Response<ProxyBody> {
    let suggestions = nearest(name, services);
    let hint = match suggestions.as_slice() {
        [] => String::new(),
        names => format!(
            " (did you mean {}?)",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    };
    let body = json!({
        "error": "unknown_service",
        "service": name,
        "side": "client",
        "retryable": false,
        "description": format!(
            "no service `{name}` in the mesh{hint}; a destination outside the mesh needs its \
             full DNS name and an EgressPolicy"
        ),
        "did_you_mean": suggestions,
    });
    json_response(StatusCode::NOT_FOUND, &body)
}

/// The services within [`MAX_DISTANCE`] edits of `name`, nearest first.
fn nearest<'a>(name: &str, services: &'a [String]) -> Vec<&'a str> {
    let mut close: Vec<(usize, &str)> = services
        .iter()
        .map(|service| (edit_distance(name, service), service.as_str()))
        .filter(|(distance, _)| *distance <= MAX_DISTANCE)
        .collect();
    close.sort_unstable();
    close
        .into_iter()
        .take(MAX_SUGGESTIONS)
        .map(|(_, s)| s)
        .collect()
}

/// Levenshtein distance over bytes (service names are ASCII DNS labels).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(x != y);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn host(s: &str) -> Host {
        s.parse().unwrap()
    }

    #[test]
    fn only_single_label_names_look_like_services() {
        assert!(looks_like_a_service(&host("biling")));
        assert!(!looks_like_a_service(&host("api.stripe.com")));
        assert!(!looks_like_a_service(&host("localhost")));
        assert!(!looks_like_a_service(&host("10.0.0.1")));
        assert!(!looks_like_a_service(&host("[::1]")));
    }

    #[test]
    fn suggestions_are_the_nearest_names() {
        let services: Vec<String> = ["billing", "reporting", "store", "stores"]
            .map(String::from)
            .to_vec();
        assert_eq!(nearest("biling", &services), ["billing"]);
        assert_eq!(nearest("stor", &services), ["store", "stores"]);
        assert!(nearest("payments", &services).is_empty());
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[tokio::test]
    async fn the_answer_names_the_service_and_the_suggestion() {
        use http_body_util::BodyExt;
        let response = not_found("biling", &["billing".to_owned(), "store".to_owned()]);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"], "unknown_service");
        assert_eq!(body["service"], "biling");
        assert_eq!(body["did_you_mean"], json!(["billing"]));
        let description = body["description"].as_str().unwrap();
        assert!(
            description.starts_with("no service `biling` in the mesh (did you mean `billing`?)"),
            "{description}"
        );
    }
}
