//! Loading the taxonomy kinds: each resource's own checks, located at its field's line while
//! the document's text is at hand, and the checks that involve other kinds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::{
    EnvironmentSpec, Problem, Problems, ServiceClaimSpec, ServiceClassSpec, ServicePolicySpec,
};
#[cfg(test)]
use crate::load::load_str;
use crate::load::{LoadError, Loaded, Origin, load_file, parse_resource, resource_files};
use crate::set::ResourceSet;

/// A taxonomy spec type, as far as loading is concerned.
pub(crate) trait TaxonomyKind: DeserializeOwned {
    /// The resource kind.
    const KIND: &'static str;
    /// The spec's own checks (not involving other resources).
    fn check(&self, problems: &mut Problems);
}

impl TaxonomyKind for ServiceClassSpec {
    const KIND: &'static str = "ServiceClass";
    fn check(&self, problems: &mut Problems) {
        self.validate(problems);
    }
}

impl TaxonomyKind for EnvironmentSpec {
    const KIND: &'static str = "Environment";
    fn check(&self, problems: &mut Problems) {
        self.validate(problems);
    }
}

impl TaxonomyKind for ServicePolicySpec {
    const KIND: &'static str = "ServicePolicy";
    fn check(&self, problems: &mut Problems) {
        self.validate(problems);
    }
}

impl TaxonomyKind for ServiceClaimSpec {
    const KIND: &'static str = "ServiceClaim";
    fn check(&self, _: &mut Problems) {}
}

/// Parses one document of a taxonomy kind and runs its own checks; every problem becomes a
/// [`LoadError::Invalid`] at its field's line.
pub(crate) fn parse<S: TaxonomyKind>(
    doc: &str,
    origin: Origin,
    resource: &str,
) -> Result<Loaded<S>, LoadError> {
    let loaded: Loaded<S> = parse_resource(doc, origin, resource)?;
    let mut problems = Problems::new(S::KIND, loaded.resource.metadata.name.as_str());
    loaded.resource.spec.check(&mut problems);
    let errors: Vec<LoadError> = problems
        .into_problems()
        .iter()
        .map(|p| located(&loaded.origin, p))
        .collect();
    match errors.is_empty() {
        true => Ok(loaded),
        false => Err(LoadError::from_many(errors)),
    }
}

/// A problem as a located load error, at its field's line in the resource's document.
fn located(origin: &Origin, problem: &Problem) -> LoadError {
    origin.error(
        Some(&problem.resource),
        &problem.path,
        problem.message.clone(),
    )
}

fn unique_names<S>(items: &[Loaded<S>], kind: &str, errors: &mut Vec<LoadError>) {
    let mut seen = BTreeSet::new();
    for item in items {
        let meta = &item.resource.metadata;
        if !seen.insert((meta.namespace.clone(), meta.name.clone())) {
            let mut p = Problems::new(kind, meta.name.as_str());
            p.push(
                "metadata.name",
                "is already used by another resource of this kind",
            );
            errors.extend(p.into_problems().iter().map(|p| located(&item.origin, p)));
        }
    }
}

impl ResourceSet {
    /// The checks of the taxonomy kinds that involve other resources: unique names, a claim's
    /// `bindTo` names a `Workload`, and — when the set defines `ServiceClass`es (otherwise the
    /// broker's built-in catalog applies) — its `class` names one that offers its `size`.
    /// References between classes, environments and policies are the broker's to check
    /// (`broker::Taxonomy::new`); [`ResourceSet::locate`] places its problems.
    pub fn validate_taxonomy(&self) -> Result<(), LoadError> {
        let mut errors = Vec::new();
        unique_names(&self.service_classes, "ServiceClass", &mut errors);
        unique_names(&self.environments, "Environment", &mut errors);
        unique_names(&self.service_policies, "ServicePolicy", &mut errors);
        unique_names(&self.service_claims, "ServiceClaim", &mut errors);
        for claim in &self.service_claims {
            let mut p = Problems::new("ServiceClaim", claim.resource.metadata.name.as_str());
            self.check_claim(&claim.resource.spec, &mut p);
            errors.extend(p.into_problems().iter().map(|p| located(&claim.origin, p)));
        }
        match errors.is_empty() {
            true => Ok(()),
            false => Err(LoadError::from_many(errors)),
        }
    }

    /// The problems of one claim's references (`bindTo`, `class`, `size`), located: empty
    /// when they resolve in this set. What a cluster's objects are quarantined by
    /// ([`crate::object::load_objects`]).
    pub(crate) fn claim_problems(&self, claim: &Loaded<ServiceClaimSpec>) -> Vec<LoadError> {
        let mut p = Problems::new("ServiceClaim", claim.resource.metadata.name.as_str());
        self.check_claim(&claim.resource.spec, &mut p);
        p.into_problems()
            .iter()
            .map(|p| located(&claim.origin, p))
            .collect()
    }

    fn check_claim(&self, spec: &ServiceClaimSpec, p: &mut Problems) {
        if self.workload(spec.bind_to.as_str()).is_none() {
            let known = match self.workload_names() {
                names if names.is_empty() => "(none)".to_owned(),
                names => names.join(", "),
            };
            let msg = format!(
                "{:?} names no Workload; workloads: {known}",
                spec.bind_to.as_str()
            );
            p.push("spec.bindTo", msg);
        }
        if self.service_classes.is_empty() {
            return;
        }
        let class = self
            .service_classes
            .iter()
            .find(|c| c.resource.metadata.name == spec.class);
        match (class, spec.size) {
            (None, _) => {
                let known: Vec<&str> = self
                    .service_classes
                    .iter()
                    .map(|c| c.resource.metadata.name.as_str())
                    .collect();
                let msg = format!(
                    "{:?} names no ServiceClass; classes: {}",
                    spec.class.as_str(),
                    known.join(", ")
                );
                p.push("spec.class", msg);
            }
            (Some(c), Some(size)) if !c.resource.spec.sizes.contains_key(&size) => {
                let msg = format!("ServiceClass {} offers no size {size}", spec.class);
                p.push("spec.size", msg);
            }
            _ => {}
        }
    }

    fn workload_names(&self) -> Vec<String> {
        self.workloads
            .iter()
            .map(|w| w.resource.metadata.name.to_string())
            .collect()
    }

    /// Where the taxonomy resource `Kind/name` of a problem was read, as a located error; for
    /// problems found after loading (the broker's cross-reference checks).
    pub fn locate(&self, problem: &Problem) -> LoadError {
        let origin = self.taxonomy_origin(&problem.resource);
        match origin {
            Some(origin) => located(origin, problem),
            None => LoadError::Invalid {
                file: PathBuf::new(),
                line: 0,
                column: 0,
                resource: Some(problem.resource.clone()),
                field: Some(problem.path.clone()),
                message: problem.message.clone(),
            },
        }
    }

    fn taxonomy_origin(&self, resource: &str) -> Option<&Origin> {
        let (kind, name) = resource.split_once('/')?;
        let origins = match kind {
            "ServiceClass" => names(&self.service_classes),
            "Environment" => names(&self.environments),
            "ServicePolicy" => names(&self.service_policies),
            "ServiceClaim" => names(&self.service_claims),
            _ => return None,
        };
        origins
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, o)| o)
    }
}

fn names<S>(items: &[Loaded<S>]) -> Vec<(&str, &Origin)> {
    items
        .iter()
        .map(|i| (i.resource.metadata.name.as_str(), &i.origin))
        .collect()
}

/// Reads a directory that may hold only taxonomy resources (what `meshwork broker --resources`
/// reads): like [`crate::load_dir`], but a `Mesh` is required only when the directory defines
/// mesh resources too; without one, only the taxonomy checks run.
pub fn load_taxonomy_dir(dir: &Path) -> Result<ResourceSet, LoadError> {
    let mut set = ResourceSet::default();
    for file in resource_files(dir)? {
        load_file(&file, &mut set)?;
    }
    let mesh_kinds = !set.meshes.is_empty() || !set.workloads.is_empty();
    match mesh_kinds {
        true => set.validate()?,
        false => set.validate_taxonomy()?,
    }
    Ok(set)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const HEAD: &str = "apiVersion: meshwork.dev/v1alpha1\n";

    fn load(text: &str) -> Result<ResourceSet, LoadError> {
        let mut set = ResourceSet::default();
        load_str(Path::new("t.yaml"), text, &mut set)?;
        set.validate_taxonomy()?;
        Ok(set)
    }

    #[test]
    fn a_spec_problem_points_at_its_fields_line() {
        let doc = format!(
            "{HEAD}kind: ServicePolicy\nmetadata: {{name: default}}\nspec:\n  rules:\n    - name: dev\n      class: postgresql\n      environment: dev\n      provider: p\n      sizes: [small]\n      defaultSize: large\n"
        );
        let err = load(&doc).unwrap_err().to_string();
        assert!(
            err.starts_with("t.yaml:11:7: ServicePolicy/default field `spec.rules[0].defaultSize`"),
            "{err}"
        );
    }

    #[test]
    fn a_claim_names_a_workload_and_an_offered_class_and_size() {
        let class = format!(
            "{HEAD}kind: ServiceClass\nmetadata: {{name: postgresql}}\nspec:\n  kind: postgresql\n  sizes: {{small: {{maxConnections: 5, storageMb: 10}}}}\n"
        );
        let claim = |spec: &str| {
            format!("{class}---\n{HEAD}kind: ServiceClaim\nmetadata: {{name: db}}\nspec: {spec}\n")
        };
        let err = load(&claim("{class: postgresql, bindTo: billing}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.yaml:11:27:") && err.contains("field `spec.bindTo`"),
            "{err}"
        );
        let err = load(&claim("{class: mysql, size: small, bindTo: billing}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"mysql\" names no ServiceClass"), "{err}");
        let err = load(&claim("{class: postgresql, size: large, bindTo: billing}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("offers no size large"), "{err}");
        let err = load(&claim("{class: postgresql, bindTo: billing, vendor: rds}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.yaml:11:") && err.contains("vendor"),
            "{err}"
        );
    }

    #[test]
    fn broker_problems_are_placed_at_their_resource() {
        let doc = format!(
            "# a comment\n{HEAD}kind: Environment\nmetadata: {{name: dev}}\nspec: {{match: [{{clusterId: dev}}]}}\n"
        );
        let set = load(&doc).unwrap();
        let mut p = Problems::new("Environment", "dev");
        p.push("spec.match", "overlaps prod");
        let err = set.locate(&p.into_problems()[0]).to_string();
        assert_eq!(
            err,
            "t.yaml:5:8: Environment/dev field `spec.match`: overlaps prod"
        );
    }
}
