//! `twill service create` terms into a service: every flag checked and
//! named in its error, as policy import names fields.

use std::{collections::BTreeMap, net::Ipv4Addr};

use twill_api as api;
use twill_service::{
    Algorithm, Backend, BackendPort, Protocol, Service, ServiceKey, ServicePort, ServiceType, TargetPort,
};

use crate::error::{AgentError, Result};

/// Kubernetes' default ClientIP affinity timeout: three hours.
const DEFAULT_AFFINITY_SECONDS: u32 = 10800;

fn invalid(flag: &str, value: &str, reason: impl std::fmt::Display) -> AgentError {
    AgentError::Invalid(format!("--{flag} {value:?}: {reason}"))
}

/// PORT[/tcp|/udp]; the protocol only when written.
fn port_protocol(flag: &str, text: &str) -> Result<(u16, Option<Protocol>)> {
    let (port, protocol) = match text.rsplit_once('/') {
        Some((port, proto)) => (port, Some(proto.parse().map_err(|e: String| invalid(flag, text, e))?)),
        None => (text, None),
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| invalid(flag, text, "the port must be a number from 1 to 65535"))?;
    Ok((port, protocol))
}

/// IP:PORT[/tcp|/udp].
fn address_port(flag: &str, text: &str) -> Result<(Ipv4Addr, u16, Option<Protocol>)> {
    let (ip, rest) =
        text.split_once(':').ok_or_else(|| invalid(flag, text, "must be IP:PORT, e.g. 10.96.0.10:80"))?;
    let ip: Ipv4Addr =
        ip.parse().map_err(|_| invalid(flag, text, format!("{ip:?} is not an IPv4 address")))?;
    let (port, protocol) = port_protocol(flag, rest)?;
    Ok((ip, port, protocol))
}

/// Seconds, or a number with s, m or h.
fn duration_seconds(flag: &str, text: &str) -> Result<u32> {
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&text[..i], &text[i..]),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(invalid(flag, text, "must be seconds, or a number with s, m or h (90s, 10m, 3h)")),
    };
    number
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| invalid(flag, text, "must be seconds, or a number with s, m or h (90s, 10m, 3h)"))
}

fn pairs(flag: &str, items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items.iter().flat_map(|i| i.split(',')).filter(|i| !i.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| invalid(flag, item, "must be KEY=VALUE"))?;
        if k.is_empty() {
            return Err(invalid(flag, item, "the key is empty"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// The service `twill service create` describes. The model's own checks
/// (names, ranges, combinations) run when it is applied.
pub fn from_request(req: &api::ServiceCreate) -> Result<Service> {
    let mut service = Service::new(ServiceKey::new(req.namespace.clone(), req.name.clone()));
    let (cluster_ip, port, protocol) = match (&req.frontend, &req.port) {
        (Some(_), Some(_)) => {
            return Err(AgentError::Invalid(
                "--frontend and --port: give one; --frontend names the address too".into(),
            ))
        }
        (Some(frontend), None) => {
            let (ip, port, protocol) = address_port("frontend", frontend)?;
            (Some(ip), port, protocol)
        }
        (None, Some(port)) => {
            let (port, protocol) = port_protocol("port", port)?;
            (None, port, protocol)
        }
        (None, None) => {
            // The backends' port is the natural frontend port.
            let first = req
                .backends
                .first()
                .ok_or_else(|| AgentError::Invalid("--frontend or --port: a service needs a port".into()))?;
            let (_, port, protocol) = address_port("backend", first)?;
            (None, port, protocol)
        }
    };
    service.cluster_ip = cluster_ip;
    let protocol = protocol.unwrap_or(Protocol::Tcp);
    let target_port = match &req.target_port {
        None => TargetPort::Number(port),
        Some(t) => match t.parse::<u16>() {
            Ok(n) => TargetPort::Number(n),
            Err(_) if t.chars().all(|c| c.is_ascii_digit()) => {
                return Err(invalid("target-port", t, "the port must be a number from 1 to 65535"))
            }
            Err(_) => TargetPort::Name(t.clone()),
        },
    };
    service.ports.push(ServicePort {
        name: None,
        protocol,
        port,
        target_port: target_port.clone(),
        node_port: req.node_port,
    });
    for text in &req.backends {
        let (address, port, backend_protocol) = address_port("backend", text)?;
        if backend_protocol.is_some_and(|p| p != protocol) {
            return Err(invalid("backend", text, format!("the service's protocol is {protocol}")));
        }
        if req.target_port.is_some() && TargetPort::Number(port) != target_port {
            return Err(invalid("backend", text, "the port differs from --target-port; give one of them"));
        }
        service.backends.push(Backend { address, ports: vec![BackendPort { name: None, port, protocol }] });
    }
    if !req.selector.is_empty() {
        service.selector = Some(pairs("selector", &req.selector)?);
    }
    service.labels = pairs("labels", &req.labels)?;
    service.service_type = match req.service_type.as_deref() {
        None | Some("ClusterIP") => ServiceType::ClusterIp,
        Some("NodePort") => ServiceType::NodePort,
        Some(other) => return Err(invalid("type", other, "must be ClusterIP or NodePort")),
    };
    if let Some(algorithm) = &req.algorithm {
        service.algorithm = algorithm.parse().map_err(|e: String| invalid("algorithm", algorithm, e))?;
    } else {
        service.algorithm = Algorithm::Random;
    }
    service.affinity_timeout = match (req.affinity.as_deref(), &req.affinity_timeout) {
        (None, None) => None,
        (None, Some(t)) => return Err(invalid("affinity-timeout", t, "needs --affinity client-ip")),
        (Some("client-ip"), None) => Some(DEFAULT_AFFINITY_SECONDS),
        (Some("client-ip"), Some(t)) => Some(duration_seconds("affinity-timeout", t)?),
        (Some(other), _) => return Err(invalid("affinity", other, "the only affinity is client-ip")),
    };
    Ok(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(f: impl FnOnce(&mut api::ServiceCreate)) -> Result<Service> {
        let mut req =
            api::ServiceCreate { name: "web".into(), namespace: "default".into(), ..Default::default() };
        f(&mut req);
        from_request(&req)
    }

    #[test]
    fn flags_become_a_service() {
        let s = create(|r| {
            r.port = Some("80".into());
            r.target_port = Some("http".into());
            r.selector = vec!["app=web,tier=front".into()];
            r.affinity = Some("client-ip".into());
            r.affinity_timeout = Some("10m".into());
            r.algorithm = Some("maglev".into());
        })
        .unwrap();
        assert_eq!(s.cluster_ip, None, "allocated later");
        assert_eq!(s.ports[0].port, 80);
        assert_eq!(s.ports[0].target_port, TargetPort::Name("http".into()));
        assert_eq!(s.selector.unwrap().len(), 2);
        assert_eq!(s.affinity_timeout, Some(600));
        assert_eq!(s.algorithm, Algorithm::Maglev);

        let s = create(|r| {
            r.frontend = Some("10.96.0.53:53/udp".into());
            r.backends = vec!["10.200.0.5:5353/udp".into(), "10.200.0.6:5353".into()];
        })
        .unwrap();
        assert_eq!(s.cluster_ip, Some("10.96.0.53".parse().unwrap()));
        assert_eq!(s.ports[0].protocol, Protocol::Udp);
        assert_eq!(s.backends[0].ports[0].port, 5353);
        assert_eq!(s.backends[1].ports[0].protocol, Protocol::Udp, "a backend takes the service's protocol");
    }

    #[test]
    fn bad_flags_are_named() {
        let e = create(|r| r.frontend = Some("10.96.0.1".into())).unwrap_err().to_string();
        assert!(e.contains("--frontend \"10.96.0.1\": must be IP:PORT"), "{e}");
        let e = create(|r| r.port = Some("70000".into())).unwrap_err().to_string();
        assert!(e.contains("--port \"70000\""), "{e}");
        let e = create(|r| {
            r.port = Some("80".into());
            r.affinity_timeout = Some("5x".into());
            r.affinity = Some("client-ip".into());
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--affinity-timeout \"5x\""), "{e}");
        let e = create(|r| {
            r.port = Some("80/udp".into());
            r.backends = vec!["10.0.0.1:80/tcp".into()];
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--backend \"10.0.0.1:80/tcp\": the service's protocol is UDP"), "{e}");
        let e = create(|_| {}).unwrap_err().to_string();
        assert!(e.contains("needs a port"), "{e}");
    }
}
