//! Identities and namespaces as users see them.

use twill_e2e::Node;

fn identity(v: &twill_e2e::Value) -> u64 {
    v["identity"].as_u64().unwrap()
}

#[test]
fn equal_labels_share_an_identity_and_numbers_start_at_256() {
    let node = Node::start("ident");
    let a = node.endpoint("a", "default", "app=web");
    let b = node.endpoint("b", "default", "app=web");
    let c = node.endpoint("c", "default", "app=db");
    assert_eq!(identity(&a), 256);
    assert_eq!(identity(&b), 256);
    assert_eq!(identity(&c), 257);

    let got = node.twill_json(&["identity", "get", "256"]);
    let labels: Vec<&str> = got["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert!(labels.contains(&"k8s:app=web"), "{labels:?}");
    assert!(labels.contains(&"k8s:io.kubernetes.pod.namespace=default"), "{labels:?}");
    assert!(
        labels.contains(&"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default"),
        "{labels:?}"
    );
    assert_eq!(got["endpoints"], 2);

    // Cilium's reserved numbers.
    let list = node.twill_json(&["identity", "list"]);
    let reserved: Vec<(u64, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["reserved"] == true)
        .map(|i| (i["id"].as_u64().unwrap(), i["labels"][0].as_str().unwrap().to_string()))
        .collect();
    let expected = [
        (1, "host"),
        (2, "world"),
        (3, "unmanaged"),
        (4, "health"),
        (5, "init"),
        (6, "remote-node"),
        (7, "kube-apiserver"),
        (8, "ingress"),
        (9, "world-ipv4"),
        (10, "world-ipv6"),
    ];
    let expected: Vec<(u64, String)> = expected.iter().map(|(n, s)| (*n, format!("reserved:{s}"))).collect();
    assert_eq!(reserved, expected);
}

#[test]
fn identity_is_released_with_its_last_endpoint() {
    let node = Node::start("release");
    node.endpoint("a", "default", "app=web");
    node.endpoint("b", "default", "app=web");
    node.twill_ok(&["endpoint", "delete", "a"]);
    assert_eq!(node.twill_json(&["identity", "get", "256"])["endpoints"], 1);
    node.twill_ok(&["endpoint", "delete", "b"]);
    let err = node.twill_err(&["identity", "get", "256"]);
    assert!(err.contains("identity 256 does not exist"), "{err}");
    let c = node.endpoint("c", "default", "app=other");
    assert_eq!(identity(&c), 256, "the freed number is reused");
}

#[test]
fn relabeling_moves_an_endpoint_to_the_right_identity() {
    let node = Node::start("relabel");
    node.endpoint("a", "default", "app=web");
    let b = node.endpoint("b", "default", "app=db");
    let moved = node.twill_json(&["endpoint", "label", "b", "app=web"]);
    assert_eq!(identity(&moved), 256, "same labels as a now");
    assert!(node.twill_err(&["identity", "get", &identity(&b).to_string()]).contains("does not exist"));

    // The datapath sees the new identity too.
    let ipcache = node.twill_json(&["bpf", "ipcache", "list"]);
    let entry = ipcache.as_array().unwrap().iter().find(|e| e["cidr"] == "10.200.0.3/32").unwrap();
    assert_eq!(entry["identity"], 256);

    let extra = node.twill_json(&["endpoint", "label", "b", "tier=front"]);
    assert_eq!(identity(&extra), 257);
    assert_eq!(extra["labels"]["app"], "web");
    let back = node.twill_json(&["endpoint", "label", "b", "--remove", "tier"]);
    assert_eq!(identity(&back), 256);
    let err = node.twill_err(&["endpoint", "label", "b", "--remove", "nope"]);
    assert!(err.contains("no label \"nope\""), "{err}");
}

#[test]
fn namespaces_scope_endpoints_and_shape_identities() {
    let node = Node::start("ns");
    let list = node.twill_json(&["namespace", "list"]);
    assert_eq!(list[0]["name"], "default");
    assert_eq!(list[0]["labels"]["kubernetes.io/metadata.name"], "default");

    let ns = node.twill_json(&["namespace", "create", "prod", "--labels", "env=prod"]);
    assert_eq!(ns["labels"]["kubernetes.io/metadata.name"], "prod");
    assert_eq!(ns["labels"]["env"], "prod");

    // Same name in two namespaces, same labels: different identities,
    // because the namespace is part of the security labels.
    let d = node.endpoint("web", "default", "app=web");
    let p = node.endpoint("web", "prod", "app=web");
    assert_ne!(identity(&d), identity(&p));
    assert!(p["security_labels"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l == "k8s:io.cilium.k8s.namespace.labels.env=prod"));
    let only_prod = node.twill_json(&["endpoint", "list", "--namespace", "prod"]);
    assert_eq!(only_prod.as_array().unwrap().len(), 1);

    // Namespace labels flow into member identities.
    let before = identity(&p);
    node.twill_ok(&["namespace", "label", "prod", "env=staging"]);
    let after = node.twill_json(&["endpoint", "get", "web", "--namespace", "prod"]);
    assert_ne!(identity(&after), before);
    assert!(after["security_labels"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l == "k8s:io.cilium.k8s.namespace.labels.env=staging"));

    let err = node.twill_err(&["namespace", "delete", "prod"]);
    assert!(err.contains("still has 1 endpoint"), "{err}");
    let err = node.twill_err(&["namespace", "delete", "default"]);
    assert!(err.contains("cannot be deleted"), "{err}");
    let err = node.twill_err(&["namespace", "label", "prod", "kubernetes.io/metadata.name=x"]);
    assert!(err.contains("set by Twill"), "{err}");
    node.twill_ok(&["endpoint", "delete", "web", "--namespace", "prod"]);
    node.twill_ok(&["namespace", "delete", "prod"]);
    assert_eq!(node.twill_json(&["namespace", "list"]).as_array().unwrap().len(), 1);
}
