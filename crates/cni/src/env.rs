//! The environment a runtime hands a plugin: CNI_COMMAND and the variables
//! each command needs, checked with messages naming the variable.

use crate::error::{code, CniError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    fn parse(text: &str) -> Option<Command> {
        Some(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }
}

/// What the environment says about one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// CNI_ARGS, `K=V;K=V`, in order.
    pub args: Vec<(String, String)>,
}

impl Env {
    /// Reads and checks the variables `command` needs; `get` looks one up.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let command = match get("CNI_COMMAND") {
            None => return Err(CniError::invalid_env("CNI_COMMAND", "is not set")),
            Some(c) => Command::parse(&c).ok_or_else(|| {
                CniError::invalid_env(
                    "CNI_COMMAND",
                    format!("{c:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"),
                )
            })?,
        };
        let needs_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let required = |name: &str, needed: bool| -> Result<String, CniError> {
            match get(name) {
                Some(v) if !v.is_empty() => Ok(v),
                _ if needed => Err(CniError::invalid_env(name, "is not set (required for this command)")),
                _ => Ok(String::new()),
            }
        };
        let container_id = required("CNI_CONTAINERID", needs_attachment)?;
        if needs_attachment {
            check_container_id(&container_id)?;
        }
        // DEL may come after the namespace is gone: the runtime may then
        // leave CNI_NETNS empty.
        let netns = required("CNI_NETNS", matches!(command, Command::Add | Command::Check))?;
        let ifname = required("CNI_IFNAME", needs_attachment)?;
        if needs_attachment {
            check_ifname(&ifname)?;
        }
        let args = parse_args(&get("CNI_ARGS").unwrap_or_default())?;
        Ok(Env { command, container_id, netns, ifname, args })
    }

    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// As libcni checks it: a letter or digit, then letters, digits, `_.-`.
fn check_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::invalid_env(
            "CNI_CONTAINERID",
            format!(
                "{id:?} must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
            ),
        ))
    }
}

/// Linux interface names: 1-15 bytes, not `.`/`..`, no `/`, `:` or space.
fn check_ifname(name: &str) -> Result<(), CniError> {
    let reason = if name.len() > 15 {
        Some(format!("{name:?} is {} bytes long; Linux allows at most 15", name.len()))
    } else if name == "." || name == ".." {
        Some(format!("{name:?} is not a valid interface name"))
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        Some(format!("{name:?} must not contain '/', ':' or whitespace"))
    } else {
        None
    };
    match reason {
        Some(r) => Err(CniError::invalid_env("CNI_IFNAME", r)),
        None => Ok(()),
    }
}

fn parse_args(text: &str) -> Result<Vec<(String, String)>, CniError> {
    text.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("CNI_ARGS: {pair:?} is not KEY=VALUE (pairs are separated by ';')"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<Env, CniError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env::read(|k| vars.get(k).cloned())
    }

    #[test]
    fn add_needs_its_variables_and_names_the_missing_one() {
        let full = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/proc/1/ns/net"),
            ("CNI_IFNAME", "net1"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0"),
        ];
        let env = read(&full).unwrap();
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.ifname, "net1");
        assert_eq!(env.arg("K8S_POD_NAME"), Some("web-0"));
        for missing in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let vars: Vec<_> = full.iter().copied().filter(|(k, _)| *k != missing).collect();
            let e = read(&vars).unwrap_err();
            assert_eq!(e.code, code::INVALID_ENVIRONMENT);
            assert!(e.msg.starts_with(missing), "{}", e.msg);
        }
    }

    #[test]
    fn del_without_netns_and_version_without_anything_are_fine() {
        let env = read(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")]).unwrap();
        assert_eq!(env.netns, "");
        assert_eq!(read(&[("CNI_COMMAND", "VERSION")]).unwrap().command, Command::Version);
    }

    #[test]
    fn bad_values_are_named() {
        let e = read(&[("CNI_COMMAND", "PUT")]).unwrap_err();
        assert!(e.msg.contains("CNI_COMMAND") && e.msg.contains("PUT"), "{}", e.msg);
        let e =
            read(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "-x"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert!(e.msg.starts_with("CNI_CONTAINERID"), "{}", e.msg);
        let long = "a-very-long-interface";
        let e = read(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "x"), ("CNI_IFNAME", long)]).unwrap_err();
        assert!(e.msg.starts_with("CNI_IFNAME") && e.msg.contains("15"), "{}", e.msg);
        let e = read(&[("CNI_COMMAND", "VERSION"), ("CNI_ARGS", "a=1;oops")]).unwrap_err();
        assert!(e.msg.starts_with("CNI_ARGS") && e.msg.contains("oops"), "{}", e.msg);
    }
}
