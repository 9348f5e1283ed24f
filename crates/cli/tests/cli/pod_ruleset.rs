//! `meshwork pod-ruleset`: the hidden subcommand `bench/harness/pods.py` reads the pod ruleset
//! from prints exactly what the proxy crate defines, and stays out of `--help`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::harness::meshwork;

#[test]
fn pod_ruleset_prints_the_proxy_crates_ruleset_and_is_hidden() {
    let out = meshwork().arg("pod-ruleset").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        proxy::pod::PodRules::default().ruleset()
    );
    let help = meshwork().arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("proxy"), "{help}");
    assert!(!help.contains("pod-ruleset"), "{help}");
}
