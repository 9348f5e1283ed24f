//! Pod-mode protocol detection (`proxy::pod::detect::classify`) never panics on the first
//! bytes an app sends through the capture listener, and a verdict does not depend on bytes
//! that come after the ones it was given (the detector stops reading at the first verdict).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::pod::detect::classify;

fuzz_target!(|data: &[u8]| {
    let Some(verdict) = classify(data) else {
        return;
    };
    let mut longer = data.to_vec();
    longer.extend_from_slice(b"\r\nX");
    assert_eq!(classify(&longer), Some(verdict), "more bytes changed the verdict");
});
