//! twill-cni as a library: the CNI protocol (versions, environment,
//! network config, results, error objects), pure and unit-tested, and one
//! invocation's logic over the Twill agent API. The `twill-cni` binary
//! is a thin `main` over [`plugin::run`].

pub mod config;
pub mod containerd;
pub mod env;
pub mod error;
pub mod plugin;
pub mod result;
pub mod version;

pub use error::CniError;
pub use plugin::{run, Output};
pub use version::Version;
