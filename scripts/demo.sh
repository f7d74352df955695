#!/usr/bin/env bash
# The Twill demo: Cilium's Star Wars scenario on the embedded default
# (standalone mode), with Cilium's own policy files from examples/starwars
# applied unchanged. A `deathstar` service (two backends, org=empire) is
# asked to land by a tiefighter (org=empire) and an xwing (org=alliance):
# without policy both land; with the L3/L4 policy the xwing's packets are
# dropped in the kernel; with the L7 policy the tiefighter may still land
# but not PUT into the exhaust port. Flows show why at every step.
#
# KEEP=1 leaves the agent, endpoints and deathstar servers running
# afterwards. PROFILE=debug uses a debug build instead of a release one.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
profile=${PROFILE:-release}
if [[ "$profile" == release ]]; then cargo build --release --bins; else cargo build --bins; fi
bin=target/$profile
examples=examples/starwars
twill() { "$bin/twill" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

if twill status >/dev/null 2>&1; then
    echo "demo: an agent is already running on /run/twill/twill.sock; run 'twill uninstall' first" >&2
    exit 1
fi

step "Starting twill-agent (log: /tmp/twill-demo-agent.log)"
"$bin/twill-agent" >/tmp/twill-demo-agent.log 2>&1 &
agent=$!
servers=()
cleanup() {
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo
        echo "KEEP=1: the agent (pid $agent) and the deathstar servers (pids ${servers[*]}) keep running."
        echo "Try: $bin/twill endpoint exec xwing -- curl -s --max-time 3 -XPOST http://${vip:-VIP}/v1/request-landing"
        echo "Clean up with: kill ${servers[*]}; $bin/twill uninstall"
        return
    fi
    for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done
    step "Uninstalling (set KEEP=1 to keep the demo running)"
    twill uninstall || kill "$agent" 2>/dev/null || true
    # The agent exits after uninstall; reap it.
    wait "$agent" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do twill status >/dev/null 2>&1 && break; sleep 0.1; done

# What a ship gets for METHOD PATH on the deathstar service, one line (an
# answer's body can be two): status, body, and which backend answered.
ask() {
    local ship=$1 method=$2 path=$3 out rc=0
    out=$(twill endpoint exec "$ship" -- curl -s --max-time 3 -X "$method" \
        -w '\n%{http_code} %header{x-deathstar}' "http://$vip$path") || rc=$?
    local code backend body
    read -r code backend <<<"$(tail -n 1 <<<"$out")"
    body=$(sed '$d' <<<"$out" | tr -d '\r' | sed '/^$/d' | paste -sd '|' | sed 's/|/ | /g')
    printf '%-10s %-4s %-20s -> ' "$ship" "$method" "$path"
    if ((rc == 28)); then
        echo "no answer within 3 s (curl timed out: the packets were dropped)"
    elif [[ "$code" == 000 ]]; then
        echo "failed (curl exit $rc)"
    elif [[ -n "$backend" ]]; then
        echo "$code $body   [served by $backend]"
    else
        echo "$code $body   [answered by the L7 proxy]"
    fi
}

# Prints `twill observe ARGS` once it has flows (they arrive from the
# kernel's ring a moment after the packets): bounded, never a fixed wait.
flows() {
    local out=
    for _ in $(seq 50); do
        out=$(twill observe "$@")
        [[ -n "$out" ]] && break
        sleep 0.1
    done
    printf '\033[2m$ twill observe %s\033[0m\n%s\n' "$*" "$out"
}

step "The empire's deathstar: two backends behind one service"
for name in deathstar-1 deathstar-2; do
    twill endpoint create "$name" --labels org=empire,class=deathstar >/dev/null
    # Not through the twill() function: a backgrounded function is a
    # subshell, and killing it would leave the server running. The CLI
    # execs the command, so $! is the server itself.
    "$bin/twill" endpoint exec "$name" -- python3 "$examples/deathstar.py" "$name" 80 &
    servers+=($!)
done
twill endpoint create tiefighter --labels org=empire,class=tiefighter >/dev/null
twill endpoint create xwing --labels org=alliance,class=xwing >/dev/null
show twill service create deathstar --port 80 --selector org=empire,class=deathstar
vip=$(twill service get deathstar -o json | sed -n 's/.*"cluster_ip": "\(.*\)".*/\1/p')
twill endpoint list
# The servers take a moment to start listening.
for _ in $(seq 100); do
    twill endpoint exec tiefighter -- curl -s -o /dev/null --max-time 1 -XPOST "http://$vip/v1/request-landing" && break
    sleep 0.1
done

step "1. No policy: every ship may land (deathstar is $vip)"
ask tiefighter POST /v1/request-landing
ask xwing POST /v1/request-landing
ask xwing POST /v1/request-landing

step "2. Cilium's L3/L4 policy, unchanged: only org=empire may reach the deathstar on TCP 80"
cat "$examples/sw_l3_l4_policy.yaml"
show twill policy import "$examples/sw_l3_l4_policy.yaml"
ask tiefighter POST /v1/request-landing
ask xwing POST /v1/request-landing
echo "... but L3/L4 cannot tell a landing from sabotage:"
ask tiefighter PUT /v1/exhaust-port
echo
echo "Why the xwing got no answer: its SYNs were dropped by the deathstar's ingress policy, in eBPF:"
flows --from-pod default/xwing --verdict DROPPED --last 3
show twill policy trace --src-endpoint xwing --dst-endpoint deathstar-1 --dport 80/tcp

step "3. Cilium's L7 policy, unchanged: empire ships may only POST /v1/request-landing"
cat "$examples/sw_l3_l4_l7_policy.yaml"
show twill policy import "$examples/sw_l3_l4_l7_policy.yaml"
ask tiefighter PUT /v1/exhaust-port
ask tiefighter POST /v1/request-landing
ask tiefighter POST /v1/request-landing
ask xwing POST /v1/request-landing
echo
echo "The tiefighter's requests, checked one by one by the L7 proxy (the xwing never reaches it):"
flows --type l7 --from-pod default/tiefighter --last 4
echo "... and the deathstar's answers:"
flows --type l7 --to-pod default/tiefighter --last 2
show twill policy trace --src-endpoint tiefighter --dst-endpoint deathstar-1 --dport 80/tcp

step "What Twill knows"
show twill identity list
show twill policy get
