//! The matcher on hand-written snapshots: every kind of condition, alone and together.
//! (The precedence order of `matches` is the loader's job: `crate::route::compile`'s tests.)

use super::*;

fn rule(name: &str) -> RouteRule {
    RouteRule {
        name: name.to_owned(),
        ..RouteRule::default()
    }
}

fn on(rule: usize, path: Option<PathMatch>) -> RuleMatch {
    RuleMatch {
        rule,
        path,
        ..RuleMatch::default()
    }
}

fn traffic(matches: Vec<RuleMatch>) -> Matcher {
    let rules = (0..=matches.iter().map(|m| m.rule).max().unwrap_or(0))
        .map(|i| rule(&format!("r{i}")))
        .collect();
    Matcher::compile(&ServiceTraffic {
        rules,
        matches,
        ..ServiceTraffic::default()
    })
    .unwrap()
}

fn no_headers(_: &str) -> Option<&'static [u8]> {
    None
}

/// The rule name `select` picks for `method path` with `headers`, or `-`.
fn pick(m: &Matcher, method: &str, path: &str, headers: &[(&str, &'static str)]) -> String {
    let lookup = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_bytes())
    };
    m.select(method, path, lookup)
        .map_or_else(|| "-".to_owned(), |(i, r)| format!("{i}:{}", r.name))
}

#[test]
fn path_prefixes_match_whole_elements() {
    let m = traffic(vec![on(0, Some(PathMatch::PathPrefix("/charges".into())))]);
    for (path, want) in [
        ("/charges", "0:r0"),
        ("/charges/42", "0:r0"),
        ("/charges/42/refunds", "0:r0"),
        ("/chargesX", "-"),
        ("/charge", "-"),
        ("/", "-"),
    ] {
        assert_eq!(pick(&m, "GET", path, &[]), want, "{path}");
    }
    // A trailing slash in the prefix is ignored (Gateway API), and `/` matches everything.
    let m = traffic(vec![on(0, Some(PathMatch::PathPrefix("/charges/".into())))]);
    assert_eq!(pick(&m, "GET", "/charges", &[]), "0:r0");
    assert_eq!(pick(&m, "GET", "/chargesX", &[]), "-");
    let m = traffic(vec![on(0, Some(PathMatch::PathPrefix("/".into())))]);
    assert_eq!(pick(&m, "GET", "/", &[]), "0:r0");
    assert_eq!(pick(&m, "GET", "/anything/at/all", &[]), "0:r0");
}

#[test]
fn exact_paths_and_anchored_expressions() {
    let m = traffic(vec![
        on(0, Some(PathMatch::Exact("/charges".into()))),
        on(
            1,
            Some(PathMatch::RegularExpression("/charges/[0-9]+".into())),
        ),
    ]);
    assert_eq!(pick(&m, "GET", "/charges", &[]), "0:r0");
    assert_eq!(pick(&m, "GET", "/charges/42", &[]), "1:r1");
    // Anchored at both ends: no partial matches.
    assert_eq!(pick(&m, "GET", "/charges/42/x", &[]), "-");
    assert_eq!(pick(&m, "GET", "/v1/charges/42", &[]), "-");
    assert_eq!(pick(&m, "GET", "/charges/", &[]), "-");
    // An alternation is anchored as a whole, not just its first branch.
    let m = traffic(vec![on(
        0,
        Some(PathMatch::RegularExpression("/a|/b".into())),
    )]);
    assert_eq!(pick(&m, "GET", "/b", &[]), "0:r0");
    assert_eq!(pick(&m, "GET", "/b/c", &[]), "-");
    assert_eq!(pick(&m, "GET", "/x/a", &[]), "-");
}

#[test]
fn methods_and_headers_must_all_hold() {
    let mut get_with_key = on(0, None);
    get_with_key.method = Some("POST".into());
    get_with_key.headers = vec![
        HeaderMatch {
            name: "idempotency-key".into(),
            kind: HeaderMatchKind::RegularExpression,
            value: "[a-z0-9-]{8,}".into(),
        },
        HeaderMatch {
            name: "x-tier".into(),
            kind: HeaderMatchKind::Exact,
            value: "gold".into(),
        },
    ];
    let m = traffic(vec![get_with_key, on(1, None)]);
    let both = [("idempotency-key", "abcd-1234"), ("x-tier", "gold")];
    assert_eq!(pick(&m, "POST", "/charges", &both), "0:r0");
    assert_eq!(pick(&m, "GET", "/charges", &both), "1:r1", "method");
    let short_key = [("idempotency-key", "abc"), ("x-tier", "gold")];
    assert_eq!(pick(&m, "POST", "/charges", &short_key), "1:r1", "regex");
    let silver = [("idempotency-key", "abcd-1234"), ("x-tier", "Gold")];
    assert_eq!(
        pick(&m, "POST", "/charges", &silver),
        "1:r1",
        "exact is exact"
    );
    let missing = [("idempotency-key", "abcd-1234")];
    assert_eq!(pick(&m, "POST", "/charges", &missing), "1:r1", "missing");
}

#[test]
fn header_names_are_looked_up_lower_case_and_values_may_be_bytes() {
    let mut m = on(0, None);
    m.headers = vec![HeaderMatch {
        name: "X-Tier".into(),
        kind: HeaderMatchKind::RegularExpression,
        value: "g.ld".into(),
    }];
    let m = traffic(vec![m]);
    let asked = std::cell::RefCell::new(Vec::new());
    let lookup = |name: &str| {
        asked.borrow_mut().push(name.to_owned());
        Some(&b"g\xffld"[..])
    };
    assert!(m.select("GET", "/", lookup).is_some());
    assert_eq!(asked.into_inner(), ["x-tier"]);
}

#[test]
fn the_first_match_in_order_wins_and_no_match_is_the_default_route() {
    let m = traffic(vec![
        on(1, Some(PathMatch::PathPrefix("/charges".into()))),
        on(0, Some(PathMatch::PathPrefix("/".into()))),
    ]);
    assert_eq!(pick(&m, "GET", "/charges/1", &[]), "1:r1");
    assert_eq!(pick(&m, "GET", "/healthz", &[]), "0:r0");
    let empty = Matcher::compile(&ServiceTraffic::default()).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.select("GET", "/", no_headers).map(|(i, _)| i), None);
}

#[test]
fn bad_snapshots_are_errors_not_panics() {
    let bad_regex = ServiceTraffic {
        rules: vec![rule("r0")],
        matches: vec![on(0, Some(PathMatch::RegularExpression("/(".into())))],
        ..ServiceTraffic::default()
    };
    let err = Matcher::compile(&bad_regex).unwrap_err();
    assert!(
        err.to_string().contains("matches[0]: path expression"),
        "{err}"
    );
    let huge = ServiceTraffic {
        rules: vec![rule("r0")],
        matches: vec![on(
            0,
            Some(PathMatch::RegularExpression("a{1000}{1000}".into())),
        )],
        ..ServiceTraffic::default()
    };
    assert!(Matcher::compile(&huge).is_err(), "size limit");
    let dangling = ServiceTraffic {
        rules: vec![rule("r0")],
        matches: vec![on(3, None)],
        ..ServiceTraffic::default()
    };
    let err = Matcher::compile(&dangling).unwrap_err();
    assert_eq!(
        err.to_string(),
        "matches[0] refers to rule 3, but there are 1 rules"
    );
}
