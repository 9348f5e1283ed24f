//! The opaque-TCP preamble a peer sidecar sends (`proxy::opaque_preamble::Preamble::decode`)
//! is refused or accepted without panicking, and what is accepted encodes back to the same
//! eight bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::opaque_preamble::{PREAMBLE_LEN, Preamble};

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = data.get(..PREAMBLE_LEN) else {
        return;
    };
    let mut preamble = [0u8; PREAMBLE_LEN];
    preamble.copy_from_slice(bytes);
    if let Ok(decoded) = Preamble::decode(preamble) {
        assert_eq!(decoded.encode(), preamble, "decode then encode is the identity");
    }
});
