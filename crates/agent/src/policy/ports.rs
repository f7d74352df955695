//! The port arguments users type: named ports on endpoints
//! (`--port http=80/tcp`) and the destination of a `policy trace`.

use twill_policy::{
    model::{protocol_name, PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP},
    resolve::NamedPort,
};

use crate::error::{AgentError, Result};

/// Parses NAME=PORT/PROTOCOL.
pub fn parse_named_port(text: &str) -> Result<NamedPort> {
    let bad = |why: &str| {
        AgentError::Invalid(format!("port {text:?}: {why} (expected NAME=PORT/PROTOCOL, e.g. http=80/tcp)"))
    };
    let (name, rest) = text.split_once('=').ok_or_else(|| bad("missing '='"))?;
    if !twill_policy::convert::is_port_name(name) {
        return Err(bad("the name must be 1-15 lowercase letters, digits or '-' with at least one letter"));
    }
    let (port, protocol) = rest.split_once('/').unwrap_or((rest, "tcp"));
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| bad("the port must be 1-65535"))?;
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "sctp" => PROTO_SCTP,
        _ => return Err(bad("the protocol must be tcp, udp or sctp")),
    };
    Ok(NamedPort { name: name.into(), port, protocol })
}

pub fn format_named_port(p: &NamedPort) -> String {
    format!("{}={}/{}", p.name, p.port, protocol_name(p.protocol).to_ascii_lowercase())
}

/// Parses PORT/PROTOCOL for `policy trace` (ICMP: TYPE/icmp).
pub fn parse_dport(text: &str) -> Result<(u8, u16)> {
    let bad = || {
        AgentError::Invalid(format!("--dport {text:?}: expected PORT/PROTOCOL such as 80/tcp, or TYPE/icmp"))
    };
    let (port, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
    let port: u16 = port.parse().map_err(|_| bad())?;
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "sctp" => PROTO_SCTP,
        "icmp" if port <= 255 => PROTO_ICMP,
        _ => return Err(bad()),
    };
    Ok((protocol, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_ports_round_trip_and_errors_say_what_is_expected() {
        let p = parse_named_port("http=8080/TCP").unwrap();
        assert_eq!(format_named_port(&p), "http=8080/tcp");
        assert_eq!(parse_named_port("dns=53").unwrap().protocol, PROTO_TCP);
        for bad in ["http", "http=0/tcp", "HTTP=80/tcp", "http=80/icmp", "http=99999"] {
            let e = parse_named_port(bad).unwrap_err().to_string();
            assert!(e.contains("expected NAME=PORT/PROTOCOL"), "{bad}: {e}");
        }
        assert_eq!(parse_dport("8/icmp").unwrap(), (PROTO_ICMP, 8));
        assert!(parse_dport("300/icmp").is_err());
    }
}
