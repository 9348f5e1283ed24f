//! The Workload API's HTTP/2 `:authority` rewriter never panics on any client byte
//! stream, however the stream is split into reads, and every `feed` makes progress.
//! Input: one byte giving the read size, then what the client sends after the preface.
#![no_main]

use control::agent::AuthorityRewriter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&read_size, rest)) = data.split_first() else {
        return;
    };
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    input.extend_from_slice(rest);
    let mut rewriter = AuthorityRewriter::new();
    let mut out = Vec::new();
    for piece in input.chunks(usize::from(read_size).max(1)) {
        let mut at = 0;
        while at < piece.len() {
            match rewriter.feed(&piece[at..], &mut out) {
                Ok(used) => {
                    assert!(used > 0, "no progress with drained output");
                    at += used;
                    out.clear();
                }
                Err(_) => return,
            }
        }
    }
});
