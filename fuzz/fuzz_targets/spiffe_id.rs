//! SPIFFE ID parsing never panics, and a parsed ID round-trips through its string and
//! through `SpiffeId::new(trust_domain, path)`.
#![no_main]

use identity::SpiffeId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = raw.parse::<SpiffeId>() else {
        return;
    };
    assert_eq!(id.as_str(), raw);
    assert_eq!(id.as_str().parse::<SpiffeId>().as_ref(), Ok(&id));
    let rebuilt = SpiffeId::new(id.trust_domain().clone(), id.path());
    assert_eq!(rebuilt.as_ref(), Ok(&id));
});
