//! One HTTP/2 header block, decoded with the client's HPACK context and re-encoded for
//! the server with an invalid `:authority` replaced.
//!
//! The decoder is `loona-hpack`'s (it follows the client's dynamic table, including the
//! client's table size updates). The re-encoding is written here because it is ten lines:
//! every field becomes a *literal never indexed* with a literal name (RFC 7541 §6.2.3),
//! so the server's dynamic table stays empty for the whole connection and needs no
//! mirror on our side. Never-indexed also honours the rule that an intermediary must
//! keep a field never-indexed if the client sent it so: we cannot see which ones were,
//! so all are. Blocks are never passed through unchanged, because a client block may
//! reference the client's dynamic table, which the server never sees.

use super::RewriteError;

/// The server's `SETTINGS_HEADER_TABLE_SIZE`: tonic/h2 never advertise another value, so
/// this is the most a client's table size update may ask for (RFC 7541 §4.2).
const SERVER_HEADER_TABLE_SIZE: usize = 4096;

/// The largest decoded header list (RFC 9113 §6.5.2 accounting: name + value + 32 per
/// field) we re-encode. Far above the server's own limit (hyper's 16 KiB), so anything
/// this refuses the server would have refused too; it bounds the memory a few bytes of
/// dynamic-table references can expand to.
pub(crate) const MAX_HEADER_LIST: usize = 256 * 1024;

/// What replaces an `:authority` that is not a valid URI authority.
const REPLACEMENT: &[u8] = b"localhost";

/// The client's HPACK decoding context for one connection.
pub(crate) struct HeaderBlockCodec {
    decoder: loona_hpack::Decoder<'static>,
}

impl HeaderBlockCodec {
    pub(crate) fn new() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(SERVER_HEADER_TABLE_SIZE);
        HeaderBlockCodec { decoder }
    }

    /// Decodes a complete header block (all fragments) and returns its re-encoding.
    pub(crate) fn rewrite(&mut self, block: &[u8]) -> Result<Vec<u8>, RewriteError> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut size = 0usize;
        // The whole block is decoded even past the limit: the dynamic table must stay in
        // step with the client's encoder. Only the keeping stops.
        self.decoder
            .decode_with_cb(block, |name, value| {
                size = size.saturating_add(name.len() + value.len() + 32);
                if size <= MAX_HEADER_LIST {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(RewriteError::Hpack)?;
        if size > MAX_HEADER_LIST {
            return Err(RewriteError::HeaderListTooLarge { size });
        }
        let mut out = Vec::with_capacity(size);
        for (name, value) in &fields {
            let value = if name == b":authority" && !is_authority(value) {
                REPLACEMENT
            } else {
                value
            };
            encode_never_indexed(name, value, &mut out);
        }
        Ok(out)
    }
}

/// Whether h2 will accept `value` as `:authority` (it parses it with `http`).
fn is_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// RFC 7541 §6.2.3, literal name: `0001 0000`, name string, value string (no Huffman).
fn encode_never_indexed(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x10);
    encode_string(name, out);
    encode_string(value, out);
}

/// RFC 7541 §5.2 with H = 0: the length as a 7-bit-prefix integer, then the octets.
fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    encode_integer(s.len(), 7, out);
    out.extend_from_slice(s);
}

/// RFC 7541 §5.1: an integer with an N-bit prefix; the prefix's high bits are zero.
fn encode_integer(mut value: usize, prefix_bits: u32, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        // invariant: value < max < 256, so it fits in a byte.
        out.push(value as u8);
        return;
    }
    out.push(max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    /// The first request header block grpc-python 1.85.3 (gRPC C-core 58) sent to a
    /// `unix:/tmp/wlapi/dump.sock` target, captured from the socket: `:authority` is
    /// `tmp%2Fwlapi%2Fdump.sock`, sent with incremental indexing.
    pub(crate) const C_CORE_BLOCK: &str = "40053a706174681f2f537069666665576f726b6c6f61644150492f46657463684a575453564944400a3a617574686f7269747917746d70253246776c61706925324664756d702e736f636b8386400c636f6e74656e742d74797065106170706c69636174696f6e2f677270634002746508747261696c6572734014677270632d6163636570742d656e636f64696e67176964656e746974792c206465666c6174652c20677a6970400c677270632d74696d656f7574023153400a757365722d6167656e7430677270632d707974686f6e2f312e38352e3320677270632d632f35382e302e3020286c696e75783b2063687474703229";

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn authority(fields: &[(Vec<u8>, Vec<u8>)]) -> Option<&[u8]> {
        fields
            .iter()
            .find(|(n, _)| n == b":authority")
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn c_core_authority_is_what_h2_rejects() {
        assert!(!is_authority(b"tmp%2Fwlapi%2Fdump.sock"));
        assert!(!is_authority(b"/tmp/agent.sock"));
        assert!(!is_authority(b""));
        assert!(is_authority(b"localhost"));
        assert!(is_authority(b"spire-agent:8081"));
    }

    #[test]
    fn the_c_core_block_gets_localhost_and_keeps_everything_else() {
        let mut client = loona_hpack::Decoder::new();
        let original = client.decode(&hex(C_CORE_BLOCK)).unwrap();
        let mut codec = HeaderBlockCodec::new();
        let mut server = loona_hpack::Decoder::new();
        let rewritten = server
            .decode(&codec.rewrite(&hex(C_CORE_BLOCK)).unwrap())
            .unwrap();
        assert_eq!(authority(&rewritten), Some(&b"localhost"[..]));
        assert_eq!(original.len(), rewritten.len());
        for (a, b) in original.iter().zip(&rewritten) {
            assert_eq!(a.0, b.0);
            if a.0 != b":authority" {
                assert_eq!(a.1, b.1);
            }
        }
    }

    #[test]
    fn later_blocks_that_reference_the_clients_dynamic_table_decode() {
        // As C-core does: the first request adds `:authority` (literal name) to the
        // client's dynamic table, the next ones send only its index (62).
        let mut first = vec![0x82, 0x40];
        encode_string(b":authority", &mut first);
        encode_string(b"tmp%2Fagent.sock", &mut first);
        first.push(0x40);
        encode_string(b"workload.spiffe.io", &mut first);
        encode_string(b"true", &mut first);
        // :method GET, then dynamic 63 (:authority) and 62 (workload.spiffe.io).
        let second = vec![0x82, 0xbf, 0xbe];
        let mut codec = HeaderBlockCodec::new();
        let mut server = loona_hpack::Decoder::new();
        for block in [first, second] {
            let fields = server.decode(&codec.rewrite(&block).unwrap()).unwrap();
            assert_eq!(authority(&fields), Some(&b"localhost"[..]));
            assert!(fields.contains(&(b"workload.spiffe.io".to_vec(), b"true".to_vec())));
        }
    }

    #[test]
    fn a_valid_authority_is_kept_and_nothing_is_indexed_for_the_server() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = encoder.encode([(&b":authority"[..], &b"localhost:8081"[..])]);
        let out = HeaderBlockCodec::new().rewrite(&block).unwrap();
        // 0x10: literal never indexed, literal name.
        assert_eq!(out[0], 0x10);
        let fields = loona_hpack::Decoder::new().decode(&out).unwrap();
        assert_eq!(authority(&fields), Some(&b"localhost:8081"[..]));
    }

    #[test]
    fn table_size_updates_are_honoured_and_bounded() {
        // 0x3f 0xe1 0x1f: size update to 4096 (allowed); then an indexed static field.
        let mut codec = HeaderBlockCodec::new();
        assert!(codec.rewrite(&[0x3f, 0xe1, 0x1f, 0x82]).is_ok());
        // Size update to 0 evicts everything: a reference to entry 62 then fails.
        let mut codec = HeaderBlockCodec::new();
        codec.rewrite(&[0x40, 1, b'a', 1, b'b']).unwrap();
        assert!(codec.rewrite(&[0xbe]).is_ok(), "62 is the indexed a: b");
        assert!(matches!(
            codec.rewrite(&[0x20, 0xbe]),
            Err(RewriteError::Hpack(_))
        ));
        // 4097 is more than the server advertised.
        let mut codec = HeaderBlockCodec::new();
        assert!(matches!(
            codec.rewrite(&[0x3f, 0xe2, 0x1f, 0x82]),
            Err(RewriteError::Hpack(_))
        ));
    }

    #[test]
    fn amplification_through_the_dynamic_table_is_bounded() {
        // One 4000-byte field indexed once, then referenced 100 times: ~400 KB decoded.
        let mut block = vec![0x40];
        encode_string(b"x", &mut block);
        encode_string(&[b'v'; 4000], &mut block);
        block.extend(std::iter::repeat_n(0xbe, 100));
        let err = HeaderBlockCodec::new().rewrite(&block).unwrap_err();
        assert!(
            matches!(err, RewriteError::HeaderListTooLarge { .. }),
            "{err}"
        );
    }

    #[test]
    fn integers_round_trip_through_the_decoder() {
        for n in [0usize, 1, 126, 127, 128, 255, 16_383, 16_384, 1_000_000] {
            let value = vec![b'a'; n];
            let mut out = Vec::new();
            encode_never_indexed(b"n", &value, &mut out);
            let fields = loona_hpack::Decoder::new().decode(&out).unwrap();
            assert_eq!(fields, vec![(b"n".to_vec(), value)]);
        }
    }
}
