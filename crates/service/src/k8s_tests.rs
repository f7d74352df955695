use super::*;
use crate::resolve::resolve;

fn ok(text: &str) -> ImportSet {
    match parse_services("svc.yaml", text) {
        Ok(set) => set,
        Err(errors) => panic!("{}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")),
    }
}

fn errors(text: &str) -> Vec<String> {
    parse_services("svc.yaml", text).unwrap_err().iter().map(ToString::to_string).collect()
}

fn one_error(text: &str) -> String {
    let mut e = errors(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.remove(0)
}

const FULL: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  uid: 0b6c8e2a-1111-2222-3333-444455556666
  resourceVersion: "812"
  labels: {app: web, version: 1.10}
  annotations:
    service.cilium.io/lb-algorithm: maglev
    kubectl.kubernetes.io/last-applied-configuration: "{}"
spec:
  type: NodePort
  clusterIP: 10.96.0.20
  clusterIPs: [10.96.0.20]
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  selector: {app: web}
  sessionAffinity: ClientIP
  internalTrafficPolicy: Local
  externalTrafficPolicy: Local
  allocateLoadBalancerNodePorts: true
  ports:
    - name: http
      port: 80
      targetPort: web
      nodePort: 30080
      appProtocol: http
    - name: dns
      protocol: UDP
      port: 53
status:
  loadBalancer: {}
"#;

#[test]
fn a_full_service() {
    let set = ok(FULL);
    assert!(set.endpoint_slices.is_empty());
    let [s] = &set.services[..] else { panic!("{set:?}") };
    assert_eq!(s.key.to_string(), "shop/web");
    assert_eq!(s.labels["version"], "1.10");
    assert_eq!(s.cluster_ip, Some(Ipv4Addr::new(10, 96, 0, 20)));
    assert_eq!(s.service_type, ServiceType::NodePort);
    assert_eq!(s.algorithm, Algorithm::Maglev);
    assert_eq!(s.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
    assert_eq!(
        (s.internal_traffic_policy, s.external_traffic_policy),
        (TrafficPolicy::Local, TrafficPolicy::Local)
    );
    assert_eq!(s.selector, Some([("app".to_string(), "web".to_string())].into()));
    assert_eq!(
        s.ports,
        [
            ServicePort {
                name: Some("http".into()),
                protocol: Protocol::Tcp,
                port: 80,
                target_port: TargetPort::Name("web".into()),
                node_port: Some(30080),
            },
            ServicePort {
                name: Some("dns".into()),
                protocol: Protocol::Udp,
                port: 53,
                target_port: TargetPort::Number(53),
                node_port: None,
            },
        ]
    );
}

#[test]
fn defaults_and_json() {
    let set = ok(r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
        "spec": {"clusterIP": "", "ports": [{"port": 5432, "targetPort": 0}],
                 "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}}"#);
    let s = &set.services[0];
    assert_eq!(s.key, ServiceKey::new("default", "db"));
    assert_eq!((s.cluster_ip, s.selector.as_ref(), s.affinity_timeout), (None, None, Some(60)));
    assert_eq!((s.ports[0].protocol, &s.ports[0].target_port), (Protocol::Tcp, &TargetPort::Number(5432)));
    assert_eq!(s.algorithm, Algorithm::Random);
}

#[test]
fn errors_name_file_document_object_and_field() {
    let text = format!(
        "{FULL}---\napiVersion: v1\nkind: Service\nmetadata: {{name: api}}\nspec:\n  ports:\n    - {{name: a, port: 80}}\n    - {{name: b, port: 81, targetPort: 70000, protocol: SCTP}}\n"
    );
    assert_eq!(
        errors(&text),
        [
            "svc.yaml: document 2 (Service default/api): spec.ports[1].targetPort: 70000 is not a port number (1-65535)",
            "svc.yaml: document 2 (Service default/api): spec.ports[1].protocol: SCTP is not supported by Twill yet",
        ]
    );
}

#[test]
fn unsupported_features_are_refused_by_name() {
    let service = |spec: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: x}}\nspec:\n  ports: [{{port: 80}}]\n{spec}"
        )
    };
    let cases = [
        ("  type: LoadBalancer\n", "spec.type: LoadBalancer is not supported by Twill yet"),
        ("  type: ExternalName\n", "spec.type: ExternalName is not supported by Twill yet"),
        ("  clusterIP: None\n", "spec.clusterIP: None (a headless service) is not supported by Twill yet"),
        ("  clusterIP: fd00::1\n", "spec.clusterIP: IPv6 is not supported by Twill yet"),
        ("  externalIPs: [1.2.3.4]\n", "spec.externalIPs: is not supported by Twill yet"),
        ("  ipFamilies: [IPv6]\n", "spec.ipFamilies[0]: IPv6 is not supported by Twill yet"),
        (
            "  clusterIPs: [10.96.0.1, 'fd00::1']\n",
            "spec.clusterIPs[1]: a second ClusterIP (dual stack) is not supported by Twill yet",
        ),
        (
            "  publishNotReadyAddresses: true\n",
            "spec.publishNotReadyAddresses: is not supported by Twill yet",
        ),
        (
            "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 90000}}\n",
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: 90000 must be between 1 and 86400 seconds",
        ),
        (
            "  clusterIP: 10.96.0.1\n  clusterIPs: [10.96.0.2]\n",
            "spec.clusterIPs[0]: \"10.96.0.2\" must be spec.clusterIP (\"10.96.0.1\")",
        ),
        (
            "  externalTrafficPolicy: Local\n",
            "spec.externalTrafficPolicy: Local applies to NodePort services only",
        ),
        (
            "  ports: [{port: 80, nodePort: 30001}]\n",
            "spec.ports[0].nodePort: is only for NodePort services, not ClusterIP",
        ),
    ];
    for (spec, want) in cases {
        let text = service(spec).replace("  ports: [{port: 80}]\n  ports:", "  ports:");
        let got = one_error(&text);
        assert!(got.starts_with("svc.yaml: document 1 (Service default/x): "), "{got}");
        assert!(got.contains(want), "{spec}: {got}");
    }
    let got = one_error(&service("  bogus: 1\n"));
    assert!(got.contains("spec.bogus: unknown field `bogus`"), "{got}");
    // The algorithm annotation is checked too.
    let got = one_error("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  annotations: {service.cilium.io/lb-algorithm: fast}\nspec: {ports: [{port: 1}]}\n");
    assert!(got.contains("metadata.annotations.service.cilium.io/lb-algorithm: \"fast\" is not"), "{got}");
}

#[test]
fn names_kinds_versions_and_duplicates() {
    let got = errors("apiVersion: v1\nkind: Service\nmetadata: {name: Web}\nspec: {ports: [{port: 80}]}\n---\nkind: Pod\n---\napiVersion: v2\nkind: Service\n---\n[]\n");
    assert!(
        got[0].starts_with(
            "svc.yaml: document 1 (Service default/Web): metadata.name: \"Web\" is not a valid name"
        ),
        "{got:?}"
    );
    assert!(
        got[1].contains("document 2 (Pod default/<no name>): kind: \"Pod\" is not a kind Twill reads here"),
        "{got:?}"
    );
    assert!(got[2].contains("document 3 (Service default/<no name>): apiVersion: \"v2\" is not supported for Service; expected v1"), "{got:?}");
    assert!(got[3].contains("document 4 (unknown kind default/<no name>): expected a mapping"), "{got:?}");
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n";
    assert_eq!(
        one_error(&format!("{svc}---\n{svc}")),
        "svc.yaml: document 2 (Service default/web): metadata.name: the same Service is already defined by document 1"
    );
    assert!(one_error("a: [").starts_with("svc.yaml: not valid YAML"));
    assert!(one_error("apiVersion: v1\nkind: Service\nmetadata: {}\nspec: {ports: [{port: 80}]}\n")
        .ends_with("metadata.name: is required"));
}

const SLICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ext-1
  labels: {kubernetes.io/service-name: ext, endpointslice.kubernetes.io/managed-by: me}
addressType: IPv4
endpoints:
  - addresses: [10.0.1.1]
    conditions: {ready: true}
    nodeName: n1
  - addresses: [10.0.1.2]
    conditions: {ready: false}
  - addresses: [10.0.1.3]
ports: [{name: http, port: 9000, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: other-1
  namespace: prod
  labels: {kubernetes.io/service-name: other}
addressType: IPv4
endpoints: [{addresses: [10.0.2.1]}]
ports: [{port: 53, protocol: UDP}]
"#;

#[test]
fn endpoint_slices_fill_selectorless_services_and_are_all_returned() {
    let set = ok(SLICES);
    assert_eq!(set.endpoint_slices.len(), 2);
    assert_eq!(set.endpoint_slices[1].service, "other");
    assert_eq!(set.endpoint_slices[1].namespace, "prod");
    let s = &set.services[0];
    let addresses: Vec<Ipv4Addr> = s.backends.iter().map(|b| b.address).collect();
    assert_eq!(addresses, [Ipv4Addr::new(10, 0, 1, 1), Ipv4Addr::new(10, 0, 1, 3)]);
    let r = resolve(s, Ipv4Addr::new(10, 96, 0, 5), |_| None, &[]);
    assert_eq!(
        r.frontends[0].backends,
        [(Ipv4Addr::new(10, 0, 1, 1), 9000), (Ipv4Addr::new(10, 0, 1, 3), 9000)]
    );

    // Merging again, or with the slices alone, gives the same; the
    // slice for a service not given comes back.
    let mut services = set.services.clone();
    let left = merge(&mut services, &set.endpoint_slices);
    assert_eq!(services, set.services);
    assert_eq!(left, [&set.endpoint_slices[1]]);
}

#[test]
fn endpoint_slice_errors() {
    let selector = SLICES.replace("spec:\n  ports:", "spec:\n  selector: {app: x}\n  ports:");
    assert_eq!(
        one_error(&selector),
        "svc.yaml: document 2 (EndpointSlice default/ext-1): metadata.labels.kubernetes.io/service-name: names Service default/ext, which has a selector: its backends are the endpoints it selects"
    );
    let got = errors(
        &SLICES
            .replace("kubernetes.io/service-name: other", "x: y")
            .replace("10.0.1.3", "10.0.1")
            .replace("addressType: IPv4\nendpoints: [", "addressType: IPv6\nendpoints: ["),
    );
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(
        got[0].ends_with(
            "(EndpointSlice default/ext-1): endpoints[2].addresses[0]: \"10.0.1\" is not an IPv4 address"
        ),
        "{got:#?}"
    );
    assert!(got[1].ends_with("(EndpointSlice prod/other-1): metadata.labels: needs the label kubernetes.io/service-name naming the slice's Service"), "{got:#?}");
    assert!(got[2].ends_with("addressType: IPv6 is not supported by Twill yet"), "{got:#?}");
}

#[test]
fn lists_are_read_item_by_item() {
    let text = r#"
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: Service, metadata: {name: a}, spec: {ports: [{port: 80}]}}
  - {apiVersion: v1, kind: Service, metadata: {name: b}, spec: {ports: [{port: 0}]}}
"#;
    assert_eq!(one_error(text), "svc.yaml: document 1 (Service default/b): items[1].spec.ports[0].port: 0 is not a port number (1-65535)");
    let set = ok(&text.replace("port: 0", "port: 81"));
    assert_eq!(set.services.iter().map(|s| s.key.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
}

/// 30,000 Services in one file, as a large cluster's export would be.
#[test]
fn thirty_thousand_services() {
    let mut text = String::with_capacity(12 << 20);
    for i in 0..30_000u32 {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: ns-{}\n  labels:\n    app: app-{i}\n    team: t{}\n  annotations:\n    owner: someone\nspec:\n  type: ClusterIP\n  clusterIP: 10.{}.{}.{}\n  selector:\n    app: app-{i}\n  ports:\n    - name: http\n      protocol: TCP\n      port: 80\n      targetPort: 8080\n    - name: metrics\n      port: 9090\n      targetPort: metrics\n  sessionAffinity: None\n  internalTrafficPolicy: Cluster\nstatus:\n  loadBalancer: {{}}\n",
            i % 50, i % 7, 96 + (i >> 16), (i >> 8) & 255, i & 255
        ));
    }
    let start = std::time::Instant::now();
    let set = ok(&text);
    eprintln!("parsed {} bytes, 30000 services, in {:?}", text.len(), start.elapsed());
    assert_eq!(set.services.len(), 30_000);
    let s = &set.services[12345];
    assert_eq!(s.key, ServiceKey::new("ns-45", "svc-12345"));
    assert_eq!(s.cluster_ip, Some(Ipv4Addr::new(10, 96, 48, 57)));
    assert_eq!(s.ports[1].target_port, TargetPort::Name("metrics".into()));
}
