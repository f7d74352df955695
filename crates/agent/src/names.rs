//! Naming rules and the names Twill derives for kernel objects.

use std::net::Ipv4Addr;

use crate::error::AgentError;

/// Endpoint and namespace names follow Kubernetes' DNS-1123 label rule, so
/// they can become pod and namespace names unchanged in other modes.
pub fn check_dns_label(what: &str, name: &str) -> Result<(), AgentError> {
    let problem = if name.is_empty() {
        Some("must not be empty".to_string())
    } else if name.len() > 63 {
        Some(format!("is {} characters long; at most 63 are allowed", name.len()))
    } else if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        Some("may contain only lowercase letters, digits and '-'".to_string())
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("must start and end with a letter or digit".to_string())
    } else {
        None
    };
    match problem {
        Some(reason) => Err(AgentError::Invalid(format!("{what} name {name:?} {reason}"))),
        None => Ok(()),
    }
}

/// Node names end up in namespace names: allow hostname characters only.
pub fn check_node_name(name: &str) -> Result<(), AgentError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(AgentError::Invalid(format!("node name {name:?} must be 1-63 letters, digits, '-' or '.'")))
    }
}

/// The network namespace of an endpoint. `_` cannot occur in DNS labels,
/// so the parts cannot run into each other; the node name keeps agents
/// sharing one machine apart.
pub fn netns_name(node: &str, namespace: &str, name: &str) -> String {
    format!("{}{namespace}_{name}", netns_prefix(node))
}

pub fn netns_prefix(node: &str) -> String {
    format!("twill_{node}_")
}

/// Host-side veth of endpoint `id` (at most 15 bytes: "twep" + 5 digits).
pub fn host_device(id: u32) -> String {
    format!("twep{id}")
}

pub const HOST_DEVICE_PREFIX: &str = "twep";

/// Locally administered MACs derived from the endpoint address, so they
/// are unique on the node and stable across restarts.
pub fn endpoint_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x74, o[0], o[1], o[2], o[3]]
}

pub fn host_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x77, o[0], o[1], o[2], o[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(check_dns_label("endpoint", "web-1").is_ok());
        for bad in ["", "Web", "-a", "a-", "a_b", &"a".repeat(64)] {
            let err = check_dns_label("endpoint", bad).unwrap_err().to_string();
            assert!(err.starts_with("endpoint name"), "{err}");
        }
    }

    #[test]
    fn derived_names_fit_kernel_limits() {
        assert!(host_device(65535).len() <= 15);
        assert_ne!(netns_name("n", "a-b", "c"), netns_name("n", "a", "b-c"));
    }
}
