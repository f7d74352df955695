//! Hubble-compatible observer API for Twill.
//!
//! Rust types and gRPC code generated (prost + tonic) from Twill's own
//! `.proto` files under `proto/`. Those files use the same package names,
//! service and method names, message/enum names and field numbers as Hubble's
//! public API (`flow`, `observer`, `relay`, `peer`), so the upstream `hubble` CLI and
//! Hubble Relay can talk to a Twill server, and Twill can talk to Hubble.
//!
//! Modules, one per protobuf package, and [`tls`]:
//!
//! - [`flow`]: the [`flow::Flow`] record and everything it refers to
//!   (endpoints, L2-L7 headers, verdicts, drop reasons, ...), the
//!   [`flow::FlowFilter`] used in requests, and the other stream items
//!   ([`flow::LostEvent`], [`flow::AgentEvent`], [`flow::DebugEvent`]).
//! - [`relay`]: [`relay::NodeStatusEvent`] and [`relay::NodeState`], as sent by
//!   a relay inside a flow stream.
//! - [`observer`]: the `observer.Observer` gRPC service with its request and
//!   response messages. Server side: implement
//!   [`observer::observer_server::Observer`] and serve
//!   [`observer::observer_server::ObserverServer`] with
//!   [`tonic::transport::Server`] (TCP or a Unix socket via
//!   `serve_with_incoming`). Client side:
//!   [`observer::observer_client::ObserverClient`] over a
//!   [`tonic::transport::Channel`] (`http://host:port` or `unix:/path`).
//! - [`peer`]: the `peer.Peer` gRPC service (Notify: the cluster's Hubble
//!   servers and their changes).
//! - [`tls`]: PEM certificate and key files read and checked for tonic's
//!   TLS (rustls), for servers and clients alike.
//!
//! Well-known types (`Timestamp`, `BoolValue`, `Any`, `FieldMask`, ...) are
//! [`prost_types`]. The crates the generated code is built on are re-exported
//! ([`prost`], [`prost_types`], [`tonic`]) so users get matching versions.
//!
//! Prost naming applies: messages and oneof variants are `UpperCamelCase`
//! (`IP` -> `Ip`, `TCP` -> `Tcp`), fields are `snake_case` (`Flow.IP` ->
//! `ip`, `Flow.Type` -> `r#type`, `Flow.Summary` -> `summary`), enum values
//! lose their enum-name prefix (`VERDICT_UNKNOWN` -> `Verdict::Unknown`) and
//! enum-typed fields are stored as `i32` with typed getters/setters.

pub use prost;
pub use prost_types;
pub use tonic;

/// Protobuf package `flow`: flows, filters and the other event records.
// Generated code: keep lint noise (pedantic clippy, doc-comment markup) out.
#[allow(deprecated, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod flow {
    include!(concat!(env!("OUT_DIR"), "/flow.rs"));
}

/// Protobuf package `relay`: node status items sent by a relay.
// Generated code: keep lint noise (pedantic clippy, doc-comment markup) out.
#[allow(deprecated, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod relay {
    include!(concat!(env!("OUT_DIR"), "/relay.rs"));
}

/// Protobuf package `observer`: the `observer.Observer` gRPC service.
// Generated code: keep lint noise (pedantic clippy, doc-comment markup) out.
#[allow(deprecated, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod observer {
    include!(concat!(env!("OUT_DIR"), "/observer.rs"));
}

/// Protobuf package `peer`: the `peer.Peer` gRPC service, which tells
/// Hubble Relay where the cluster's Hubble servers are.
// Generated code: keep lint noise (pedantic clippy, doc-comment markup) out.
#[allow(deprecated, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod peer {
    include!(concat!(env!("OUT_DIR"), "/peer.rs"));
}

pub mod tls;

/// Full gRPC path of `GetFlows`, as the `hubble` CLI calls it.
pub const GET_FLOWS_PATH: &str = "/observer.Observer/GetFlows";

#[cfg(test)]
mod tests;
