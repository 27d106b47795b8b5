#!/usr/bin/env bash
# Measure `netledger run` (issue 4) outside CI, in network namespaces made here:
#  1. a burst of COUNT short TCP connections (NEW events): daemon CPU, owners found,
#     overruns;
#  2. `conntrack -F` of those COUNT entries (DESTROY events at once): daemon CPU;
#  3. the CPU of the daemon's passes over COUNT sockets and flows (from its -v log),
#     next to `ss -tanp` and `conntrack -L` on the same table.
#
#   cargo build --release --bins --examples
#   sudo examples/daemon_bench.sh target/release 20000
#
# Needs root, iproute2, nftables, conntrack, bc. Cleans up its namespaces and processes.
set -euo pipefail
BIN=$(cd "${1:?usage: daemon_bench.sh BIN_DIR [COUNT]}" && pwd)
COUNT=${2:-5000}
H=nlbenchh$$; I=nlbenchi$$
WORK=$(mktemp -d); chmod 755 "$WORK"
cp "$BIN/netledger" "$BIN/examples/nl_burst" "$BIN/examples/nl_traffic" "$WORK/"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    ip netns del $H 2>/dev/null || true; ip netns del $I 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add $H; ip netns add $I
ip -n $H link set lo up; ip -n $I link set lo up
ip -n $H link add hi type veth peer name ih netns $I
ip -n $H addr add 198.51.100.1/24 dev hi; ip -n $H link set hi up
ip -n $I addr add 198.51.100.2/24 dev ih; ip -n $I link set ih up
ip netns exec $I "$WORK/nl_traffic" server tcp 0.0.0.0:9000 >/dev/null & PIDS+=($!)
ip netns exec $H "$WORK/netledger" setup >/dev/null
ip netns exec $H "$WORK/netledger" --db "$WORK/bench.db" -v run --interval 5s 2> "$WORK/daemon.log" &
DAEMON=$!; PIDS+=($DAEMON)
sleep 1.5
ticks() { awk '{print $14 + $15}' /proc/$DAEMON/stat; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
out=$(ip netns exec $H setpriv --reuid=65534 --regid=65534 --clear-groups -- \
    "$WORK/nl_burst" 198.51.100.2:9000 "$COUNT" 100 1000 --parallel 4 | tail -1)
t1=$(ticks)
secs=$(echo "$out" | awk '{print $3}')
echo "burst: $COUNT connections in ${secs}s ($(echo "$COUNT / $secs" | bc) NEW events/s);" \
     "daemon CPU $(echo "scale=2; ($t1 - $t0) / $hz" | bc)s"
sleep 11   # two passes over the full table
grep -E 'pass [0-9]+:' "$WORK/daemon.log" | sed 's/.*INFO netledger: //' | tail -2
/usr/bin/time -f %es -o "$WORK/t1" ip netns exec $H ss -tanp >/dev/null
/usr/bin/time -f %es -o "$WORK/t2" ip netns exec $H conntrack -L >/dev/null 2>&1
echo "ss -tanp: $(cat "$WORK/t1"), conntrack -L: $(cat "$WORK/t2") (wall)"
t2=$(ticks)
ip netns exec $H conntrack -F >/dev/null 2>&1
sleep 3
t3=$(ticks)
echo "conntrack -F: $COUNT DESTROY events; daemon CPU $(echo "scale=2; ($t3 - $t2) / $hz" | bc)s"
echo "RSS peak: $(awk '/VmHWM/ {print $2, $3}' /proc/$DAEMON/status)"
kill -TERM $DAEMON; wait $DAEMON
tail -1 "$WORK/daemon.log"
grep -c overran "$WORK/daemon.log" | sed 's/^/overrun warnings: /'
