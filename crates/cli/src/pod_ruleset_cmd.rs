//! `meshwork pod-ruleset` (hidden): prints the nftables ruleset meshwork applies inside every
//! pod (`proxy::pod::PodRules::default()`), so that tools which make pods of their own (the
//! benchmark's `bench/harness/pods.py`) apply the very rules `up` does.

use std::process::ExitCode;

/// Prints the ruleset, as `nft -f -` reads it, on stdout.
pub fn run() -> anyhow::Result<ExitCode> {
    print!("{}", proxy::pod::PodRules::default().ruleset());
    Ok(ExitCode::SUCCESS)
}
