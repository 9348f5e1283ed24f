//! Pure policy decisions for meshwork: L7 authorization by SPIFFE identity, DNS-based egress,
//! and the one request-path normaliser.
//!
//! **Owns:** [`NormalizedPath`] (the path semantics shared by routing, policy and metrics),
//! [`RouteTemplate`], [`DnsPattern`]/[`Host`], [`Cidr`], the `spec` types of the
//! `AuthorizationPolicy` and `EgressPolicy` resources ([`model`]), the compiled [`Engine`]
//! and its [`Decision`]s, and the `meshwork policy test` table model ([`test_table`]).
//!
//! **Must not import:** anything doing I/O (files, sockets, clocks, DNS), and no meshwork
//! crate but `identity`. Resource envelopes and YAML files belong to `api`; enforcement to
//! `proxy`; the commands to `cli`.
//!
//! # Decision semantics (the one place they are written down)
//!
//! **Inbound (`AuthorizationPolicy`, [`Engine::authorize`]):**
//! 1. Only policies whose `targetService` equals [`Request::target_service`] apply.
//! 2. A rule matches when any `from` entry matches the caller AND any `to` entry matches the
//!    request; an empty list matches anything. An empty `from` also matches a caller without
//!    a verified identity; any identity matcher needs one. Paths are compared in
//!    [`NormalizedPath`] form only, so spelling variants (`/charges/`, `//charges`,
//!    `/%63harges`, `/x/../charges`) decide alike.
//! 3. **DENY beats ALLOW:** if an enforced DENY rule matches → denied ([`DecisionKind::ExplicitDeny`]).
//! 4. Otherwise, if an enforced ALLOW rule matches → allowed ([`DecisionKind::ExplicitAllow`]).
//! 5. Otherwise, a service targeted by **any** enforced ALLOW policy is **default-deny**
//!    ([`DecisionKind::DefaultDeny`]) — even if that policy has no rules; a service with no
//!    enforced ALLOW policy is allowed ([`DecisionKind::NoPolicy`]).
//! 6. When several rules of the deciding kind match, the first in canonical order decides:
//!    policies by name, then rules by index.
//! 7. **Audit mode:** audit-mode policies never change `allowed`. The engine also computes
//!    the decision as if they were enforced (steps 3–6 over enforced + audit rules); when that
//!    outcome differs, [`Decision::audit`] carries an [`AuditNote`] (`WouldDeny` or
//!    `WouldAllow`) with the policy/rule (or default deny) that would have decided.
//!
//! **Opaque TCP (`AuthorizationPolicy`, [`Engine::authorize_tcp`]):** steps 1 and 3–7 as for
//! HTTP, over a [`TcpRequest`] (caller and destination port). Which `to` entries match a
//! connection: an entry listing its port in `ports`, or an entry naming nothing; an entry
//! with HTTP fields (`methods`, `paths`, `headers`) never matches in an ALLOW rule and, in a
//! DENY rule, matches every connection (its HTTP fields are ignored: fail closed, as Istio
//! does). Conversely an entry with `ports` never matches an HTTP request. An entry cannot set
//! both kinds.
//!
//! **Egress (`EgressPolicy`, [`Engine::egress`]):** the proxy asks only about destinations
//! outside the mesh (deciding what is in the mesh is the caller's job). Egress is
//! **default-deny**: allowed only if some destination entry (`to[i]`, reported as `rule = i`)
//! of some policy whose `from` matches the caller matches host, port and — for plain-HTTP
//! egress — method and path. DNS names match `host` patterns ([`DnsPattern`]: exact, or
//! `*.` + exactly one label); IP literals match only `cidr` entries, which a policy must opt
//! into with `allowCidr: true`. There is no DENY or audit for egress.
//!
//! **Determinism:** the same [`PolicySet`] and request always give the same decision;
//! [`Engine::hash`] identifies the set, so a running proxy's snapshot can be named.
//!
//! # Use
//!
//! ```
//! # extern crate meshwork_policy as policy;
//! use policy::{Engine, EgressRequest, Host, NoHeaders, NormalizedPath, PolicySet, Request};
//!
//! let set: PolicySet = serde_json::from_str(r#"{
//!   "authorization": { "store-may-charge": {
//!     "targetService": "billing", "action": "ALLOW",
//!     "rules": [{ "from": [{ "spiffeId": "spiffe://meshwork.local/ns/default/sa/store" }],
//!                 "to": [{ "methods": ["POST"], "paths": [{ "exact": "/charges" }] }] }] } },
//!   "egress": { "billing-to-stripe": {
//!     "from": [{ "spiffeId": "spiffe://meshwork.local/ns/default/sa/billing" }],
//!     "to": [{ "host": "api.stripe.com", "ports": [443] }] } }
//! }"#)?;
//! let engine = Engine::compile(&set)?;
//!
//! let store = "spiffe://meshwork.local/ns/default/sa/store".parse()?;
//! let path = NormalizedPath::parse("/charges/?amount=5")?;
//! let decision = engine.authorize(&Request {
//!     target_service: "billing", caller: Some(&store), method: "POST", path: &path, headers: &NoHeaders,
//! });
//! assert!(decision.allowed);
//! assert_eq!(decision.reason.policy.as_deref(), Some("store-may-charge"));
//!
//! let host: Host = "api.stripe.com".parse()?;
//! let egress = engine.egress(&EgressRequest { caller: &store, host: &host, port: 443, method: None, path: None });
//! assert!(!egress.allowed); // only billing may reach Stripe
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cidr;
pub mod decision;
pub mod dns;
pub mod engine;
pub mod hasher;
pub mod model;
pub mod path;
pub mod request;
pub mod route;
pub mod test_table;

pub use cidr::{Cidr, CidrError};
pub use decision::{AuditNote, AuditOutcome, Decision, DecisionKind, DecisionReason};
pub use dns::{DnsError, DnsName, DnsPattern, Host};
pub use engine::{CompileError, Engine, EngineHash, PolicyError, PolicyKind, PolicySet};
pub use model::{
    Action, AuthorizationPolicySpec, AuthorizationRuleSpec, EgressDestinationSpec,
    EgressPolicySpec, FieldError, HeaderMatcherSpec, IdentityMatcherSpec, Mode, PathMatcherSpec,
    Problem, RequestMatcherSpec, ValidationErrors,
};
pub use path::{NormalizedPath, PathError};
pub use request::{EgressRequest, HeaderSource, NoHeaders, Request, TcpRequest};
pub use route::{Captures, RouteTemplate, RouteTemplateError, TemplateSegment};
pub use test_table::{CaseOutcome, Expect, TestCase, TestReport, TestTable, TestTableError};
