//! `GET /v2/catalog`: one service per `ServiceClass`, plans `default` + its sizes.

use serde_json::{Value, json};

use crate::taxonomy::{PlanChoice, ServiceClassSpec, Taxonomy, ids};

fn plan(class: &str, spec: &ServiceClassSpec, choice: PlanChoice) -> Value {
    let description = match choice {
        PlanChoice::Default => format!(
            "The size your environment's ServicePolicy picks for {class}; ask for this unless you need a specific size"
        ),
        PlanChoice::Sized(size) => match spec.sizes.get(&size) {
            Some(limits) => format!("{size}: {limits}"),
            None => size.to_string(),
        },
    };
    let mut p = json!({
        "id": ids::plan_id(class, choice),
        "name": choice.name(),
        "description": description,
        "free": true,
        "bindable": true,
        "plan_updateable": true,
        "schemas": super::parameters::plan_schemas(),
    });
    if let PlanChoice::Sized(size) = choice {
        p["metadata"] = json!({"limits": spec.sizes.get(&size)});
    }
    if let Some(mi) = &spec.maintenance_info {
        p["maintenance_info"] = json!(mi);
    }
    p
}

/// The catalog document; computed once at start, the taxonomy is immutable while serving.
pub(crate) fn catalog(taxonomy: &Taxonomy) -> Value {
    let services: Vec<Value> = taxonomy
        .classes()
        .iter()
        .map(|(name, spec)| {
            let description = spec
                .description
                .clone()
                .unwrap_or_else(|| format!("A {} service", spec.kind));
            let plans: Vec<Value> = Taxonomy::plan_choices(spec)
                .map(|c| plan(name, spec, c))
                .collect();
            json!({
                "id": ids::service_id(name),
                "name": name,
                "description": description,
                "tags": spec.tags,
                "bindable": true,
                "instances_retrievable": true,
                "bindings_retrievable": true,
                "allow_context_updates": true,
                "plan_updateable": true,
                "binding_rotatable": true,
                "metadata": {"kind": spec.kind},
                "plans": plans,
            })
        })
        .collect();
    json!({ "services": services })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn demo_catalog_has_stable_ids_and_default_plans() {
        let c = catalog(&Taxonomy::demo());
        let services = c["services"].as_array().unwrap();
        assert_eq!(services.len(), 3);
        let pg = services.iter().find(|s| s["name"] == "postgresql").unwrap();
        assert_eq!(pg["id"], ids::service_id("postgresql"));
        let names: Vec<&str> = pg["plans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["default", "small", "medium", "large"]);
        assert_eq!(pg["plans"][1]["maintenance_info"]["version"], "1.0.0");
    }
}
