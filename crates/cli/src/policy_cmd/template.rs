//! Deciding a request known only by its route template: the one way `policy replay` and the
//! dashboard (explaining a denial its sidecar did not name) ask the engine about traffic the
//! sidecars recorded, exactly as the sidecar's inbound authorization builds `policy::Request`.
//!
//! The sidecars record route templates, never raw paths, and no headers: a `{param}` (or
//! `{rest...}`) segment is decided as the placeholder segment [`PLACEHOLDER`] (a policy
//! naming a specific id is judged on the placeholder), header matchers see none;
//! `[unmatched]` routes and `OTHER` methods cannot be decided at all.

use identity::SpiffeId;
use policy::{Decision, Engine, NoHeaders, NormalizedPath, RouteTemplate, TemplateSegment};

/// The segment a `{param}` (or `{rest...}`) of a route template is decided as.
pub const PLACEHOLDER: &str = "_param_";

/// The route label of requests no template matched.
const UNMATCHED: &str = "[unmatched]";

/// An inbound request as the sidecars record it.
#[derive(Debug, Clone, Copy)]
pub struct TemplateRequest<'a> {
    /// The target service.
    pub service: &'a str,
    /// The verified caller's SPIFFE ID (anything else: a caller without identity).
    pub caller: &'a str,
    /// The method (`OTHER` for extension methods).
    pub method: &'a str,
    /// The route template, or `[unmatched]`.
    pub route: &'a str,
}

/// Decides `request` with `engine`, its route template's parameters as [`PLACEHOLDER`];
/// `Err` says why it cannot be decided.
pub fn decide_template(
    engine: &Engine,
    request: TemplateRequest<'_>,
) -> Result<Decision, &'static str> {
    let path = match (request.route, request.method) {
        (UNMATCHED, _) => return Err("no route template matched: the raw path was not recorded"),
        (_, "OTHER") => return Err("an extension method, recorded as OTHER"),
        (route, _) => placeholder_path(route).ok_or("not a route template")?,
    };
    let caller: Option<SpiffeId> = request.caller.parse().ok();
    Ok(engine.authorize(&policy::Request {
        target_service: request.service,
        caller: caller.as_ref(),
        method: request.method,
        path: &path,
        headers: &NoHeaders,
    }))
}

/// `route` with every parameter replaced by [`PLACEHOLDER`], as a normalised path; `None`
/// when `route` is no route template.
pub fn placeholder_path(route: &str) -> Option<NormalizedPath> {
    let template: RouteTemplate = route.parse().ok()?;
    let mut path = String::new();
    for segment in template.segments() {
        path.push('/');
        path += match segment {
            TemplateSegment::Literal(literal) => literal,
            TemplateSegment::Param(_) | TemplateSegment::Rest(_) => PLACEHOLDER,
        };
    }
    if path.is_empty() {
        path.push('/');
    }
    NormalizedPath::parse(&path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_placeholder_segments() {
        let path = |route| placeholder_path(route).map(|p| p.as_str().to_owned());
        assert_eq!(path("/charges/{id}").as_deref(), Some("/charges/_param_"));
        assert_eq!(path("/files/{rest...}").as_deref(), Some("/files/_param_"));
        assert_eq!(path("/").as_deref(), Some("/"));
        assert_eq!(path("[unmatched]"), None);
    }

    #[test]
    fn unmatched_routes_and_other_methods_are_not_decided() {
        let engine =
            Engine::compile(&policy::PolicySet::default()).unwrap_or_else(|e| panic!("{e}"));
        let ask = |method, route| {
            decide_template(
                &engine,
                TemplateRequest {
                    service: "billing",
                    caller: "spiffe://td/ns/default/sa/store",
                    method,
                    route,
                },
            )
            .map(|d| d.allowed)
        };
        assert!(ask("GET", "[unmatched]").is_err());
        assert!(ask("OTHER", "/charges").is_err());
        assert_eq!(ask("GET", "/charges/{id}"), Ok(true));
    }
}
