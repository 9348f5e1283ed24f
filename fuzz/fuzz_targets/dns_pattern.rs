//! DNS pattern and host parsing never panics; canonical forms round-trip; an exact pattern
//! matches its own name. Input: the pattern, a NUL byte, then a host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy::{DnsPattern, Host};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, host) = input.split_once('\0').unwrap_or((input, input));
    if let Ok(h) = host.parse::<Host>() {
        assert_eq!(h.to_string().parse::<Host>().as_ref(), Ok(&h));
    }
    let Ok(pattern) = pattern.parse::<DnsPattern>() else {
        return;
    };
    let canonical = pattern.to_string();
    assert_eq!(canonical.parse::<DnsPattern>().as_ref(), Ok(&pattern));
    if let DnsPattern::Exact(name) = &pattern {
        assert!(pattern.matches(name.as_str()));
    }
    let _ = pattern.matches(host);
});
