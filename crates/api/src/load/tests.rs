//! Loading one file: every duration and size at both ends of its range, documents with null
//! heads, labels, duplicate keys and bytes that are not UTF-8. Every error must name the file,
//! the line (and column) and the field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

#[test]
fn documents_split_with_line_numbers() {
    let docs = documents("a: 1\n---\nb: 2\nc: 3\n---\n\n---\nd: 4\n");
    assert_eq!(
        docs,
        vec![(1, "a: 1\n"), (3, "b: 2\nc: 3\n"), (8, "d: 4\n")]
    );
}

/// Loads `text` as file `r.yaml` (parsing and per-resource checks only).
fn load(text: &str) -> Result<ResourceSet, String> {
    let mut set = ResourceSet::default();
    load_str(Path::new("r.yaml"), text, &mut set)
        .map(|()| set)
        .map_err(|e| e.to_string())
}

const HEAD: &str = "apiVersion: meshwork.dev/v1alpha1\n";

/// A resource with one field's value left as `{v}`, the line that value is on, the resource
/// and the field's path.
struct Field {
    template: &'static str,
    line: usize,
    resource: &'static str,
    path: &'static str,
}

const SVID_TTL: Field = Field {
    template: "kind: Mesh\nmetadata: {name: m}\nspec:\n  trustDomain: meshwork.local\n  svidTtl: {v}\n",
    line: 6,
    resource: "Mesh/m",
    path: "spec.svidTtl",
};
const PORT: Field = Field {
    template: "kind: Workload\nmetadata: {name: w}\nspec:\n  command: [x]\n  port: {v}\n",
    line: 6,
    resource: "Workload/w",
    path: "spec.port",
};
const MAX_CONNECTIONS: Field = Field {
    template: "kind: ServiceClass\nmetadata: {name: pg}\nspec:\n  kind: postgresql\n  sizes:\n    small:\n      maxConnections: {v}\n      storageMb: 10\n",
    line: 8,
    resource: "ServiceClass/pg",
    path: "spec.sizes.small.maxConnections",
};
const STORAGE_MB: Field = Field {
    template: "kind: ServiceClass\nmetadata: {name: pg}\nspec:\n  kind: postgresql\n  sizes:\n    medium:\n      maxConnections: 5\n      storageMb: {v}\n",
    line: 9,
    resource: "ServiceClass/pg",
    path: "spec.sizes.medium.storageMb",
};
const MEMORY_MB: Field = Field {
    template: "kind: ServiceClass\nmetadata: {name: cache}\nspec:\n  kind: redis\n  sizes:\n    large: {maxConnections: 5, memoryMb: {v}}\n",
    line: 7,
    resource: "ServiceClass/cache",
    path: "spec.sizes.large.memoryMb",
};
const RULE: &str = "kind: ServicePolicy\nmetadata: {name: p}\nspec:\n  rules:\n    - name: r\n      class: c\n      environment: e\n      provider: x\n      sizes: [small]\n      defaultSize: small\n";
const INSTANCES_PER_TEAM: Field = Field {
    template: "kind: ServicePolicy\nmetadata: {name: p}\nspec:\n  rules:\n    - name: r\n      class: c\n      environment: e\n      provider: x\n      sizes: [small]\n      defaultSize: small\n      quota:\n        teamFrom: context.namespace\n        instancesPerTeam: {v}\n",
    line: 14,
    resource: "ServicePolicy/p",
    path: "spec.rules[0].quota.instancesPerTeam",
};
const CREDENTIAL_TTL: Field = Field {
    template: "kind: ServicePolicy\nmetadata: {name: p}\nspec:\n  rules:\n    - name: r\n      class: c\n      environment: e\n      provider: x\n      sizes: [small]\n      defaultSize: small\n      credentialTtlSeconds: {v}\n",
    line: 12,
    resource: "ServicePolicy/p",
    path: "spec.rules[0].credentialTtlSeconds",
};

/// `(field, value, Ok(()) or Err(message))` for both ends of every range.
fn range_cases() -> Vec<(Field, &'static str, Result<(), String>)> {
    let dur = |v: &str, min: &str, max: &str| {
        Err(format!(
            "duration {v:?} is out of range: must be between {min} and {max}"
        ))
    };
    let int = |v: &str, min: u64, max: u64| {
        Err(format!(
            "{v} is out of range: must be between {min} and {max}"
        ))
    };
    vec![
        (SVID_TTL, "1s", Ok(())),
        (SVID_TTL, "30d", Ok(())),
        (SVID_TTL, "719h59m59s", Ok(())),
        (SVID_TTL, "999ms", dur("999ms", "1s", "30d")),
        (SVID_TTL, "30d1s", dur("30d1s", "1s", "30d")),
        (SVID_TTL, "0s", dur("0s", "1s", "30d")),
        (
            SVID_TTL,
            "99999999999999h",
            dur("99999999999999h", "1s", "30d"),
        ),
        (PORT, "1", Ok(())),
        (PORT, "65535", Ok(())),
        (PORT, "0", int("0", 1, 65535)),
        (PORT, "65536", int("65536", 1, 65535)),
        (PORT, "-1", int("-1", 1, 65535)),
        (MAX_CONNECTIONS, "1", Ok(())),
        (MAX_CONNECTIONS, "100000", Ok(())),
        (MAX_CONNECTIONS, "0", int("0", 1, 100_000)),
        (MAX_CONNECTIONS, "100001", int("100001", 1, 100_000)),
        (MAX_CONNECTIONS, "4294967296", int("4294967296", 1, 100_000)),
        (STORAGE_MB, "1", Ok(())),
        (STORAGE_MB, "16777216", Ok(())),
        (STORAGE_MB, "0", int("0", 1, 16_777_216)),
        (STORAGE_MB, "16777217", int("16777217", 1, 16_777_216)),
        (MEMORY_MB, "1", Ok(())),
        (MEMORY_MB, "1048576", Ok(())),
        (MEMORY_MB, "0", int("0", 1, 1_048_576)),
        (MEMORY_MB, "1048577", int("1048577", 1, 1_048_576)),
        (INSTANCES_PER_TEAM, "1", Ok(())),
        (INSTANCES_PER_TEAM, "10000", Ok(())),
        (INSTANCES_PER_TEAM, "0", int("0", 1, 10_000)),
        (INSTANCES_PER_TEAM, "10001", int("10001", 1, 10_000)),
        (CREDENTIAL_TTL, "60", Ok(())),
        (CREDENTIAL_TTL, "31536000", Ok(())),
        (CREDENTIAL_TTL, "59", int("59", 60, 31_536_000)),
        (CREDENTIAL_TTL, "31536001", int("31536001", 60, 31_536_000)),
    ]
}

#[test]
fn every_duration_and_size_is_checked_at_both_ends_of_its_range() {
    for (field, value, expected) in range_cases() {
        let text = format!("{HEAD}{}", field.template.replace("{v}", value));
        let got = load(&text);
        match expected {
            Ok(()) => assert!(got.is_ok(), "{} = {value}: {got:?}", field.path),
            Err(message) => {
                let err = got.err().unwrap_or_default();
                let want = format!(
                    "r.yaml:{}:{{col}}: {} field `{}`: {message}",
                    field.line, field.resource, field.path
                );
                let (head, tail) = want.split_once("{col}").unwrap();
                let col = err
                    .strip_prefix(head)
                    .and_then(|rest| rest.split_once(':'))
                    .and_then(|(col, rest)| (Some(rest) == tail.strip_prefix(':')).then_some(col));
                assert!(
                    col.is_some_and(|c| c.parse::<usize>().is_ok_and(|c| c > 0)),
                    "{} = {value}:\n got  {err}\n want {want}",
                    field.path
                );
            }
        }
    }
}

#[test]
fn credential_ttl_beyond_u64_is_an_error_not_a_panic() {
    let rule = format!("{HEAD}{RULE}      credentialTtlSeconds: 18446744073709551616\n");
    let err = load(&rule).err().unwrap_or_default();
    assert!(
        err.starts_with("r.yaml:12:") && err.contains("spec.rules[0].credentialTtlSeconds"),
        "{err}"
    );
}

#[test]
fn documents_with_null_heads_are_errors_not_skipped() {
    let cases = [
        (
            "apiVersion: ~\nkind: ~\nmetadata: ~\n",
            "r.yaml:2:1: resource field `kind`: is required",
        ),
        (
            "apiVersion: ~\nkind: ~\nmetadata: ~\nspec: {command: [x]}\n",
            "r.yaml:2:1: resource field `kind`: is required",
        ),
        (
            "spec: {command: [x]}\n",
            "r.yaml:1:0: resource field `kind`: is required",
        ),
        (
            "metadata: {name: a}\n",
            "r.yaml:1:0: resource field `kind`: is required",
        ),
        (
            "kind: Workload\napiVersion: ~\nmetadata: {name: a}\nspec: {command: [x]}\n",
            "r.yaml:2:1: Workload/a field `apiVersion`: is required",
        ),
        (
            "apiVersion: meshwork.dev/v1alpha1\nkind: Workload\nmetadata: ~\nspec: {command: [x]}\n",
            "r.yaml:3:1: Workload/? field `metadata`: is required",
        ),
        (
            "apiVersion: meshwork.dev/v1alpha1\nkind: Workload\nmetadata: {name: ~}\nspec: {command: [x]}\n",
            "r.yaml:3:",
        ),
    ];
    for (text, want) in cases {
        let err = load(text).err().unwrap_or_default();
        assert!(
            err.starts_with(want),
            "{text:?}:\n got  {err}\n want {want}…"
        );
    }
    // A document of nothing but comments is still nothing, and one with none of the four
    // keys is not a resource (a `policy test` table beside the resources, say).
    let ok = load(&format!(
        "# header\n---\n# a commented-out resource\n# kind: Workload\n---\ncases: []\n---\n{HEAD}{}",
        PORT.template.replace("{v}", "8080")
    ))
    .unwrap();
    assert_eq!(ok.workloads.len(), 1);
    assert_eq!(ok.workloads[0].origin.line, 8);
}

#[test]
fn labels_and_annotations_have_kubernetes_limits() {
    let workload = |meta: &str| {
        format!("{HEAD}kind: Workload\nmetadata:\n  name: w\n{meta}spec: {{command: [x]}}\n")
    };
    let ok = load(&workload(&format!(
        "  labels:\n    app: billing\n    meshwork.dev/tier: \"\"\n    v: {}\n  annotations:\n    note: {}\n",
        "x".repeat(63),
        "free text, spaces & all"
    )))
    .unwrap();
    let meta = &ok.workloads[0].resource.metadata;
    assert_eq!(meta.labels.get("meshwork.dev/tier"), Some(""));
    assert_eq!(
        meta.annotations.get("note"),
        Some("free text, spaces & all")
    );

    let cases = [
        (
            format!("  labels:\n    app: {}\n", "x".repeat(64)),
            "r.yaml:6:",
            "field `metadata.labels.app`: value is 64 bytes long; at most 63 are allowed",
        ),
        (
            "  labels:\n    app: two words\n".to_owned(),
            "r.yaml:6:",
            "field `metadata.labels.app`: value \"two words\" must be letters",
        ),
        (
            "  labels:\n    app: a\n    Bad_Prefix.io/x: y\n".to_owned(),
            "r.yaml:7:",
            "field `metadata.labels.Bad_Prefix.io/x`: key prefix \"Bad_Prefix.io\" is not a DNS subdomain",
        ),
        (
            format!("  labels:\n    {}: y\n", "k".repeat(64)),
            "r.yaml:6:",
            "key name is 64 bytes long",
        ),
        (
            format!(
                "  annotations:\n    a: {}\n    b: {}\n",
                "x".repeat(200_000),
                "y".repeat(70_000)
            ),
            "r.yaml:",
            "field `metadata.annotations`: annotations total 270002 bytes; at most 262144 (256 KiB) are allowed",
        ),
    ];
    for (meta, at, want) in cases {
        let err = load(&workload(&meta)).err().unwrap_or_default();
        assert!(
            err.starts_with(at) && err.contains(want),
            "{meta:.80}:\n got  {err:.300}\n want {at}… {want}"
        );
    }
}

#[test]
fn duplicate_keys_name_the_key_and_both_lines() {
    let text = format!(
        "{HEAD}kind: Workload\nmetadata:\n  name: w\n  labels:\n    app: a\n    tier: t\n    app: b\nspec: {{command: [x]}}\n"
    );
    let err = load(&text).err().unwrap_or_default();
    assert!(
        err.starts_with("r.yaml:8:5: Workload/w field `metadata.labels.app`: duplicate key \"app\"; it is first given at line 6"),
        "{err}"
    );
    assert!(
        !err.contains("DuplicateKeyPolicy") && !err.contains('?'),
        "{err}"
    );
    let text = format!(
        "# c\n{HEAD}kind: Workload\nkind: Workload\nmetadata: {{name: w}}\nspec: {{command: [x]}}\n"
    );
    let err = load(&text).err().unwrap_or_default();
    assert!(
        err.starts_with("r.yaml:4:1: Workload/w field `kind`: duplicate key \"kind\"; it is first given at line 3"),
        "{err}"
    );
}

#[test]
fn bytes_that_are_not_utf8_are_located() {
    let load_bytes_err = |bytes: &[u8]| {
        let mut set = ResourceSet::default();
        load_bytes(Path::new("r.yaml"), bytes, &mut set)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        load_bytes_err(b"apiVersion: x\nkind: W\xffx\n"),
        "r.yaml:2:8: not UTF-8: byte 0xff cannot start or continue a character; resource files must be UTF-8"
    );
    // Columns count characters, not bytes.
    assert!(
        load_bytes_err(
            "a: é€"
                .as_bytes()
                .iter()
                .chain(b"\xc3(")
                .copied()
                .collect::<Vec<u8>>()
                .as_slice()
        )
        .starts_with("r.yaml:1:6: not UTF-8: byte 0xc3"),
    );
    assert!(load_bytes_err(b"\xfe").starts_with("r.yaml:1:1: not UTF-8"));
}

#[test]
fn a_service_name_repeated_in_two_namespaces_is_refused_naming_both_files() {
    let mesh = format!("{HEAD}kind: Mesh\nmetadata: {{name: m}}\nspec: {{trustDomain: a.b}}\n");
    let service = |ns: &str| {
        format!(
            "{HEAD}kind: Service\nmetadata: {{name: billing, namespace: {ns}}}\nspec:\n  selector: {{app: billing}}\n"
        )
    };
    let mut set = ResourceSet::default();
    load_str(
        Path::new("a.yaml"),
        &format!("{mesh}---\n{}", service("shop")),
        &mut set,
    )
    .expect("a.yaml");
    load_str(Path::new("b.yaml"), &service("finance"), &mut set).expect("b.yaml");
    let error = set.validate().expect_err("collision").to_string();
    assert!(
        error.starts_with("b.yaml:3:"),
        "the second file's metadata.name line: {error}"
    );
    assert!(
        error.contains("already used by Service shop/billing (a.yaml:8)"),
        "{error}"
    );
}

#[test]
fn a_bad_pod_network_names_file_line_and_field() {
    let mesh = |pods: &str| {
        format!(
            "{HEAD}kind: Mesh\nmetadata: {{name: m}}\nspec:\n  trustDomain: meshwork.local\n  pods:\n{pods}"
        )
    };
    for (pods, line, field, says) in [
        (
            "    network: 10.0.0.0/25\n",
            7,
            "spec.pods.network",
            "between /8 and /24",
        ),
        (
            "    network: 10.0.0.1/16\n",
            7,
            "spec.pods.network",
            "host bits",
        ),
        (
            "    network: nonsense\n",
            7,
            "spec.pods.network",
            "prefix length",
        ),
        (
            "    network: 10.0.0.0/16\n    virtualAddresses: fd00::/64\n",
            8,
            "spec.pods.virtualAddresses",
            "IPv6",
        ),
    ] {
        let error = load(&mesh(pods)).unwrap_err();
        assert!(
            error.starts_with(&format!("r.yaml:{line}:")),
            "{pods:?}: {error}"
        );
        assert!(error.contains(&format!("`{field}`")), "{pods:?}: {error}");
        assert!(error.contains(says), "{pods:?}: {error}");
    }
    let set = load(&mesh("    network: 10.9.0.0/16\n")).unwrap();
    let spec = set.mesh().unwrap().spec.pods();
    assert_eq!(spec.network.to_string(), "10.9.0.0/16");
    assert_eq!(spec.virtual_addresses.to_string(), "198.19.0.0/16");
    // Overlap is a cross-field rule: checked by validate, still at the field's line.
    let set = load(&mesh(
        "    network: 198.18.0.0/15\n    virtualAddresses: 198.19.0.0/16\n",
    ))
    .unwrap();
    let error = set.validate().unwrap_err().to_string();
    assert!(error.starts_with("r.yaml:8:"), "{error}");
    assert!(error.contains("`spec.pods.virtualAddresses`"), "{error}");
}

#[test]
fn host_network_defaults_to_false() {
    let text = format!("{HEAD}kind: Workload\nmetadata: {{name: w}}\nspec:\n  command: [x]\n");
    let set = load(&text).unwrap();
    assert!(!set.workloads[0].resource.spec.host_network);
    let set = load(&format!("{text}  hostNetwork: true\n")).unwrap();
    assert!(set.workloads[0].resource.spec.host_network);
}
