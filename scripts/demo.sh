#!/usr/bin/env bash
# The Twill demo on the embedded default (standalone mode): starts the
# agent, creates endpoints in two namespaces, sends traffic between them
# through the eBPF datapath and shows what Twill knows. Set KEEP=1 to
# leave the agent and endpoints running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --bins
bin=target/release
twill() { "$bin/twill" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if twill status >/dev/null 2>&1; then
    echo "demo: an agent is already running on /run/twill/twill.sock; run 'twill uninstall' first" >&2
    exit 1
fi

step "Starting twill-agent (log: /tmp/twill-demo-agent.log)"
"$bin/twill-agent" >/tmp/twill-demo-agent.log 2>&1 &
agent=$!
server=
web1=
web2=
cleanup() {
    for pid in "$server" "$web1" "$web2"; do
        if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; fi
    done
    if [[ "${KEEP:-0}" != 1 ]]; then
        step "Uninstalling (set KEEP=1 to keep the demo running)"
        twill uninstall || kill "$agent" 2>/dev/null || true
        # The agent exits after uninstall; reap it.
        wait "$agent" 2>/dev/null || true
    fi
}
trap cleanup EXIT
for _ in $(seq 100); do twill status >/dev/null 2>&1 && break; sleep 0.1; done

step "Namespaces and endpoints"
twill namespace create prod --labels env=prod
twill endpoint create frontend --labels app=frontend
twill endpoint create backend --labels app=backend,tier=api
twill endpoint create frontend-2 --labels app=frontend
twill endpoint create db --namespace prod --labels app=db
twill endpoint list

backend=$(twill endpoint get backend -o json | sed -n 's/.*"ipv4": "\(.*\)".*/\1/p')
db=$(twill endpoint get db --namespace prod -o json | sed -n 's/.*"ipv4": "\(.*\)".*/\1/p')

step "ICMP frontend -> backend ($backend) and frontend -> db ($db), forwarded by eBPF"
twill endpoint exec frontend -- ping -c 3 -i 0.2 "$backend"
twill endpoint exec frontend -- ping -c 1 "$db"

step "TCP frontend -> backend:8080"
# Not through the twill() function: a backgrounded function is a subshell,
# and killing it would leave socat running. The CLI execs the command, so
# $! is socat itself.
"$bin/twill" endpoint exec backend -- socat TCP-LISTEN:8080,reuseaddr,fork SYSTEM:'echo hello from backend' &
server=$!
for _ in $(seq 50); do
    twill endpoint exec frontend -- socat -T2 - "TCP:$backend:8080" 2>/dev/null && break
    sleep 0.1
done
kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true

step "A service: a ClusterIP over the two frontends, balanced at connect() in the kernel"
"$bin/twill" endpoint exec frontend -- socat TCP-LISTEN:8080,reuseaddr,fork SYSTEM:'echo frontend' &
web1=$!
"$bin/twill" endpoint exec frontend-2 -- socat TCP-LISTEN:8080,reuseaddr,fork SYSTEM:'echo frontend-2' &
web2=$!
twill service create web --port 80 --target-port 8080 --selector app=frontend
vip=$(twill service get web -o json | sed -n 's/.*"cluster_ip": "\(.*\)".*/\1/p')
for _ in $(seq 50); do
    twill endpoint exec backend -- socat -T2 - "TCP:$vip:80" >/dev/null 2>&1 && break
    sleep 0.1
done
for i in 1 2 3 4 5 6; do
    echo "backend -> $vip:80 answered by: $(twill endpoint exec backend -- socat -T2 - "TCP:$vip:80")"
done
twill service list
twill bpf lb list
kill "$web1" "$web2" 2>/dev/null || true
wait "$web1" "$web2" 2>/dev/null || true

step "Endpoint -> host (router 10.200.0.1)"
twill endpoint exec db --namespace prod -- ping -c 1 10.200.0.1

step "Network policy: only frontend may reach db, on TCP 5432"
cat > /tmp/twill-demo-policy.yaml <<'YAML'
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: db-from-frontend
  namespace: prod
spec:
  endpointSelector:
    matchLabels:
      app: db
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: frontend
        k8s:io.kubernetes.pod.namespace: default
    toPorts:
    - ports:
      - port: "5432"
        protocol: TCP
YAML
twill policy import /tmp/twill-demo-policy.yaml
twill policy trace --src-endpoint backend --dst-endpoint db --dst-namespace prod --dport 5432/tcp
if twill endpoint exec backend -- ping -c 1 -W 1 "$db" >/dev/null; then
    echo "unexpected: backend reached db"
else
    echo "backend -> db ping: dropped by policy, as expected"
fi
twill bpf policy get db --namespace prod

step "Flows (Hubble-compatible API): the last drops"
sleep 0.2
twill observe --verdict DROPPED --last 5
step "Flows from frontend"
twill observe --from-pod default/frontend --last 5

step "Identities (same labels share a number)"
twill identity list
step "ipcache (eBPF LPM map: IP -> identity)"
twill bpf ipcache list
step "Datapath counters"
twill bpf metrics list
step "Status"
twill status
