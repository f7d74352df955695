//! The network configuration a runtime pipes to the plugin, read field
//! by field so that every problem names the field and why.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::{
    error::{code, CniError},
    version::{Version, SUPPORTED},
};

pub const DEFAULT_QUEUE_DIR: &str = "/var/lib/twill/cni-queue";
pub const DEFAULT_NAMESPACE: &str = "default";

/// Where to read a container's labels when no orchestrator passes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containerd {
    /// containerd's gRPC socket.
    pub address: PathBuf,
    /// containerd namespace of the containers (ctr's default is "default").
    pub namespace: String,
}

/// DNS settings handed back in the result, as the spec's `dns` object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// One container attachment the runtime still considers valid (GC).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ValidAttachment {
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub version: Version,
    pub name: String,
    pub agent_socket: PathBuf,
    pub queue_dir: PathBuf,
    /// Twill namespace of endpoints no orchestrator places elsewhere.
    pub namespace: String,
    pub containerd: Option<Containerd>,
    pub dns: Option<Dns>,
    pub prev_result: Option<Value>,
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

/// The version in force: `cniVersion`, else the highest supported entry of
/// `cniVersions`. Read first, on its own, so that even a config with other
/// problems gets its error in the version it asked for.
pub fn version_of(config: &Value) -> Result<Version, CniError> {
    let incompatible = |v: &str| {
        CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("incompatible CNI version {v:?}: twill-cni supports {}", Version::supported_list()),
        )
    };
    match config.get("cniVersion") {
        Some(Value::String(v)) => return Version::parse(v).ok_or_else(|| incompatible(v)),
        Some(_) => return Err(CniError::invalid_config("cniVersion", "must be a string")),
        None => {}
    }
    match config.get("cniVersions") {
        Some(Value::Array(list)) => {
            let mut offered = Vec::new();
            for v in list {
                let v = v
                    .as_str()
                    .ok_or_else(|| CniError::invalid_config("cniVersions", "must be a list of strings"))?;
                offered.push(v);
            }
            SUPPORTED
                .iter()
                .rev()
                .copied()
                .find(|s| offered.contains(&s.as_str()))
                .ok_or_else(|| incompatible(&offered.join(", ")))
        }
        Some(_) => Err(CniError::invalid_config("cniVersions", "must be a list of strings")),
        None => Err(CniError::invalid_config("cniVersion", "is missing")),
    }
}

fn string(object: &Map<String, Value>, field: &str) -> Result<Option<String>, CniError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(CniError::invalid_config(field, "must be a string")),
    }
}

fn strings(object: &Map<String, Value>, field: &str, path: &str) -> Result<Vec<String>, CniError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| CniError::invalid_config(path, "must be a list of strings")),
        Some(_) => Err(CniError::invalid_config(path, "must be a list of strings")),
    }
}

fn object<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>, CniError> {
    value.as_object().ok_or_else(|| CniError::invalid_config(field, "must be an object"))
}

impl NetConf {
    /// Parses stdin. Malformed JSON is a decode failure (code 6); a wrong
    /// field is an invalid config (code 7) naming it; an unknown version
    /// is code 1.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let value: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(code::DECODE, format!("network config on stdin is not valid JSON: {e}"))
        })?;
        Self::from_value(&value)
    }

    pub fn from_value(value: &Value) -> Result<NetConf, CniError> {
        let top = value
            .as_object()
            .ok_or_else(|| CniError::new(code::DECODE, "network config on stdin must be a JSON object"))?;
        let version = version_of(value)?;
        let name = string(top, "name")?.ok_or_else(|| CniError::invalid_config("name", "is missing"))?;
        if name.is_empty() {
            return Err(CniError::invalid_config("name", "must not be empty"));
        }
        if string(top, "type")?.is_none() {
            return Err(CniError::invalid_config("type", "is missing"));
        }
        if top.get("ipam").is_some_and(|v| !v.is_null()) {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "network config field \"ipam\": twill-cni takes addresses from the Twill agent's IPAM; remove the field",
            ));
        }
        let agent_socket = string(top, "agentSocket")?
            .map(PathBuf::from)
            .unwrap_or_else(|| twill_api::DEFAULT_SOCKET.into());
        let queue_dir =
            string(top, "queueDir")?.map(PathBuf::from).unwrap_or_else(|| DEFAULT_QUEUE_DIR.into());
        for (field, path) in [("agentSocket", &agent_socket), ("queueDir", &queue_dir)] {
            if !path.is_absolute() {
                return Err(CniError::invalid_config(field, format!("{:?} must be an absolute path", path)));
            }
        }
        let namespace = string(top, "namespace")?.unwrap_or_else(|| DEFAULT_NAMESPACE.into());
        let containerd = match top.get("containerd") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let c = object(v, "containerd")?;
                let address = string(c, "address")?
                    .ok_or_else(|| CniError::invalid_config("containerd.address", "is missing"))?;
                if !address.starts_with('/') {
                    return Err(CniError::invalid_config(
                        "containerd.address",
                        format!("{address:?} must be the absolute path of containerd's socket"),
                    ));
                }
                let namespace = string(c, "namespace")?.unwrap_or_else(|| "default".into());
                Some(Containerd { address: address.into(), namespace })
            }
        };
        let dns = match top.get("dns") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let d = object(v, "dns")?;
                Some(Dns {
                    nameservers: strings(d, "nameservers", "dns.nameservers")?,
                    domain: string(d, "domain")
                        .map_err(|_| CniError::invalid_config("dns.domain", "must be a string"))?,
                    search: strings(d, "search", "dns.search")?,
                    options: strings(d, "options", "dns.options")?,
                })
            }
        };
        let prev_result = match top.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(_) => return Err(CniError::invalid_config("prevResult", "must be an object")),
        };
        // 1.1.0 names it valid-attachments; earlier drafts used attachments.
        let listed = top
            .get("cni.dev/valid-attachments")
            .map(|v| ("cni.dev/valid-attachments", v))
            .or_else(|| top.get("cni.dev/attachments").map(|v| ("cni.dev/attachments", v)));
        let valid_attachments = match listed {
            None => None,
            Some((field, v)) => Some(parse_attachments(field, v)?),
        };
        Ok(NetConf {
            version,
            name,
            agent_socket,
            queue_dir,
            namespace,
            containerd,
            dns,
            prev_result,
            valid_attachments,
        })
    }
}

fn parse_attachments(field: &str, value: &Value) -> Result<Vec<ValidAttachment>, CniError> {
    let list = value.as_array().ok_or_else(|| CniError::invalid_config(field, "must be a list"))?;
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("{field}[{i}]");
            let o = object(item, &path)?;
            let get = |key: &str| {
                string(o, key).ok().flatten().filter(|s| !s.is_empty()).ok_or_else(|| {
                    CniError::invalid_config(&format!("{path}.{key}"), "must be a non-empty string")
                })
            };
            Ok(ValidAttachment { container_id: get("containerID")?, ifname: get("ifname")? })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<NetConf, CniError> {
        NetConf::parse(v.to_string().as_bytes())
    }

    #[test]
    fn a_full_config_parses_with_defaults_for_the_rest() {
        let c = parse(json!({
            "cniVersion": "0.4.0", "name": "twill", "type": "twill-cni",
            "containerd": {"address": "/run/c.sock"},
            "dns": {"nameservers": ["10.0.0.10"], "search": ["svc.local"]},
        }))
        .unwrap();
        assert_eq!(c.version, Version::V0_4_0);
        assert_eq!(c.agent_socket, PathBuf::from(twill_api::DEFAULT_SOCKET));
        assert_eq!(c.namespace, "default");
        assert_eq!(c.containerd.unwrap().namespace, "default");
        assert_eq!(c.dns.unwrap().nameservers, vec!["10.0.0.10"]);
    }

    #[test]
    fn cni_versions_picks_the_highest_common_version() {
        let v = json!({"cniVersions": ["0.2.0", "0.4.0", "1.0.0", "9.9.9"]});
        assert_eq!(version_of(&v).unwrap(), Version::V1_0_0);
        // An explicit cniVersion wins.
        let v = json!({"cniVersion": "0.3.1", "cniVersions": ["1.1.0"]});
        assert_eq!(version_of(&v).unwrap(), Version::V0_3_1);
        let e = version_of(&json!({"cniVersions": ["0.1.0"]})).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
    }

    #[test]
    fn problems_name_the_field_and_get_the_spec_code() {
        let cases = [
            (json!({"cniVersion": "0.2.0", "name": "n", "type": "t"}), 1, "0.2.0"),
            (json!({"name": "n", "type": "t"}), 7, "\"cniVersion\": is missing"),
            (json!({"cniVersion": "1.0.0", "type": "t"}), 7, "\"name\": is missing"),
            (json!({"cniVersion": "1.0.0", "name": "n"}), 7, "\"type\": is missing"),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "agentSocket": 3}),
                7,
                "\"agentSocket\": must be a string",
            ),
            (json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "queueDir": "rel"}), 7, "\"queueDir\""),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "containerd": {}}),
                7,
                "containerd.address",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "dns": {"search": "x"}}),
                7,
                "dns.search",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "ipam": {"type": "host-local"}}),
                2,
                "\"ipam\"",
            ),
            (
                json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "cni.dev/valid-attachments": [{"ifname": "eth0"}]}),
                7,
                "cni.dev/valid-attachments[0].containerID",
            ),
        ];
        for (config, expected, needle) in cases {
            let e = parse(config.clone()).unwrap_err();
            assert_eq!(e.code, expected, "{config}: {}", e.msg);
            assert!(e.msg.contains(needle), "{config}: {}", e.msg);
        }
        let e = NetConf::parse(b"{not json").unwrap_err();
        assert_eq!(e.code, code::DECODE);
    }

    #[test]
    fn the_older_attachments_key_is_accepted() {
        let c = parse(json!({"cniVersion": "1.1.0", "name": "n", "type": "t",
            "cni.dev/attachments": [{"containerID": "c1", "ifname": "eth0"}]}))
        .unwrap();
        assert_eq!(
            c.valid_attachments.unwrap(),
            vec![ValidAttachment { container_id: "c1".into(), ifname: "eth0".into() }]
        );
    }
}
