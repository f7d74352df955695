//! Flows: decoding datapath events into Hubble's flow records, filtering
//! them as Hubble does, keeping the last N in a ring, and serving them
//! through the Hubble-compatible `observer.Observer` gRPC service.

pub mod decode;
mod directory;
pub mod filter;
pub mod l7;
pub mod peer;
mod ring;
pub mod server;
mod services;

pub mod agent_events;

pub use agent_events::AgentEvents;
pub use decode::{decode, Clock};
pub use directory::{Directory, EndpointMeta, RemoteEndpointMeta};
pub use peer::{PeerInfo, PeerService, Peers};
pub use ring::{FlowRing, Stored, DEFAULT_CAPACITY};
pub use server::ObserverService;
pub use services::{ServiceId, ServiceIndex};
pub use twill_observe_proto as proto;
