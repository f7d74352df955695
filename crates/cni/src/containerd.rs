//! A container's labels, read from containerd's containers service: the
//! only place they exist when a container was started without an
//! orchestrator (`ctr run --cni --label app=web` passes no CNI_ARGS).

use std::{collections::BTreeMap, path::Path, time::Duration};

use crate::config::Containerd;

#[allow(clippy::all)]
mod proto {
    tonic::include_proto!("containerd.services.containers.v1");
}

/// How long the plugin waits for containerd before giving up: a runtime
/// waits on the plugin, so a stuck socket must not hang the ADD.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("containerd at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("containerd at {address} (namespace {namespace}) has no container {id:?}")]
    NotFound { address: String, namespace: String, id: String },
    #[error("containerd at {address}: {source}")]
    Call {
        address: String,
        #[source]
        source: tonic::Status,
    },
}

/// Runtime bookkeeping, not security-relevant: containerd and its CRI
/// plugin set these on every container.
fn is_runtime_label(key: &str) -> bool {
    ["io.containerd.", "containerd.io/", "io.cri-containerd.", "io.kubernetes."]
        .iter()
        .any(|p| key.starts_with(p))
}

/// The container's own labels. ctr names a container's CNI attachment
/// `NAMESPACE-ID`, so with that prefix the ID is tried bare as well.
/// Returns the containerd ID that matched too.
pub fn labels(
    config: &Containerd,
    container_id: &str,
) -> Result<(String, BTreeMap<String, String>), ContainerdError> {
    let address = config.address.display().to_string();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
        ContainerdError::Unreachable { address: address.clone(), reason: format!("starting a runtime: {e}") }
    })?;
    runtime.block_on(async {
        let mut client = connect(&config.address).await?;
        let mut candidates = vec![container_id.to_string()];
        if let Some(bare) = container_id.strip_prefix(&format!("{}-", config.namespace)) {
            candidates.push(bare.to_string());
        }
        for id in &candidates {
            let mut request = tonic::Request::new(proto::GetContainerRequest { id: id.clone() });
            request.set_timeout(TIMEOUT);
            let namespace = config.namespace.parse().map_err(|_| ContainerdError::Unreachable {
                address: address.clone(),
                reason: format!("namespace {:?} is not a valid header value", config.namespace),
            })?;
            request.metadata_mut().insert("containerd-namespace", namespace);
            match client.get(request).await {
                Ok(response) => {
                    let labels = response
                        .into_inner()
                        .container
                        .map(|c| c.labels)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|(k, _)| !is_runtime_label(k))
                        .collect();
                    return Ok((id.clone(), labels));
                }
                Err(status) if status.code() == tonic::Code::NotFound => continue,
                Err(source) => return Err(ContainerdError::Call { address: address.clone(), source }),
            }
        }
        Err(ContainerdError::NotFound {
            address,
            namespace: config.namespace.clone(),
            id: container_id.into(),
        })
    })
}

async fn connect(
    socket: &Path,
) -> Result<proto::containers_client::ContainersClient<tonic::transport::Channel>, ContainerdError> {
    let address = socket.display().to_string();
    let unreachable = |reason: String| ContainerdError::Unreachable { address: address.clone(), reason };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("unix:{address}"))
        .map_err(|e| unreachable(e.to_string()))?
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason = format!("{reason}: {s}");
            source = s.source();
        }
        unreachable(reason)
    })?;
    Ok(proto::containers_client::ContainersClient::new(channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_bookkeeping_labels_are_not_identity() {
        assert!(is_runtime_label("io.containerd.image.config.stop-signal"));
        assert!(is_runtime_label("io.kubernetes.pod.name"));
        assert!(!is_runtime_label("app"));
        assert!(!is_runtime_label("app.kubernetes.io/name"));
    }
}
