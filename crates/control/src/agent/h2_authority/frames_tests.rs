#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::super::block::tests::{C_CORE_BLOCK, hex};
use super::*;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_head(payload.len(), kind, flags, stream, &mut out);
    out.extend_from_slice(payload);
    out
}

/// A client connection's opening: preface and an empty SETTINGS frame.
fn opening() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out
}

fn feed_all(input: &[u8]) -> Result<Vec<u8>, RewriteError> {
    let mut rewriter = AuthorityRewriter::new();
    let mut out = Vec::new();
    let mut used = 0;
    while used < input.len() {
        used += rewriter.feed(&input[used..], &mut out)?;
    }
    Ok(out)
}

/// What the server sees: (type, flags, stream, payload) per frame after the preface.
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    bytes = bytes.strip_prefix(&PREFACE[..]).expect("preface");
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let head = FrameHead::parse(bytes[..9].try_into().unwrap());
        out.push((
            head.kind,
            head.flags,
            head.stream,
            bytes[9..9 + head.length].to_vec(),
        ));
        bytes = &bytes[9 + head.length..];
    }
    out
}

/// Decodes every header block the server receives, with one server-side decoder.
fn header_lists(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut decoder = loona_hpack::Decoder::new();
    let mut lists = Vec::new();
    let mut block = Vec::new();
    for (kind, flags, _, payload) in frames(bytes) {
        match kind {
            HEADERS => {
                let skip = if flags & PRIORITY != 0 { 5 } else { 0 };
                assert_eq!(flags & PADDED, 0);
                block = payload[skip..].to_vec();
            }
            CONTINUATION => block.extend(payload),
            _ => continue,
        }
        if flags & END_HEADERS != 0 {
            lists.push(decoder.decode(&block).unwrap());
        }
    }
    lists
}

fn authority(list: &[(Vec<u8>, Vec<u8>)]) -> &[u8] {
    &list.iter().find(|(n, _)| n == b":authority").unwrap().1
}

/// A literal with incremental indexing: name `x`, a 4000-byte value (dynamic index 62).
fn big_indexed_field() -> Vec<u8> {
    let mut field = vec![0x40, 1, b'x', 0x7f];
    let mut n = 4000 - 127;
    while n >= 128 {
        field.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    field.push(n as u8);
    field.extend(std::iter::repeat_n(b'v', 4000));
    field
}

#[test]
fn c_core_request_reaches_the_server_with_localhost() {
    let mut input = opening();
    input.extend(frame(HEADERS, END_HEADERS, 1, &hex(C_CORE_BLOCK)));
    input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"));
    let out = feed_all(&input).unwrap();
    let lists = header_lists(&out);
    assert_eq!(authority(&lists[0]), b"localhost");
    let seen = frames(&out);
    assert_eq!(seen[0], (0x4, 0, 0, vec![]), "SETTINGS untouched");
    assert_eq!(seen[2], (0x0, END_STREAM, 1, b"\0\0\0\0\0".to_vec()));
}

#[test]
fn padding_is_dropped_and_priority_and_end_stream_kept() {
    let block = hex(C_CORE_BLOCK);
    let mut payload = vec![3u8]; // pad length
    payload.extend([0x80, 0, 0, 0, 0x10]); // exclusive, depends on 0, weight 16
    payload.extend(&block);
    payload.extend([0, 0, 0]);
    let mut input = opening();
    input.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM | PADDED | PRIORITY,
        3,
        &payload,
    ));
    let out = feed_all(&input).unwrap();
    let (kind, flags, stream, payload) = frames(&out).remove(1);
    assert_eq!((kind, stream), (HEADERS, 3));
    assert_eq!(flags, END_HEADERS | END_STREAM | PRIORITY);
    assert_eq!(payload[..5], [0x80, 0, 0, 0, 0x10]);
    assert_eq!(authority(&header_lists(&out)[0]), b"localhost");
}

#[test]
fn continuations_are_joined_and_a_grown_block_is_split_within_the_frame_size() {
    // Fragment 1 indexes a 4000-byte field; fragment 2 references it 10 times, so the
    // re-encoded block (~40 KB) needs HEADERS + 2 CONTINUATION frames.
    let first = big_indexed_field();
    let mut input = opening();
    input.extend(frame(HEADERS, 0, 5, &first));
    input.extend(frame(CONTINUATION, 0, 5, &[0xbe; 5]));
    input.extend(frame(CONTINUATION, END_HEADERS, 5, &[0xbe; 5]));
    let out = feed_all(&input).unwrap();
    let seen = frames(&out);
    let kinds: Vec<_> = seen.iter().map(|f| (f.0, f.1 & END_HEADERS)).collect();
    assert_eq!(
        kinds[1..],
        [(HEADERS, 0), (CONTINUATION, 0), (CONTINUATION, END_HEADERS)]
    );
    assert!(seen.iter().all(|f| f.3.len() <= MAX_FRAME_SIZE && f.2 != 1));
    let list = &header_lists(&out)[0];
    assert_eq!(list.len(), 11);
    assert!(list.iter().all(|(n, v)| n == b"x" && v.len() == 4000));
}

#[test]
fn other_frames_pass_byte_for_byte() {
    let mut input = opening();
    input.extend(frame(0x8, 0, 0, &[0, 1, 0, 0])); // WINDOW_UPDATE
    input.extend(frame(0x6, 0, 0, b"pingpong")); // PING
    input.extend(frame(0x2, 0, 1, &[0, 0, 0, 0, 7])); // PRIORITY
    input.extend(frame(0xfa, 0x3, 9, b"unknown")); // extension frame
    let mut raw = frame(0x0, 0, 1, b"data");
    raw[5] |= 0x80; // the reserved bit, kept as sent
    input.extend(&raw);
    assert_eq!(feed_all(&input).unwrap(), input);
}

#[test]
fn a_stream_that_is_not_http2_passes_untouched() {
    let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(feed_all(input).unwrap(), input);
    let mut half = PREFACE[..10].to_vec();
    half.extend(b"garbage");
    assert_eq!(feed_all(&half).unwrap(), half);
}

#[test]
fn connection_errors_close_the_connection() {
    let block = hex(C_CORE_BLOCK);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "stray continuation",
            frame(CONTINUATION, END_HEADERS, 1, &[0x82]),
        ),
        ("interleaved", {
            let mut f = frame(HEADERS, 0, 1, &block);
            f.extend(frame(0x0, 0, 1, b"x"));
            f
        }),
        ("continuation of another stream", {
            let mut f = frame(HEADERS, 0, 1, &block);
            f.extend(frame(CONTINUATION, END_HEADERS, 3, &[0x82]));
            f
        }),
        (
            "pad too long",
            frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x82]),
        ),
        (
            "no pad length",
            frame(HEADERS, END_HEADERS | PADDED, 1, &[]),
        ),
        (
            "short priority",
            frame(HEADERS, END_HEADERS | PRIORITY, 1, &[0, 0]),
        ),
        ("stream zero", frame(HEADERS, END_HEADERS, 0, &[0x82])),
        (
            "push promise",
            frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2]),
        ),
        (
            "bad hpack",
            frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff]),
        ),
        ("huge frame", {
            let mut f = Vec::new();
            write_head(MAX_FRAME_SIZE + 1, HEADERS, 0, 1, &mut f);
            f
        }),
    ];
    for (what, bad) in cases {
        let mut input = opening();
        input.extend(bad);
        assert!(feed_all(&input).is_err(), "{what}");
    }
}

#[test]
fn a_continuation_flood_is_refused() {
    let mut input = opening();
    input.extend(frame(HEADERS, 0, 1, &[0x82]));
    for _ in 0..=(MAX_BLOCK / MAX_FRAME_SIZE) {
        input.extend(frame(CONTINUATION, 0, 1, &[0x82; MAX_FRAME_SIZE]));
    }
    assert!(matches!(feed_all(&input), Err(RewriteError::BlockTooLarge)));
}

#[test]
fn output_is_bounded_per_feed() {
    // Many one-byte references to a 4000-byte field, each its own request.
    let mut input = opening();
    let first = big_indexed_field();
    input.extend(frame(HEADERS, END_HEADERS, 1, &first));
    for stream in 0..200u32 {
        input.extend(frame(HEADERS, END_HEADERS, 3 + 2 * stream, &[0xbe]));
    }
    let mut rewriter = AuthorityRewriter::new();
    let mut out = Vec::new();
    let used = rewriter.feed(&input, &mut out).unwrap();
    assert!(used < input.len(), "stopped early");
    assert!(out.len() < HIGH_WATER + 8 * 1024, "{}", out.len());
}

fn valid_stream() -> Vec<u8> {
    let mut encoder = loona_hpack::Encoder::new();
    let mut input = opening();
    for stream in [1u32, 3, 5] {
        let block = encoder.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":authority", b"tmp%2Fagent.sock"),
            (b"x-stream", stream.to_string().as_bytes()),
        ]);
        let (a, b) = block.split_at(block.len() / 2);
        input.extend(frame(
            HEADERS,
            PRIORITY,
            stream,
            &[&[0, 0, 0, 0, 1][..], a].concat(),
        ));
        input.extend(frame(CONTINUATION, END_HEADERS, stream, b));
        input.extend(frame(0x0, END_STREAM, stream, b"body"));
    }
    input
}

proptest! {
    #[test]
    fn any_chunking_gives_the_same_output(cuts in proptest::collection::vec(1usize..64, 0..40)) {
        let input = valid_stream();
        let whole = feed_all(&input).unwrap();
        let mut rewriter = AuthorityRewriter::new();
        let mut out = Vec::new();
        let mut at = 0;
        for cut in cuts.iter().chain(std::iter::repeat(&usize::MAX)) {
            if at == input.len() { break; }
            let end = at.saturating_add(*cut).min(input.len());
            let mut chunk_at = at;
            while chunk_at < end {
                chunk_at += rewriter.feed(&input[chunk_at..end], &mut out).unwrap();
            }
            at = end;
        }
        prop_assert_eq!(&out, &whole);
        let lists = header_lists(&whole);
        prop_assert_eq!(lists.len(), 3);
        for list in &lists {
            prop_assert_eq!(authority(list), b"localhost");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut input = opening();
        input.extend(tail);
        let _ = feed_all(&input);
    }
}
