//! Twill's DNS proxy engine. The datapath steers an endpoint's DNS
//! queries here; the engine checks each query's name against the
//! endpoint's `rules.dns`, forwards allowed ones to the server the client
//! asked, relays the answer, and reports what the answer said (names,
//! addresses, TTLs, rcode) to an observer: the FQDN cache behind
//! `toFQDNs`, and DNS flows. Denied queries get REFUSED, as in Cilium.
//!
//! Messages are read and written with hickory-proto. The socket side is
//! separate ([`transparent`]): the engine takes bytes, a client and an
//! original destination, so any front end can feed it.

pub mod engine;
pub mod harness;
pub mod message;
pub mod transparent;

pub use engine::{
    Client, DnsObserver, DnsPolicy, EndpointDnsRule, Engine, EngineConfig, Exchange, RuleTable,
    StatsSnapshot, Transport, Verdict,
};
