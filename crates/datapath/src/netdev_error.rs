//! The error of network plumbing, in a module of its own so that both the
//! device code (netdev) and the namespace code (netns) can return it
//! without depending on each other.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("opening a netlink socket: {source}")]
    Socket { source: io::Error },
    /// A netlink request the kernel refused; `operation` reads like the
    /// equivalent `ip` command.
    #[error("{operation}: {source}")]
    Netlink { operation: String, source: io::Error },
    #[error("device {0} not found")]
    NoDevice(String),
    #[error("network namespace {name}: {step}: {source}")]
    Netns { name: String, step: &'static str, source: io::Error },
    #[error("invalid network namespace name {0:?}")]
    InvalidNetnsName(String),
    #[error("interface {device} already exists in network namespace {netns}")]
    Exists { device: String, netns: String },
    #[error("sysctl {path}: {source}")]
    Sysctl { path: String, source: io::Error },
}
