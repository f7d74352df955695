//! Services for Twill: the service model, Kubernetes Service and
//! EndpointSlice parsing, backend resolution, Maglev, ClusterIP and node
//! port allocation, and the desired load-balancer map state with an
//! ordered diff. Pure: no I/O, so every part is testable on its own and
//! the agent decides when and where anything is read or written.

pub mod alloc;
pub mod k8s;
pub mod maglev;
pub mod model;
pub mod resolve;
pub mod state;

pub use alloc::{AllocError, ClusterIpAllocator, IdAllocator, NodePortAllocator};
pub use k8s::{merge, parse_services, EndpointSlice, ImportSet};
pub use model::*;
pub use resolve::{resolve, EndpointView, ResolvedFrontend, ResolvedService};
pub use state::{plan, BackendAddr, Desired, FrontendAddr, LbState, Op, StateError};
