//! DNS messages, through hickory-proto: what the proxy needs to know of a
//! query (its one question), the REFUSED answer to a denied query, and the
//! addresses a response carries for each name. Pure: bytes in, values out.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use twill_policy::fqdn::Answer;
use twill_policy::l7_dns::canonical;

/// Why a datagram is not a query the proxy can judge. Such datagrams are
/// dropped and counted.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("not a DNS message: {0}")]
    Parse(#[source] hickory_proto::ProtoError),
    #[error("a response where a query was expected")]
    NotAQuery,
    #[error("{0} questions; a query has exactly one")]
    QuestionCount(usize),
}

/// The parts of a query the policy and the flow need.
#[derive(Debug, Clone)]
pub struct ParsedQuery {
    pub id: u16,
    pub op_code: OpCode,
    /// The question's name, canonical (lowercase, trailing dot).
    pub name: String,
    pub qtype: RecordType,
    pub message: Message,
}

pub fn parse_query(bytes: &[u8]) -> Result<ParsedQuery, MessageError> {
    let message = Message::from_vec(bytes).map_err(MessageError::Parse)?;
    if message.message_type() != MessageType::Query {
        return Err(MessageError::NotAQuery);
    }
    let [q] = message.queries() else {
        return Err(MessageError::QuestionCount(message.queries().len()));
    };
    Ok(ParsedQuery {
        id: message.id(),
        op_code: message.op_code(),
        name: canonical(&q.name().to_ascii()),
        qtype: q.query_type(),
        message: message.clone(),
    })
}

/// An answer with `rcode` for `query`: its id, opcode and question, as a
/// resolver expects (Cilium answers denied lookups with REFUSED).
pub fn error_response(query: &ParsedQuery, rcode: ResponseCode) -> Vec<u8> {
    let mut m = Message::error_msg(query.id, query.op_code, rcode);
    m.set_recursion_desired(query.message.recursion_desired());
    m.set_recursion_available(true);
    for q in query.message.queries() {
        m.add_query(Query::clone(q));
    }
    // Encoding a message built from a parsed question cannot fail short
    // of a bug; an empty reply would then be dropped by the client.
    m.to_vec().unwrap_or_default()
}

/// What a response said, for the FQDN cache and the DNS flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseInfo {
    pub id: u16,
    pub rcode: u16,
    /// Per name, the A/AAAA addresses it resolves to, with the smallest
    /// TTL on the way. The queried name gets the addresses at the end of
    /// its CNAME chain, as does every name on the chain.
    pub answers: Vec<Answer>,
    /// The CNAME targets seen, for the flow.
    pub cnames: Vec<String>,
}

/// How long a CNAME chain may be before it is taken as a loop.
const MAX_CHAIN: usize = 16;

pub fn parse_response(bytes: &[u8]) -> Result<ResponseInfo, MessageError> {
    let m = Message::from_vec(bytes).map_err(MessageError::Parse)?;
    if m.message_type() != MessageType::Response {
        return Err(MessageError::NotAQuery);
    }
    let mut direct: BTreeMap<String, (Vec<IpAddr>, u32)> = BTreeMap::new();
    let mut alias: BTreeMap<String, (String, u32)> = BTreeMap::new();
    for r in m.answers() {
        let owner = canonical(&r.name().to_ascii());
        let ip = match r.data() {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            RData::CNAME(c) => {
                alias.insert(owner, (canonical(&c.0.to_ascii()), r.ttl()));
                continue;
            }
            _ => continue,
        };
        let e = direct.entry(owner).or_insert((vec![], u32::MAX));
        if !e.0.contains(&ip) {
            e.0.push(ip);
        }
        e.1 = e.1.min(r.ttl());
    }
    let mut answers: BTreeMap<String, Answer> = BTreeMap::new();
    let mut add = |name: &str, ips: &[IpAddr], ttl: u32| {
        let a = answers.entry(name.to_string()).or_insert(Answer { name: name.into(), ips: vec![], ttl });
        for ip in ips {
            if !a.ips.contains(ip) {
                a.ips.push(*ip);
            }
        }
        a.ttl = a.ttl.min(ttl);
    };
    for (name, (ips, ttl)) in &direct {
        add(name, ips, *ttl);
    }
    for start in alias.keys() {
        let (mut at, mut ttl, mut chain) = (start.clone(), u32::MAX, vec![start.clone()]);
        while let Some((next, t)) = alias.get(&at) {
            if chain.len() > MAX_CHAIN || chain.contains(next) {
                break;
            }
            ttl = ttl.min(*t);
            chain.push(next.clone());
            at = next.clone();
        }
        if let Some((ips, t)) = direct.get(&at) {
            for name in &chain {
                add(name, ips, ttl.min(*t));
            }
        }
    }
    Ok(ResponseInfo {
        id: m.id(),
        rcode: u16::from(m.response_code()),
        answers: answers.into_values().collect(),
        cnames: alias.values().map(|(t, _)| t.clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, Record};
    use std::str::FromStr;

    fn query(name: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(4242).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    #[test]
    fn a_query_is_read_with_its_canonical_name() {
        let q = parse_query(&query("WWW.X.Test.")).unwrap();
        assert_eq!((q.id, q.name.as_str(), q.qtype), (4242, "www.x.test.", RecordType::A));
    }

    #[test]
    fn refused_keeps_id_and_question() {
        let q = parse_query(&query("no.test.")).unwrap();
        let r = Message::from_vec(&error_response(&q, ResponseCode::Refused)).unwrap();
        assert_eq!(r.id(), 4242);
        assert_eq!(r.message_type(), MessageType::Response);
        assert_eq!(r.response_code(), ResponseCode::Refused);
        assert_eq!(r.queries()[0].name().to_ascii(), "no.test.");
        assert!(r.recursion_desired());
    }

    #[test]
    fn garbage_and_responses_are_not_queries() {
        assert!(matches!(parse_query(b"\x01\x02"), Err(MessageError::Parse(_))));
        let q = parse_query(&query("a.test.")).unwrap();
        let resp = error_response(&q, ResponseCode::NoError);
        assert!(matches!(parse_query(&resp), Err(MessageError::NotAQuery)));
        let mut none = Message::new();
        none.set_id(1);
        assert!(matches!(parse_query(&none.to_vec().unwrap()), Err(MessageError::QuestionCount(0))));
    }

    #[test]
    fn cname_chains_give_every_name_the_final_addresses() {
        let mut m = Message::new();
        m.set_id(7).set_message_type(MessageType::Response);
        let n = |s: &str| Name::from_str(s).unwrap();
        m.add_answer(Record::from_rdata(n("www.x.test."), 300, RData::CNAME(CNAME(n("edge.cdn.test.")))));
        m.add_answer(Record::from_rdata(n("edge.cdn.test."), 60, RData::A(A::new(10, 1, 2, 3))));
        m.add_answer(Record::from_rdata(n("edge.cdn.test."), 90, RData::A(A::new(10, 1, 2, 4))));
        let info = parse_response(&m.to_vec().unwrap()).unwrap();
        assert_eq!(info.answers.len(), 2);
        for a in &info.answers {
            assert_eq!(a.ips.len(), 2, "{a:?}");
            assert_eq!(a.ttl, 60, "the smallest TTL on the way: {a:?}");
        }
        assert_eq!(info.cnames, vec!["edge.cdn.test.".to_string()]);
    }
}
