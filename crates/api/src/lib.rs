//! The agent's API, shared by the agent, the CLI and the CNI plugin.
//!
//! Wire format: one JSON request per connection on the agent's Unix
//! socket, terminated by a newline; the agent answers with one JSON
//! [`Response`] and closes. Small, debuggable with `socat`, and the socket
//! file's permissions (root only) are the access control.

mod client;
mod types;

pub use client::{Client, ClientError};
pub use types::*;

/// Where the agent listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/twill/twill.sock";
/// Environment variable the CLI reads for the socket path.
pub const SOCKET_ENV: &str = "TWILL_SOCKET";
