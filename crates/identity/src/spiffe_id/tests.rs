#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use proptest::prelude::*;

#[test]
fn valid_ids() {
    let cases: &[(&str, &str, &str)] = &[
        ("spiffe://example.org", "example.org", ""),
        ("spiffe://example.org/a", "example.org", "/a"),
        (
            "spiffe://example.org/ns/default/sa/billing",
            "example.org",
            "/ns/default/sa/billing",
        ),
        ("spiffe://a-b_c.0/A.b-C_9", "a-b_c.0", "/A.b-C_9"),
        ("spiffe://td/...", "td", "/..."),
        ("spiffe://td/.a/a./..b", "td", "/.a/a./..b"),
        ("spiffe://1.2.3.4/x", "1.2.3.4", "/x"),
    ];
    for &(input, td, path) in cases {
        let id: SpiffeId = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(id.as_str(), input);
        assert_eq!(id.trust_domain().as_str(), td);
        assert_eq!(id.path(), path);
        assert_eq!(id.to_string(), input);
    }
}

#[test]
fn invalid_ids_name_the_rule() {
    use SpiffeIdError::*;
    let long_td = format!("spiffe://{}", "a".repeat(256));
    let long_id = format!("spiffe://td/{}", "a".repeat(2048 - 12 + 1));
    let cases: Vec<(&str, SpiffeIdError)> = vec![
        ("", Empty),
        ("example.org/a", WrongScheme),
        ("SPIFFE://example.org/a", WrongScheme),
        ("Spiffe://example.org", WrongScheme),
        ("https://example.org/a", WrongScheme),
        ("spiffe:/example.org", WrongScheme),
        ("spiffe://", EmptyTrustDomain),
        ("spiffe:///a", EmptyTrustDomain),
        (
            "spiffe://Example.org",
            BadTrustDomainChar {
                ch: 'E',
                position: 9,
            },
        ),
        (
            "spiffe://exa mple",
            BadTrustDomainChar {
                ch: ' ',
                position: 12,
            },
        ),
        (
            "spiffe://ex%41",
            BadTrustDomainChar {
                ch: '%',
                position: 11,
            },
        ),
        (
            "spiffe://exämple",
            BadTrustDomainChar {
                ch: 'ä',
                position: 11,
            },
        ),
        (
            "spiffe://td/a b",
            BadPathChar {
                ch: ' ',
                position: 13,
            },
        ),
        (
            "spiffe://td/a%20b",
            BadPathChar {
                ch: '%',
                position: 13,
            },
        ),
        (
            "spiffe://td/a/b*",
            BadPathChar {
                ch: '*',
                position: 15,
            },
        ),
        (
            "spiffe://td/é",
            BadPathChar {
                ch: 'é',
                position: 12,
            },
        ),
        ("spiffe://td//a", EmptySegment { position: 12 }),
        ("spiffe://td/a//b", EmptySegment { position: 14 }),
        ("spiffe://td/.", DotSegment { position: 12 }),
        ("spiffe://td/..", DotSegment { position: 12 }),
        ("spiffe://td/a/./b", DotSegment { position: 14 }),
        ("spiffe://td/a/../b", DotSegment { position: 14 }),
        ("spiffe://td/", TrailingSlash),
        ("spiffe://td/a/", TrailingSlash),
        ("spiffe://td:8080/a", HasPort),
        ("spiffe://td:/a", HasPort),
        ("spiffe://user@td/a", HasUserinfo),
        ("spiffe://user:pw@td/a", HasUserinfo),
        ("spiffe://td/a?x=1", HasQuery),
        ("spiffe://td?x=1", HasQuery),
        ("spiffe://td/a#frag", HasFragment),
        ("spiffe://td#frag", HasFragment),
        ("spiffe://td/a#f?q", HasFragment),
        (&long_td, TrustDomainTooLong { len: 256 }),
        (&long_id, TooLong { len: 2049 }),
    ];
    for (input, want) in cases {
        assert_eq!(input.parse::<SpiffeId>(), Err(want.clone()), "{input:?}");
        assert_eq!(SpiffeId::try_from(input), Err(want), "{input:?}");
    }
}

#[test]
fn length_limits_are_inclusive() {
    let td = "a".repeat(MAX_TRUST_DOMAIN_LEN);
    assert!(td.parse::<TrustDomain>().is_ok());
    let max = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_LEN - 12));
    assert_eq!(max.len(), MAX_SPIFFE_ID_LEN);
    assert!(max.parse::<SpiffeId>().is_ok());
}

#[test]
fn trust_domain_parsing() {
    use SpiffeIdError::*;
    assert_eq!(
        "example.org".parse::<TrustDomain>().map(|t| t.to_string()),
        Ok("example.org".into())
    );
    let cases: &[(&str, SpiffeIdError)] = &[
        ("", EmptyTrustDomain),
        (
            "Example.org",
            BadTrustDomainChar {
                ch: 'E',
                position: 0,
            },
        ),
        ("spiffe://example.org", SchemeInTrustDomain),
        (
            "example.org/a",
            BadTrustDomainChar {
                ch: '/',
                position: 11,
            },
        ),
        ("td:1", HasPort),
        ("u@td", HasUserinfo),
        ("td?q", HasQuery),
        ("td#f", HasFragment),
    ];
    for (input, want) in cases {
        assert_eq!(input.parse::<TrustDomain>(), Err(want.clone()), "{input:?}");
    }
}

#[test]
fn new_builds_and_checks_path() {
    let td: TrustDomain = "example.org".parse().unwrap();
    let id = SpiffeId::new(td.clone(), "/ns/default/sa/billing").unwrap();
    assert_eq!(id.as_str(), "spiffe://example.org/ns/default/sa/billing");
    assert_eq!(SpiffeId::new(td.clone(), "").unwrap(), td.spiffe_id());
    assert_eq!(
        SpiffeId::new(td.clone(), "a"),
        Err(SpiffeIdError::RelativePath)
    );
    assert_eq!(
        SpiffeId::new(td.clone(), "/a/"),
        Err(SpiffeIdError::TrailingSlash)
    );
    assert_eq!(
        SpiffeId::new(td.clone(), "/a/.."),
        Err(SpiffeIdError::DotSegment { position: 3 })
    );
    assert_eq!(
        SpiffeId::new(td.clone(), "/a?b"),
        Err(SpiffeIdError::HasQuery)
    );
    let long = format!("/{}", "a".repeat(MAX_SPIFFE_ID_LEN));
    assert!(matches!(
        SpiffeId::new(td, &long),
        Err(SpiffeIdError::TooLong { .. })
    ));
}

#[test]
fn serde_is_a_string() {
    let id: SpiffeId = "spiffe://td/a".parse().unwrap();
    let json = serde_json_like(&id);
    assert_eq!(json, "spiffe://td/a");
    let back: Result<SpiffeId, _> = SpiffeId::try_from(json);
    assert_eq!(back.unwrap(), id);
}

/// serde_json is not a dependency here; round-trip through serde's string
/// value deserializer instead, which exercises the same `try_from`/`into`.
fn serde_json_like(id: &SpiffeId) -> String {
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error, StrDeserializer};
    let s: String = id.clone().into();
    let de: StrDeserializer<'_, Error> = s.as_str().into_deserializer();
    let parsed = SpiffeId::deserialize(de).unwrap();
    assert_eq!(&parsed, id);
    let bad: StrDeserializer<'_, Error> = "spiffe://TD".into_deserializer();
    assert!(SpiffeId::deserialize(bad).is_err());
    let td: StrDeserializer<'_, Error> = "td".into_deserializer();
    assert_eq!(TrustDomain::deserialize(td).unwrap().as_str(), "td");
    s
}

#[test]
fn ordering_and_equality_follow_the_string() {
    let a: SpiffeId = "spiffe://a/x".parse().unwrap();
    let ab: SpiffeId = "spiffe://a.b/x".parse().unwrap();
    assert_eq!(a.cmp(&ab), a.as_str().cmp(ab.as_str()));
    assert_ne!(a, ab);
}

fn td_strategy() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,40}"
}

fn path_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec("[A-Za-z0-9._-]{1,12}", 0..6).prop_map(|segments| {
        segments
            .into_iter()
            .filter(|s| s != "." && s != "..")
            .map(|s| format!("/{s}"))
            .collect()
    })
}

proptest! {
    #[test]
    fn display_from_str_round_trips(td in td_strategy(), path in path_strategy()) {
        let input = format!("spiffe://{td}{path}");
        let id: SpiffeId = input.parse().unwrap();
        prop_assert_eq!(id.to_string(), input.clone());
        let again: SpiffeId = id.to_string().parse().unwrap();
        prop_assert_eq!(&again, &id);
        prop_assert_eq!(again.trust_domain().as_str(), td.as_str());
        prop_assert_eq!(again.path(), path.as_str());
        let rebuilt = SpiffeId::new(id.trust_domain().clone(), id.path()).unwrap();
        prop_assert_eq!(rebuilt, id);
    }

    #[test]
    fn parsing_arbitrary_input_never_panics(s in "\\PC{0,80}") {
        let _ = s.parse::<SpiffeId>();
        let _ = s.parse::<TrustDomain>();
    }
}
