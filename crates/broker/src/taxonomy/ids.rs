//! Stable catalog ids: UUIDv5 of the class (and plan) name, so that the same taxonomy always
//! yields the same catalog — platforms and conformance configs store these ids.

use std::fmt;

use uuid::Uuid;

use super::class::Size;

/// The UUIDv5 namespace for meshwork catalog ids (a fixed random UUID; never change it, or
/// every platform's stored service/plan ids break).
const NAMESPACE: Uuid = Uuid::from_u128(0x6d2f_1c1e_5a0b_4c8e_9f3a_7b4e_2d61_a905);

/// Which plan of a class: the environment's default size, or an explicit size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlanChoice {
    /// "Whatever size the policy picks for my environment."
    Default,
    /// An explicit t-shirt size.
    Sized(Size),
}

impl PlanChoice {
    /// The plan name in the catalog.
    pub fn name(self) -> &'static str {
        match self {
            PlanChoice::Default => "default",
            PlanChoice::Sized(size) => size.as_str(),
        }
    }
}

impl fmt::Display for PlanChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The catalog service id of a class.
pub fn service_id(class: &str) -> String {
    Uuid::new_v5(&NAMESPACE, format!("service/{class}").as_bytes()).to_string()
}

/// The catalog plan id of one plan of a class.
pub fn plan_id(class: &str, plan: PlanChoice) -> String {
    Uuid::new_v5(
        &NAMESPACE,
        format!("plan/{class}/{}", plan.name()).as_bytes(),
    )
    .to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(service_id("postgresql"), service_id("postgresql"));
        assert_ne!(service_id("postgresql"), service_id("mysql"));
        assert_ne!(
            plan_id("postgresql", PlanChoice::Default),
            plan_id("postgresql", PlanChoice::Sized(Size::Small))
        );
        assert_ne!(
            plan_id("mysql", PlanChoice::Default),
            plan_id("postgresql", PlanChoice::Default)
        );
    }

    /// conformance/schemathesis.toml and platforms hold these ids: they must never change.
    #[test]
    fn ids_are_pinned() {
        assert_eq!(
            service_id("postgresql"),
            "630422b7-d737-5f0b-b752-ebec1739d9bd"
        );
        assert_eq!(
            plan_id("postgresql", PlanChoice::Default),
            "e5af094e-a2f8-5137-a9d2-22e3bb56ff27"
        );
        assert_eq!(
            plan_id("redis", PlanChoice::Sized(Size::Large)),
            "0e636f3d-d7b1-5741-b472-024302421270"
        );
    }
}
