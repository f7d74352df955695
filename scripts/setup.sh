#!/usr/bin/env bash
# Installs what building and running Twill needs on a fresh Debian/Ubuntu
# machine. Idempotent: installs only missing packages.
set -euo pipefail

if [[ $EUID -ne 0 ]]; then
    echo "setup: run as root (Twill loads eBPF programs and creates network namespaces)" >&2
    exit 1
fi

packages=(
    clang llvm libbpf-dev linux-libc-dev  # compiling the eBPF programs
    iproute2 util-linux                   # ip, nsenter: namespaces and devices
    iputils-ping socat iperf3 python3     # traffic in the demo, tests and benchmarks
    protobuf-compiler libprotobuf-dev     # the Hubble-compatible gRPC API
    prometheus                            # promtool, to check the metrics output in tests
    openssl                               # test CA and certificates for the Hubble TLS tests
    containerd runc busybox-static        # a real runtime for the CNI tests (ctr run --cni on a busybox image)
    containernetworking-plugins           # reference CNI plugins: chaining (portmap, bandwidth) and the CNI benchmark
    etcd-server                           # the cluster-mode store, started by the store's and the cluster tests
    curl                                  # the cluster tests poll etcd's /health from inside a node namespace
    wrk                                   # HTTP load for the l7 benchmark (through the proxy, L3/L4 only, direct)
    chromium chromium-driver              # the web UI test drives headless Chromium through WebDriver
    dnsmasq                               # the real DNS server behind the DNS proxy tests and benchmark
    bind9-dnsutils                        # dig, the DNS client of the DNS policy tests
    iptables                              # the DNS proxy test steers queries with a TPROXY rule
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
fi
