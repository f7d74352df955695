//! The Hubble `peer.Peer` service: where the cluster's Hubble servers are,
//! for Hubble Relay. The node list lives in a [`Peers`] handle; whoever
//! knows the nodes (this node alone when standalone, the cluster's node
//! store later) replaces the list, and every open `Notify` stream is sent
//! the difference.

use std::{pin::Pin, sync::Arc};

use tokio::sync::{mpsc, watch};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use twill_observe_proto::{
    peer::{self, peer_server::Peer, ChangeNotification, ChangeNotificationType},
    tonic::{self, Request, Response, Status},
};

/// One node's Hubble server as peers are told about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub name: String,
    /// host:port of its Hubble TCP listener ("" when it has none).
    pub address: String,
    /// The name its certificate is for, when the listener requires TLS.
    pub tls_server_name: Option<String>,
}

/// The current node list, shared by the peer service and whoever feeds it.
#[derive(Clone)]
pub struct Peers(Arc<watch::Sender<Vec<PeerInfo>>>);

impl Peers {
    pub fn new(nodes: Vec<PeerInfo>) -> Self {
        Peers(Arc::new(watch::Sender::new(nodes)))
    }

    /// Replaces the node list; open streams get the changes.
    pub fn set(&self, nodes: Vec<PeerInfo>) {
        self.0.send_replace(nodes);
    }
}

fn notification(info: &PeerInfo, kind: ChangeNotificationType) -> ChangeNotification {
    ChangeNotification {
        name: info.name.clone(),
        address: info.address.clone(),
        r#type: kind as i32,
        tls: info.tls_server_name.as_ref().map(|n| peer::Tls { server_name: n.clone() }),
    }
}

/// What a client that knew `old` must be told to know `new`. Nodes are
/// told apart by name, as Hubble Relay keys its connections by name.
pub fn changes(old: &[PeerInfo], new: &[PeerInfo]) -> Vec<ChangeNotification> {
    let mut out = Vec::new();
    for gone in old.iter().filter(|o| !new.iter().any(|n| n.name == o.name)) {
        out.push(notification(gone, ChangeNotificationType::PeerDeleted));
    }
    for node in new {
        match old.iter().find(|o| o.name == node.name) {
            None => out.push(notification(node, ChangeNotificationType::PeerAdded)),
            Some(before) if before != node => {
                out.push(notification(node, ChangeNotificationType::PeerUpdated))
            }
            Some(_) => {}
        }
    }
    out
}

pub struct PeerService {
    pub peers: Peers,
}

type Notifications = Pin<Box<dyn Stream<Item = Result<ChangeNotification, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for PeerService {
    type NotifyStream = Notifications;

    async fn notify(&self, _: Request<peer::NotifyRequest>) -> Result<Response<Self::NotifyStream>, Status> {
        let mut nodes = self.peers.0.subscribe();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut known = Vec::new();
            loop {
                let now = nodes.borrow_and_update().clone();
                for change in changes(&known, &now) {
                    if tx.send(Ok(change)).await.is_err() {
                        return;
                    }
                }
                known = now;
                tokio::select! {
                    // The stream stays open with nothing to say; stop
                    // watching as soon as the client goes away.
                    _ = tx.closed() => return,
                    changed = nodes.changed() => if changed.is_err() { return },
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, address: &str) -> PeerInfo {
        PeerInfo { name: name.into(), address: address.into(), tls_server_name: None }
    }

    fn kinds(changes: &[ChangeNotification]) -> Vec<(String, ChangeNotificationType)> {
        changes.iter().map(|c| (c.name.clone(), c.r#type())).collect()
    }

    #[test]
    fn changes_name_added_deleted_and_updated_nodes() {
        let old = [node("a", "10.0.0.1:4244"), node("b", "10.0.0.2:4244")];
        let new = [node("b", "10.0.0.9:4244"), node("c", "10.0.0.3:4244"), node("a", "10.0.0.1:4244")];
        assert_eq!(
            kinds(&changes(&old, &new)),
            [
                ("b".into(), ChangeNotificationType::PeerUpdated),
                ("c".into(), ChangeNotificationType::PeerAdded)
            ]
        );
        assert_eq!(
            kinds(&changes(&new, &old[..1])),
            [
                ("b".into(), ChangeNotificationType::PeerDeleted),
                ("c".into(), ChangeNotificationType::PeerDeleted)
            ]
        );
        assert!(changes(&old, &old).is_empty());
    }

    #[test]
    fn tls_names_the_server_certificate() {
        let mut n = node("a", "10.0.0.1:4244");
        n.tls_server_name = Some("a.hubble".into());
        let added = changes(&[], &[n]);
        assert_eq!(added[0].tls.as_ref().map(|t| t.server_name.as_str()), Some("a.hubble"));
        assert_eq!(added[0].address, "10.0.0.1:4244");
    }

    #[tokio::test]
    async fn notify_sends_the_nodes_then_their_changes() {
        use tokio_stream::StreamExt;
        let peers = Peers::new(vec![node("a", "127.0.0.1:4244")]);
        let service = PeerService { peers: peers.clone() };
        let mut stream = service.notify(Request::new(peer::NotifyRequest {})).await.unwrap().into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!((first.name.as_str(), first.r#type()), ("a", ChangeNotificationType::PeerAdded));
        peers.set(vec![]);
        let gone = stream.next().await.unwrap().unwrap();
        assert_eq!((gone.name.as_str(), gone.r#type()), ("a", ChangeNotificationType::PeerDeleted));
    }
}
