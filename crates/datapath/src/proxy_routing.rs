//! The host routing the L7 proxy redirect needs (Cilium's rule 9 and
//! table 2004): packets the programs assigned to a proxy socket carry
//! `MARK_MAGIC_TO_PROXY`, and
//!
//! ```text
//! ip rule add fwmark 0x200/0xf00 lookup 2004 pref 9
//! ip route add local 0.0.0.0/0 dev lo table 2004
//! ```
//!
//! makes the stack deliver them locally, to the assigned socket, though
//! their destination is an endpoint's (or a remote) address. Installing is
//! idempotent; removing leaves nothing behind and ignores what is absent.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::{
    route::{RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType},
    rule::{RuleAction, RuleAttribute, RuleMessage},
    AddressFamily, RouteNetlinkMessage,
};
use twill_abi::{MARK_MAGIC_MASK, MARK_MAGIC_TO_PROXY, PROXY_ROUTE_TABLE};

use crate::{netdev, netdev_error::NetdevError, netlink::Rtnl};

/// Cilium's preference for its proxy rule: before the main table (32766).
pub const PROXY_RULE_PRIORITY: u32 = 9;

fn rule_message() -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.action = RuleAction::ToTable;
    // Tables above 255 go in the attribute; the header says "see there".
    m.header.table = RouteHeader::RT_TABLE_UNSPEC;
    m.attributes.push(RuleAttribute::Priority(PROXY_RULE_PRIORITY));
    m.attributes.push(RuleAttribute::FwMark(MARK_MAGIC_TO_PROXY));
    m.attributes.push(RuleAttribute::FwMask(MARK_MAGIC_MASK));
    m.attributes.push(RuleAttribute::Table(PROXY_ROUTE_TABLE));
    m
}

fn route_message(lo: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.table = RouteHeader::RT_TABLE_UNSPEC;
    m.header.protocol = RouteProtocol::Boot;
    m.header.kind = RouteType::Local;
    m.header.scope = RouteScope::Host;
    m.header.destination_prefix_length = 0;
    m.attributes.push(RouteAttribute::Table(PROXY_ROUTE_TABLE));
    m.attributes.push(RouteAttribute::Oif(lo));
    m
}

fn open() -> Result<Rtnl, NetdevError> {
    Rtnl::open().map_err(|source| NetdevError::Socket { source })
}

fn rule_text(verb: &str) -> String {
    format!(
        "rule {verb} fwmark {MARK_MAGIC_TO_PROXY:#x}/{MARK_MAGIC_MASK:#x} lookup {PROXY_ROUTE_TABLE} pref {PROXY_RULE_PRIORITY}"
    )
}

/// Installs the rule and the local route, in the caller's network
/// namespace. Idempotent.
pub fn install_proxy_routing() -> Result<(), NetdevError> {
    let lo = netdev::ifindex("lo").ok_or_else(|| NetdevError::NoDevice("lo".into()))?;
    let mut rtnl = open()?;
    rtnl.execute(RouteNetlinkMessage::NewRoute(route_message(lo)), NLM_F_CREATE | NLM_F_REPLACE).map_err(
        |source| NetdevError::Netlink {
            operation: format!("route replace local 0.0.0.0/0 dev lo table {PROXY_ROUTE_TABLE}"),
            source,
        },
    )?;
    match rtnl.execute(RouteNetlinkMessage::NewRule(rule_message()), NLM_F_CREATE | NLM_F_EXCL) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(source) => Err(NetdevError::Netlink { operation: rule_text("add"), source }),
    }
}

/// Removes what [`install_proxy_routing`] installed. Absent is fine.
pub fn remove_proxy_routing() -> Result<(), NetdevError> {
    let mut rtnl = open()?;
    let absent = |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH));
    match rtnl.execute(RouteNetlinkMessage::DelRule(rule_message()), 0) {
        Ok(()) => {}
        Err(e) if absent(&e) => {}
        Err(source) => return Err(NetdevError::Netlink { operation: rule_text("del"), source }),
    }
    let lo = netdev::ifindex("lo").unwrap_or(1);
    match rtnl.execute(RouteNetlinkMessage::DelRoute(route_message(lo)), 0) {
        Ok(()) => Ok(()),
        Err(e) if absent(&e) => Ok(()),
        Err(source) => Err(NetdevError::Netlink {
            operation: format!("route del local 0.0.0.0/0 dev lo table {PROXY_ROUTE_TABLE}"),
            source,
        }),
    }
}
