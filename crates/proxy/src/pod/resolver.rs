//! The pod's resolver: a DNS server on `127.0.0.1:53` inside the pod (UDP and TCP) that
//! answers every A query with the name's virtual address ([`VirtualAddresses`]).
//!
//! AAAA and every other type get NOERROR with no records (pods are IPv4 only, and a client
//! that asked for both uses the A answer); a message that does not parse as a query gets
//! FORMERR when its header can be read, and nothing otherwise. Peer input never panics
//! ([`answer`] is fuzzed: `fuzz/fuzz_targets/pod_dns.rs`). Answers live [`TTL`] seconds:
//! short, though the table never changes, so a client's cache never outlives a sidecar.

use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::virtual_addresses::VirtualAddresses;

/// Seconds an answer may be cached.
pub const TTL: u32 = 5;

/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The wire-format reply to a wire-format query (`None`: too broken to answer, dropped).
pub fn answer(query: &[u8], table: &VirtualAddresses) -> Option<Vec<u8>> {
    let query = match Message::from_vec(query) {
        Ok(query) => query,
        Err(_) => return format_error(query),
    };
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.queries.clone_from(&query.queries);
    match (query.metadata.op_code, query.queries.as_slice()) {
        (OpCode::Query, [question])
            if question.query_type() == RecordType::A && question.query_class() == DNSClass::IN =>
        {
            let name = question.name().to_ascii();
            match table.assign(&name) {
                Some(addr) => reply.answers.push(Record::from_rdata(
                    question.name().clone(),
                    TTL,
                    RData::A(A(addr)),
                )),
                None => reply.metadata.response_code = ResponseCode::ServFail,
            }
        }
        // Other types and classes: no data.
        (OpCode::Query, [_]) => {}
        (OpCode::Query, _) => reply.metadata.response_code = ResponseCode::FormErr,
        _ => reply.metadata.response_code = ResponseCode::NotImp,
    }
    reply.to_vec().ok()
}

/// FORMERR for a message whose 12-byte header is there (its id and opcode echoed).
fn format_error(query: &[u8]) -> Option<Vec<u8>> {
    let header = query.get(..12)?;
    let id = u16::from_be_bytes([header[0], header[1]]);
    // A response is never answered (no loops between two servers).
    if header[2] & 0x80 != 0 {
        return None;
    }
    let op_code = OpCode::from_u8((header[2] >> 3) & 0x0f);
    Message::error_msg(id, op_code, ResponseCode::FormErr)
        .to_vec()
        .ok()
}

/// Serves `table` on `udp` and `tcp` until `shutdown`.
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    table: VirtualAddresses,
    shutdown: CancellationToken,
) {
    let table = Arc::new(table);
    let tasks = TaskTracker::new();
    let mut buffer = vec![0; 4096];
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            received = udp.recv_from(&mut buffer) => {
                let Ok((len, peer)) = received else { continue };
                if let Some(reply) = answer(&buffer[..len], &table) {
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
            accepted = tcp.accept() => {
                if let Ok((stream, _)) = accepted {
                    tasks.spawn(serve_tcp(stream, Arc::clone(&table), shutdown.clone()));
                }
            }
        }
    }
    tasks.close();
    tasks.wait().await;
}

/// DNS over TCP: each message is preceded by its length (RFC 1035 §4.2.2).
async fn serve_tcp(
    mut stream: TcpStream,
    table: Arc<VirtualAddresses>,
    shutdown: CancellationToken,
) {
    loop {
        let len = tokio::select! {
            () = shutdown.cancelled() => return,
            len = tokio::time::timeout(TCP_IDLE, stream.read_u16()) => match len {
                Ok(Ok(len)) => len,
                _ => return,
            },
        };
        let mut query = vec![0; usize::from(len)];
        if tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query))
            .await
            .is_err()
        {
            return;
        }
        let Some(reply) = answer(&query, &table) else {
            return;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        if stream.write_u16(len).await.is_err() || stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    use super::*;

    fn ask(table: &VirtualAddresses, name: &str, kind: RecordType) -> Message {
        let mut query = Message::query();
        query
            .queries
            .push(Query::query(Name::from_ascii(name).unwrap(), kind));
        let reply = answer(&query.to_vec().unwrap(), table).unwrap();
        Message::from_vec(&reply).unwrap()
    }

    fn address(reply: &Message) -> Ipv4Addr {
        match &reply.answers[..] {
            [record] => match &record.data {
                RData::A(A(addr)) => *addr,
                other => panic!("not an A record: {other:?}"),
            },
            other => panic!("not one answer: {other:?}"),
        }
    }

    #[test]
    fn any_name_gets_a_stable_virtual_address() {
        let table = VirtualAddresses::new(Default::default());
        let billing = address(&ask(&table, "billing.", RecordType::A));
        assert!(table.range().contains(billing));
        assert_eq!(address(&ask(&table, "BILLING", RecordType::A)), billing);
        let other = address(&ask(&table, "api.stripe.com.", RecordType::A));
        assert_ne!(other, billing);
        assert_eq!(ask(&table, "billing.", RecordType::A).answers[0].ttl, TTL);
    }

    #[test]
    fn aaaa_and_other_types_are_empty_and_not_errors() {
        let table = VirtualAddresses::new(Default::default());
        for kind in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
            let reply = ask(&table, "billing.", kind);
            assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
            assert!(reply.answers.is_empty());
        }
    }

    #[test]
    fn malformed_queries_get_formerr_or_nothing() {
        let table = VirtualAddresses::new(Default::default());
        assert_eq!(answer(b"short", &table), None);
        let mut garbage = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x05, 0, 0, 0, 0, 0, 0];
        garbage.extend_from_slice(b"\xffjunk");
        let reply = Message::from_vec(&answer(&garbage, &table).unwrap()).unwrap();
        assert_eq!(reply.metadata.id, 0x1234);
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        let mut two = Message::query();
        two.queries
            .push(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
        two.queries
            .push(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
        let reply = Message::from_vec(&answer(&two.to_vec().unwrap(), &table).unwrap()).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    }
}
