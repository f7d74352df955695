//! Network policy, pure: parsing CiliumNetworkPolicy,
//! CiliumClusterwideNetworkPolicy and NetworkPolicy YAML, and lists of
//! Cilium rules (the JSON `cilium-dbg policy import` reads), into one rule
//! model, label selectors, and resolution of rules into the per-endpoint
//! map state the datapath enforces. No I/O: every function here is a
//! function of its arguments.

pub mod convert;
pub mod fqdn;
pub mod k8s;
pub mod l7;
pub mod l7_dns;
pub mod model;
pub mod resolve;
pub mod selector;
pub mod services;
pub mod yaml;

pub use convert::{parse_policies, DocumentError, KIND_RULES};
pub use k8s::RuleLabel;
pub use model::*;
pub use selector::Selector;
