//! The pod resolver (`proxy::pod::resolver::answer`) never panics on any datagram; what it
//! answers is a response with the query's id, and an A answer lies in the virtual range and
//! is the same when asked again. Input: a raw DNS message (as from the pod's app).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::VirtualCidr;
use proxy::pod::VirtualAddresses;
use proxy::pod::resolver::answer;

fuzz_target!(|data: &[u8]| {
    // A small range, so that running out of addresses is reached too.
    let range: VirtualCidr = "10.99.0.0/30".parse().expect("a valid range");
    let table = VirtualAddresses::new(range);
    let Some(reply) = answer(data, &table) else {
        return;
    };
    assert!(reply.len() >= 12, "a reply has a header");
    assert_eq!(reply[..2], data[..2], "the reply carries the query's id");
    assert!(reply[2] & 0x80 != 0, "the reply is a response");
    assert_eq!(answer(data, &table), Some(reply), "answers are stable");
});
