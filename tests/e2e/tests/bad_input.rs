//! Bad input: one-line errors naming the problem, non-zero exits, and
//! nothing half-created.

use twill_e2e::Node;

fn one_line(err: &str) -> &str {
    let trimmed = err.trim_end();
    assert_eq!(trimmed.lines().count(), 1, "error should be one line: {err:?}");
    trimmed
}

#[test]
fn unknown_and_duplicate_names() {
    let node = Node::start("names");
    node.endpoint("a", "default", "");
    let err = node.twill_err(&["endpoint", "get", "nope"]);
    assert!(one_line(&err).contains("endpoint default/nope does not exist"), "{err}");
    let err = node.twill_err(&["endpoint", "delete", "nope"]);
    assert!(one_line(&err).contains("does not exist"), "{err}");
    let err = node.twill_err(&["endpoint", "create", "a"]);
    assert!(one_line(&err).contains("endpoint default/a already exists"), "{err}");
    let err = node.twill_err(&["endpoint", "create", "x", "--namespace", "missing"]);
    assert!(one_line(&err).contains("namespace missing does not exist"), "{err}");
    let err = node.twill_err(&["endpoint", "create", "Bad_Name"]);
    assert!(one_line(&err).contains("endpoint name \"Bad_Name\""), "{err}");
    let err = node.twill_err(&["namespace", "create", "default"]);
    assert!(one_line(&err).contains("already exists"), "{err}");
    assert_eq!(node.endpoint_netns().len(), 1, "nothing created by failed requests");
}

#[test]
fn bad_label_syntax_changes_nothing() {
    let node = Node::start("labels");
    for (labels, needle) in [
        ("app", "expected KEY=VALUE"),
        ("app=a b", "only letters, digits"),
        ("-x=1", "must start and end"),
        ("app=1,app=2", "given twice"),
    ] {
        let err = node.twill_err(&["endpoint", "create", "x", "--labels", labels]);
        assert!(one_line(&err).contains(needle), "{labels}: {err}");
    }
    assert!(node.endpoint_netns().is_empty());
    assert!(node.twill_json(&["endpoint", "list"]).as_array().unwrap().is_empty());
    let ipcache = node.twill_json(&["bpf", "ipcache", "list"]);
    assert!(ipcache.as_array().unwrap().iter().all(|e| e["identity"] == 1), "only host entries: {ipcache}");

    node.endpoint("a", "default", "app=a");
    let before = node.twill_json(&["endpoint", "get", "a"]);
    let err = node.twill_err(&["endpoint", "label", "a", "app=a b"]);
    assert!(one_line(&err).contains("app=a b"), "{err}");
    assert_eq!(node.twill_json(&["endpoint", "get", "a"]), before, "a failed relabel changes nothing");
}

#[test]
fn exhausted_pool_fails_cleanly() {
    // A /29 leaves 5 addresses after network, router and broadcast.
    let node = Node::start_with_cidr("pool", "10.203.0.0/29");
    for i in 0..5 {
        node.endpoint(&format!("e{i}"), "default", "");
    }
    let err = node.twill_err(&["endpoint", "create", "e5"]);
    assert!(one_line(&err).contains("pod CIDR 10.203.0.0/29 is exhausted"), "{err}");
    assert_eq!(node.endpoint_netns().len(), 5, "no half-created endpoint");
    assert_eq!(node.twill_json(&["identity", "list"]).as_array().unwrap().len(), 11, "10 reserved + 1");
    node.twill_ok(&["endpoint", "delete", "e3"]);
    let e = node.endpoint("e5", "default", "");
    assert_eq!(e["ipv4"], "10.203.0.5", "freed address is usable again");
}

#[test]
fn unreachable_agent() {
    let out = std::process::Command::new(twill_e2e::bin_dir().join("twill"))
        .args(["--socket", "/nonexistent/twill.sock", "endpoint", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(one_line(&err).contains("cannot reach the Twill agent at /nonexistent/twill.sock"), "{err}");

    let out = std::process::Command::new(twill_e2e::bin_dir().join("twill"))
        .args(["endpoint", "list"])
        .env("TWILL_SOCKET", "/nonexistent/env.sock")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/env.sock"),
        "$TWILL_SOCKET is honoured"
    );
}

#[test]
fn agent_refuses_bad_flags() {
    let agent = twill_e2e::bin_dir().join("twill-agent");
    let out = std::process::Command::new(&agent).args(["--pod-cidr", "10.0.0.1/24"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pod-cidr: \"10.0.0.1/24\": host bits are set"));
}
