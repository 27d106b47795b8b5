#!/usr/bin/env bash
# Bursts of short connections (issue 17), in network namespaces made here: two users, each
# with a source address of its own, run PROCS processes of 4 threads each making COUNT
# TCP connections (100 B up, 1,000 B down) as fast as they can to a server that closes
# first. Measures:
#  1. the owner-mark rule's cost: connections a second with and without it (alternating
#     runs, one user, the conntrack table flushed before each);
#  2. the daemon (`run --interval 5s`) through a burst: connections a second made, events
#     a second handled, the daemon's CPU, and bytes per user against nftables counters
#     (by the user's own address, out and in: `meta skuid` would miss what a socket sends
#     after its process closed it);
#  3. the timer (a snapshot before the burst and one right after): bytes per user against
#     the entries still in the table and against nftables, i.e. what the timer loses.
#
#   cargo build --release --bins --examples
#   sudo examples/churn_bench.sh target/release [PROCS] [COUNT] [RUNS]
#
# Needs root, iproute2, nftables, conntrack, python3. Cleans up its namespaces, users and
# processes.
set -euo pipefail
BIN=$(cd "${1:?usage: churn_bench.sh BIN_DIR [PROCS] [COUNT] [RUNS]}" && pwd)
PROCS=${2:-4}
COUNT=${3:-3000}
RUNS=${4:-3}
H=nlchurnh$$; I=nlchurni$$
UA=nlcha$$; UB=nlchb$$
WORK=$(mktemp -d); chmod 755 "$WORK"
cp "$BIN/netledger" "$BIN/examples/nl_burst" "$BIN/examples/nl_traffic" "$WORK/"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    ip netns del $H 2>/dev/null || true; ip netns del $I 2>/dev/null || true
    userdel $UA 2>/dev/null || true; userdel $UB 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
useradd --system --no-create-home --shell /usr/sbin/nologin --user-group $UA
useradd --system --no-create-home --shell /usr/sbin/nologin --user-group $UB
A=$(id -u $UA); B=$(id -u $UB)
ip netns add $H; ip netns add $I
ip -n $H link set lo up; ip -n $I link set lo up
ip -n $H link add hi type veth peer name ih netns $I
ip -n $H addr add 198.51.100.1/24 dev hi; ip -n $H link set hi up
ip -n $H addr add 198.51.100.11/24 dev hi; ip -n $H addr add 198.51.100.12/24 dev hi
ip -n $I addr add 198.51.100.2/24 dev ih; ip -n $I link set ih up
ip netns exec $I sysctl -qw net.core.somaxconn=4096 net.ipv4.tcp_max_syn_backlog=4096
ip netns exec $I "$WORK/nl_traffic" server-closes tcp 0.0.0.0:9100 >/dev/null &
PIDS+=($!)
NL() { ip netns exec $H "$WORK/netledger" --db "$WORK/nl.db" "$@"; }
printf 'owner_mark = false\n' > "$WORK/off.toml"
NL setup >/dev/null 2>&1
counters() {
    ip netns exec $H nft -f - <<EOF
table inet nlcount
delete table inet nlcount
table inet nlcount {
  chain out {
    type filter hook output priority 10; policy accept;
    ip saddr 198.51.100.11 counter comment "tx $A"
    ip saddr 198.51.100.12 counter comment "tx $B"
    ct state invalid ip saddr 198.51.100.11 counter comment "invalid $A"
    ct state invalid ip saddr 198.51.100.12 counter comment "invalid $B"
  }
  chain in {
    type filter hook input priority 10; policy accept;
    ip daddr 198.51.100.11 counter comment "rx $A"
    ip daddr 198.51.100.12 counter comment "rx $B"
    ct state invalid ip daddr 198.51.100.11 counter comment "invalid $A"
    ct state invalid ip daddr 198.51.100.12 counter comment "invalid $B"
  }
}
EOF
}
sleep 0.3

# burst USERS... : every user's PROCS processes at once; prints "connections seconds".
burst() {
    local pids=() t0 t1
    t0=$(date +%s.%N)
    for u in "$@"; do
        local addr=198.51.100.11; [ "$u" = "$UB" ] && addr=198.51.100.12
        for _ in $(seq "$PROCS"); do
            ip netns exec $H setpriv --reuid="$u" --regid="$u" --clear-groups -- \
                "$WORK/nl_burst" 198.51.100.2:9100 "$COUNT" 100 1000 --parallel 4 \
                --from $addr --server-closes >/dev/null &
            pids+=($!)
        done
    done
    for p in "${pids[@]}"; do wait "$p"; done
    t1=$(date +%s.%N)
    # CPU of the bursts' processes, user + system (the kernel's TCP and netfilter work for
    # their packets runs mostly in their system time).
    local cpu
    times > "$WORK/times"   # not in a pipe: a subshell would have no children
    cpu=$(tail -1 "$WORK/times" | awk '{ split($1, u, /[ms]/); split($2, s, /[ms]/); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }')
    echo "$(( PROCS * COUNT * $# )) $(echo "$t1 - $t0" | bc -l) $cpu"
}

# compare: per user, netledger's top against nftables and (with "table") the entries.
compare() {
    ip netns exec $H nft -j list table inet nlcount > "$WORK/nft.json"
    NL top --by user --json --since 1d > "$WORK/top.json"
    ip netns exec $H conntrack -L -o extended -f ipv4 2>/dev/null > "$WORK/ct.txt"
    python3 - "$WORK" "$A" "$B" <<'EOF'
import json, sys, collections
w, uids = sys.argv[1], [int(u) for u in sys.argv[2:]]
nft = collections.defaultdict(lambda: [0, 0])
invalid = collections.defaultdict(int)
for r in json.load(open(f"{w}/nft.json"))["nftables"]:
    r = r.get("rule")
    if not r: continue
    d, u = r["comment"].split()
    b = next(e["counter"]["bytes"] for e in r["expr"] if "counter" in e)
    if d == "invalid":
        invalid[int(u)] += b
    else:
        nft[int(u)][0 if d == "rx" else 1] += b
top = collections.defaultdict(lambda: [0, 0])
for row in json.load(open(f"{w}/top.json")):
    top[row["uid"]][0] += row["rx_bytes"]; top[row["uid"]][1] += row["tx_bytes"]
table = collections.defaultdict(lambda: [0, 0])
addr = {"198.51.100.11": uids[0], "198.51.100.12": uids[1]}
for line in open(f"{w}/ct.txt"):
    kv = [f.split("=", 1) for f in line.split() if "=" in f]
    src = [v for k, v in kv if k == "src"]; by = [int(v) for k, v in kv if k == "bytes"]
    if src and src[0] in addr and len(by) == 2:
        t = table[addr[src[0]]]; t[0] += by[1]; t[1] += by[0]
for u in uids:
    n, t, g = sum(nft[u]), sum(table[u]), sum(top[u])
    print(f"  uid {u}: netledger {g} B, entries in the table {t} B, nftables {n} B: "
          f"netledger - nftables = {g - n} B ({(g - n) / max(n, 1) * 100:+.3f} %); "
          f"packets conntrack called invalid (and counts in no entry): {invalid[u]} B")
print(f"  unattributed: {sum(top[None])} B")
EOF
}

echo "== 1. the owner-mark rule's cost: connections/s of one user ($PROCS x 4 threads x $COUNT)"
for i in $(seq "$RUNS"); do
    order="with without"; [ $((i % 2)) = 0 ] && order="without with"
    for mode in $order; do
        if [ $mode = with ]; then NL setup >/dev/null 2>&1; else NL --config "$WORK/off.toml" setup >/dev/null 2>&1; fi
        ip netns exec $H conntrack -F >/dev/null 2>&1 || true
        read -r n s c < <(burst $UA)
        echo "  run $i $mode rule: $n connections in ${s}s: $(echo "$n / $s" | bc) /s, $(echo "$c * 1000000 / $n" | bc -l | cut -c1-5) µs CPU per connection"
    done
done
NL setup >/dev/null 2>&1
ip netns exec $H conntrack -F >/dev/null 2>&1 || true

echo "== 2. the daemon through a burst of both users"
counters; rm -f "$WORK/nl.db"*
ip netns exec $H "$WORK/netledger" --db "$WORK/nl.db" run --interval 5s 2> "$WORK/daemon.err" &
DPID=$!; PIDS+=($DPID)
until grep -q "running" "$WORK/daemon.err"; do sleep 0.1; done
sleep 1
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$DPID/stat"; }
c0=$(cpu)
read -r n s _ < <(burst $UA $UB)
c1=$(cpu)
echo "  $n connections in ${s}s: $(echo "$n / $s" | bc) /s; daemon CPU during the burst $(echo "($c1 - $c0) / $tick" | bc -l | cut -c1-5) s"
sleep 11
kill -TERM $DPID; wait $DPID || true
line=$(grep "stopped after" "$WORK/daemon.err" | tail -1)
events=$(echo "$line" | sed -E 's/.*: ([0-9]+) events.*/\1/')
echo "  events handled: $events, $(echo "$events / $s" | bc) /s over the burst"
echo "  $line"
compare

echo "== 3. the timer: a snapshot before the burst and one right after"
ip netns exec $H conntrack -F >/dev/null 2>&1 || true
counters; rm -f "$WORK/nl.db"*
NL snapshot 2>/dev/null
read -r n s _ < <(burst $UA $UB)
sleep 1
NL snapshot 2>&1 | sed 's/^/  /'
echo "  $n connections in ${s}s"
compare
