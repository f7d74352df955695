//! Flows: decoding datapath events into Hubble's flow records, filtering
//! them as Hubble does, keeping the last N in a ring, and serving them
//! through the Hubble-compatible `observer.Observer` gRPC service.

pub mod debug_events;
pub mod decode;
mod directory;
pub mod event_ring;
pub mod filter;
pub mod l7;
pub mod peer;
mod ring;
pub mod server;
mod services;

pub mod agent_events;

pub use agent_events::AgentEvents;
pub use debug_events::DebugEvents;
pub use decode::{decode, Clock};
pub use directory::{Directory, EndpointMeta, RemoteEndpointMeta};
pub use event_ring::{EventRing, Stamped, Window};
pub use peer::{PeerInfo, PeerService, Peers};
pub use ring::{FlowRing, Stored, DEFAULT_CAPACITY};
pub use server::ObserverService;
pub use services::{ServiceId, ServiceIndex};
pub use twill_observe_proto as proto;
