#!/usr/bin/env bash
# Runs Twill's benchmarks and prints one table of results and ratios, all
# measured in this run (or against a published figure, named as such):
# policy parse and resolution (1,000 rules x 3,000 identities), endpoint
# create/delete latency and agent memory, and same-host TCP stream,
# request/response and connection rates between two Twill endpoints with
# and without a 10,000-entry policy, against a bare veth pair and an
# iptables rule set of the same policy; cross-node: pods on two nodes
# (namespaces on a bridge, etcd) through Twill's VXLAN tunnel and its native
# routing against the same traffic between the nodes themselves; and
# cluster mode's control plane: ipcache propagation across 16 agents on one
# etcd, identity allocation with 16 nodes racing, one etcd under 250 and
# 1,000 simulated nodes, and agent memory per remote endpoint. Needs root;
# installs what it needs; about 4.5 minutes after the build, plus about 3
# for cross-node and 3-4 for cluster.
#
#   sudo ./bench/run.sh                    # everything (the documented run)
#   sudo ./bench/run.sh --only resolver    # one section while developing:
#                                          # resolver, endpoints, datapath, egress,
#                                          # cross-node, cluster, dns, policy
#                                          # (= resolver,datapath)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# The iptables reference rule set (scripts/setup.sh does not install it).
if ! command -v iptables-restore >/dev/null; then
    echo "bench: installing iptables"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null
fi
cargo build --release --bins
exec target/release/twill-bench "$@"
