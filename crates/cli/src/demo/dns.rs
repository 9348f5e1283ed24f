//! A tiny, real DNS server for the demo (RFC 1035 over UDP and TCP, messages by
//! hickory-proto): it knows one name and says NXDOMAIN to everything else. The sidecars of
//! `examples/store-billing` resolve egress names with it (`Mesh` `spec.dns`), so the egress
//! story runs offline and shows that the proxy connects to what *it* resolved.

use std::net::Ipv4Addr;

use anyhow::Context;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Answers for exactly one name.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The name served (compared case-insensitively).
    pub name: Name,
    /// Its only A record.
    pub address: Ipv4Addr,
}

/// Short, so a restarted demo's new address is picked up quickly.
const TTL: u32 = 5;

/// Serves `zone` on 127.0.0.1:`port`, UDP and TCP, forever.
pub async fn serve(port: u16, zone: Zone) -> anyhow::Result<()> {
    let udp = UdpSocket::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding DNS on udp 127.0.0.1:{port}"))?;
    let tcp = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding DNS on tcp 127.0.0.1:{port}"))?;
    let tcp_zone = zone.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = tcp.accept().await {
            tokio::spawn(serve_tcp(stream, tcp_zone.clone()));
        }
    });
    let mut buf = vec![0; 4096];
    loop {
        let (len, peer) = udp.recv_from(&mut buf).await?;
        if let Some(reply) = answer(&buf[..len], &zone) {
            let _ = udp.send_to(&reply, peer).await;
        }
    }
}

/// DNS over TCP: each message is preceded by its length (RFC 1035 §4.2.2).
async fn serve_tcp(mut stream: TcpStream, zone: Zone) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut query = vec![0; usize::from(len)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        let Some(reply) = answer(&query, &zone) else {
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

/// The wire-format reply to a wire-format query; `None` for garbage (dropped, as servers do).
pub fn answer(query: &[u8], zone: &Zone) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.authoritative = true;
    reply.queries.clone_from(&query.queries);
    match (query.metadata.op_code, query.queries.as_slice()) {
        (OpCode::Query, [question]) if question.name() == &zone.name => {
            if question.query_type() == RecordType::A {
                let record =
                    Record::from_rdata(question.name().clone(), TTL, RData::A(A(zone.address)));
                reply.answers.push(record);
            } // other types of a known name: NOERROR, no data
        }
        (OpCode::Query, [_]) => reply.metadata.response_code = ResponseCode::NXDomain,
        _ => reply.metadata.response_code = ResponseCode::NotImp,
    }
    reply.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn ask(name: &str, kind: RecordType) -> Message {
        let zone = Zone {
            name: Name::from_ascii("api.stripe.com.").unwrap_or_default(),
            address: Ipv4Addr::new(127, 9, 8, 7),
        };
        let mut query = Message::query();
        query.queries.push(Query::query(
            Name::from_ascii(name).unwrap_or_default(),
            kind,
        ));
        let bytes = query.to_vec().unwrap_or_default();
        let reply = answer(&bytes, &zone).unwrap_or_else(|| panic!("no answer"));
        Message::from_vec(&reply).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_one_name_resolves_and_everything_else_is_nxdomain() {
        let reply = ask("API.Stripe.com.", RecordType::A);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(
            reply.answers[0].data,
            RData::A(A(Ipv4Addr::new(127, 9, 8, 7)))
        );
        let reply = ask("api.stripe.com.", RecordType::AAAA);
        assert!(reply.answers.is_empty() && reply.metadata.response_code == ResponseCode::NoError);
        assert_eq!(
            ask("example.com.", RecordType::A).metadata.response_code,
            ResponseCode::NXDomain
        );
    }
}
