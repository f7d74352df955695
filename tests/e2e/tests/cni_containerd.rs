//! A real runtime: Debian's containerd and runc, started by the test with
//! its own root, state and socket, and `ctr run --cni` on a busybox image
//! built here. ctr reads CNI config and plugins only from /etc/cni/net.d
//! and /opt/cni/bin (and caches under /var/lib/cni), so it runs in a
//! private mount namespace where those are the test's own directories
//! (overlays whose writes land in the test's directory): the machine's are
//! never touched.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use twill_e2e::{run_ok, wait_until, Node, Value};

const IMAGE: &str = "docker.io/twill-test/busybox:latest";

struct Containerd {
    dir: PathBuf,
    daemon: Option<Child>,
    runs: Vec<Child>,
    node_netns: String,
}

impl Containerd {
    fn start(dir: &Path, node: &Node) -> Containerd {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("config.toml");
        // CRI would watch (and create) the machine's CNI directories, opt
        // would create /opt/containerd: neither is needed for ctr.
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.internal.v1.opt\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n[ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
                 [debug]\n  address = \"{d}/debug.sock\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        // The shim keeps its sockets in /run/containerd/s and runc its state
        // in /run/containerd/runc whatever the config says: containerd runs
        // in a private mount namespace where /run is an overlay whose writes
        // land in the test's directory.
        for sub in ["run-upper", "run-work"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let script = format!(
            "set -e\nmount -t overlay overlay -o lowerdir=/run,upperdir={d}/run-upper,workdir={d}/run-work /run\n\
             exec containerd --config {config}\n",
            d = dir.display(),
            config = config.display()
        );
        let daemon = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd {
            dir: dir.into(),
            daemon: Some(daemon),
            runs: vec![],
            node_netns: node.netns.clone(),
        };
        assert!(
            wait_until(Duration::from_secs(20), || c.ctr(&["version"]).status.success()),
            "containerd did not start: {}",
            std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
        );
        c.import_busybox();
        c
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr").arg("-a").arg(self.socket()).args(args).output().unwrap()
    }

    /// An image whose one layer is busybox-static and its applets.
    fn import_busybox(&self) {
        let rootfs = self.dir.join("rootfs");
        let img = self.dir.join("img");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::create_dir_all(&img).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "ping", "nc", "ip"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        run_ok(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(img.join("layer.tar")).arg("."));
        let sum = run_ok(Command::new("sha256sum").arg(img.join("layer.tar")));
        let digest = String::from_utf8_lossy(&sum.stdout).split_whitespace().next().unwrap().to_string();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{digest}")]},
        });
        std::fs::write(img.join("config.json"), config.to_string()).unwrap();
        let manifest = serde_json::json!([{"Config": "config.json", "RepoTags": ["twill-test/busybox:latest"], "Layers": ["layer.tar"]}]);
        std::fs::write(img.join("manifest.json"), manifest.to_string()).unwrap();
        let archive = self.dir.join("busybox.tar");
        run_ok(Command::new("tar").arg("-C").arg(&img).arg("-cf").arg(&archive).args([
            "manifest.json",
            "config.json",
            "layer.tar",
        ]));
        let out = self.ctr(&["image", "import", archive.to_str().unwrap()]);
        assert!(out.status.success(), "ctr image import: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// ctr in the private mount namespace, in the node's network namespace
    /// (where a runtime on that node runs its plugins).
    fn ctr_cni(&self, cni_bin: &Path, cni_conf: &Path, args: &[&str]) -> Command {
        let d = self.dir.display();
        for sub in ["etc-upper", "etc-work", "lib-upper", "lib-work", "fifo"] {
            std::fs::create_dir_all(self.dir.join(sub)).unwrap();
        }
        let script = format!(
            "set -e\n\
             mount -t overlay overlay -o lowerdir=/etc,upperdir={d}/etc-upper,workdir={d}/etc-work /etc\n\
             mkdir -p /etc/cni/net.d && mount --bind {conf} /etc/cni/net.d\n\
             mount -t overlay overlay -o lowerdir=/var/lib,upperdir={d}/lib-upper,workdir={d}/lib-work /var/lib\n\
             mount -t tmpfs twill-test /opt && mkdir -p /opt/cni/bin && mount --bind {bin} /opt/cni/bin\n\
             exec nsenter --net=/run/netns/{netns} ctr -a {d}/containerd.sock \"$@\"\n",
            conf = cni_conf.display(),
            bin = cni_bin.display(),
            netns = self.node_netns,
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script, "ctr"]).args(args);
        cmd
    }

    fn task_pid(&self, id: &str) -> Option<u32> {
        let out = self.ctr(&["task", "ls"]);
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.first() == Some(&id) && cols.get(2) == Some(&"RUNNING"))
                .then(|| cols[1].parse().ok())
                .flatten()
        })
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let out = self.ctr(&["task", "ls", "-q"]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = self.ctr(&["task", "kill", "-s", "KILL", id]);
        }
        for mut run in self.runs.drain(..) {
            let _ = wait_exit(&mut run, Duration::from_secs(10));
            let _ = run.kill();
            let _ = run.wait();
        }
        let out = self.ctr(&["container", "ls", "-q"]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = self.ctr(&["task", "delete", "-f", id]);
            let _ = self.ctr(&["container", "delete", id]);
        }
        if let Some(mut d) = self.daemon.take() {
            // SIGTERM, so containerd (exec'd in place of the shell) shuts
            // down in order.
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            if !wait_exit(&mut d, Duration::from_secs(10)) {
                let _ = d.kill();
            }
            let _ = d.wait();
        }
        // Shims outlive containerd: end those of this test, by their pid.
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("containerd-shim") && cmdline.contains(&self.dir.display().to_string()) {
                if let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() {
                    // SAFETY: kill(2) on a process this test's containerd started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let dir = self.dir.display().to_string();
        for target in
            mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|t| t.starts_with(&dir))
        {
            let _ = Command::new("umount").args(["-l", target]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    wait_until(timeout, || matches!(child.try_wait(), Ok(Some(_))))
}

fn endpoint_named(node: &Node, name: &str) -> Option<Value> {
    node.twill_json(&["endpoint", "list"]).as_array().unwrap().iter().find(|e| e["name"] == name).cloned()
}

fn in_container(pid: u32, cmd: &[&str]) -> bool {
    Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(cmd)
        .output()
        .unwrap()
        .status
        .success()
}

fn flows(node: &Node) -> String {
    let out = Command::new(twill_e2e::bin_dir().join("twill"))
        .arg("observe")
        .arg("--server")
        .arg(format!("unix://{}", node.hubble_socket().display()))
        .args(["--last", "1000", "-o", "json"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What exists of the machine's own CNI directories.
fn machine_cni_dirs() -> Vec<bool> {
    ["/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni", "/run/containerd", "/opt/containerd"]
        .iter()
        .map(|p| Path::new(p).exists())
        .collect()
}

#[test]
fn ctr_run_cni_container_gets_identity_policy_flows_and_cleanup() {
    let machine_before = machine_cni_dirs();
    let node = Node::start("ctr");
    let base = node.state_dir.parent().unwrap().to_path_buf();
    let containerd = Containerd::start(&base.join("containerd"), &node);
    let (cni_bin, cni_conf) = (base.join("cni-bin"), base.join("cni-conf"));
    node.twill_ok(&[
        "install",
        "cni",
        "--bin-dir",
        cni_bin.to_str().unwrap(),
        "--conf-dir",
        cni_conf.to_str().unwrap(),
        "--containerd-address",
        containerd.socket().to_str().unwrap(),
    ]);
    let db = node.endpoint("db", "default", "app=db");
    let db_ip = db["ipv4"].as_str().unwrap().to_string();
    node.endpoint("other", "default", "app=other");
    let policy = base.join("db.yaml");
    std::fs::write(
        &policy,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: db-from-web\nspec:\n  endpointSelector:\n    matchLabels:\n      app: db\n  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        app: web\n",
    )
    .unwrap();
    node.twill_ok(&["policy", "import", policy.to_str().unwrap()]);

    let mut containerd = containerd;
    let id = format!("web-{}", std::process::id());
    let fifo = containerd.dir.join("fifo");
    // Foreground with --rm, as a user runs it: when the task ends, ctr
    // deletes the container and calls the plugin's DEL.
    let run = containerd
        .ctr_cni(
            &cni_bin,
            &cni_conf,
            &[
                "run",
                "--rm",
                "--cni",
                "--fifo-dir",
                fifo.to_str().unwrap(),
                "--label",
                "app=web",
                IMAGE,
                &id,
                "sleep",
                "600",
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    containerd.runs.push(run);
    assert!(
        wait_until(Duration::from_secs(30), || endpoint_named(&node, &id).is_some()),
        "the container became an endpoint; agent log:\n{}",
        node.agent_log()
    );
    let ep = endpoint_named(&node, &id).unwrap();
    assert!(ep["security_labels"].as_array().unwrap().iter().any(|l| l == "k8s:app=web"), "{ep}");
    assert!(ep["netns"].as_str().unwrap().starts_with("/proc/"), "ctr's CNI_NETNS: {ep}");
    let pid = containerd.task_pid(&id).expect("task running");
    let ip = ep["ipv4"].as_str().unwrap();
    let inside = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ip", "-4", "addr", "show", "eth0"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&inside.stdout).contains(&format!("inet {ip}/32")),
        "address in the container"
    );

    // The same identity as any app=web endpoint: the policy on db lets it
    // in, and keeps app=other out.
    assert!(in_container(pid, &["ping", "-c", "1", "-W", "2", &db_ip]), "container reaches db");
    assert!(!node.ping("other", "default", &db_ip), "app=other is denied by the same policy");
    assert!(
        wait_until(Duration::from_secs(10), || flows(&node).contains(&format!("\"pod_name\":\"{id}\""))),
        "the container shows in twill observe by name: {}",
        flows(&node)
    );

    run_ok(Command::new("ctr").arg("-a").arg(containerd.socket()).args(["task", "kill", "-s", "KILL", &id]));
    let mut run = containerd.runs.pop().unwrap();
    assert!(wait_exit(&mut run, Duration::from_secs(30)), "ctr run --rm ended");
    assert!(endpoint_named(&node, &id).is_none(), "DEL removed the endpoint");
    // Its address is free again.
    let next = node.endpoint("next", "default", "");
    assert_eq!(next["ipv4"], ip, "{next}");
    assert_eq!(machine_cni_dirs(), machine_before, "the machine's CNI directories are untouched");
}
