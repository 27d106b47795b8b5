#!/usr/bin/env bash
# Soak test of `netledger run` (issue 4), outside CI: a steady mix of short and long-lived
# flows in network namespaces made here, for DURATION seconds; reports the daemon's RSS at
# start and end, its CPU, and each user's totals against conntrack's own counters
# (DESTROY events captured with `conntrack -E`, plus the entries still in the table).
#
#   cargo build --release --bins --examples
#   sudo examples/daemon_soak.sh target/release 1800
#
# Needs root, iproute2, nftables, conntrack, socat. Cleans up its namespaces, users and
# processes on exit.
#
# This soak measures memory and CPU over hours of an undisturbed daemon; the soak that kills
# netledger hundreds of times and checks that no byte is charged twice is tests/it/soak.rs.
set -euo pipefail
BIN=$(cd "${1:?usage: daemon_soak.sh BIN_DIR [SECONDS]}" && pwd)
DURATION=${2:-1800}
H=nlsoakh$$; I=nlsoaki$$; SU=nlsoaks$$; LU=nlsoakl$$
WORK=$(mktemp -d); chmod 755 "$WORK"
cp "$BIN/netledger" "$BIN/examples/nl_burst" "$BIN/examples/nl_traffic" "$WORK/"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    ip netns del $H 2>/dev/null || true; ip netns del $I 2>/dev/null || true
    userdel $SU 2>/dev/null || true; userdel $LU 2>/dev/null || true
    echo "work files kept in $WORK"
}
trap cleanup EXIT
ip netns add $H; ip netns add $I
ip -n $H link set lo up; ip -n $I link set lo up
ip -n $H link add hi type veth peer name ih netns $I
ip -n $H addr add 198.51.100.1/24 dev hi; ip -n $H link set hi up
ip -n $I addr add 198.51.100.2/24 dev ih; ip -n $I link set ih up
useradd --system --no-create-home --shell /usr/sbin/nologin --user-group $SU
useradd --system --no-create-home --shell /usr/sbin/nologin --user-group $LU
as() { local u=$1; shift; ip netns exec $H setpriv --reuid="$(id -u "$u")" --regid="$(id -g "$u")" --clear-groups -- "$@"; }

ip netns exec $I "$WORK/nl_traffic" server tcp 0.0.0.0:9000 >/dev/null & PIDS+=($!)
ip netns exec $I socat TCP-LISTEN:9100,fork,reuseaddr EXEC:cat & PIDS+=($!)
ip netns exec $H "$WORK/netledger" setup
# A second truth that cannot overrun: nftables counters of IP-layer bytes per service port
# (what conntrack counts too), sent (output) and received (input).
ip netns exec $H nft -f - <<'NFT'
table inet soak {
    chain out { type filter hook output priority 10; policy accept;
        tcp dport 9000 counter; tcp dport 9100 counter; }
    chain in { type filter hook input priority 10; policy accept;
        tcp sport 9000 counter; tcp sport 9100 counter; }
}
NFT
ip netns exec $H sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_time_wait=10
# A large buffer: a capture that overruns (it says so in capture.err) undercounts the truth.
ip netns exec $H conntrack -E -e DESTROY -o extended -b 16777216 > "$WORK/destroy.txt" \
    2> "$WORK/capture.err" & PIDS+=($!)
sleep 0.5
ip netns exec $H "$WORK/netledger" --db "$WORK/soak.db" -v run --interval 10s 2> "$WORK/daemon.log" &
DAEMON=$!; PIDS+=($DAEMON)
sleep 2
rss() { awk '/VmRSS/ {print $2}' /proc/$DAEMON/status; }
cpu() { awk '{print $14 + $15}' /proc/$DAEMON/stat; }
RSS0=$(rss); CPU0=$(cpu)
echo "daemon pid $DAEMON: RSS at start ${RSS0} kB"

# Long-lived: 4 connections of user LU, each echoing 20 kB every second.
# `$!` is then socat itself (ip netns exec and setpriv exec it), and the writer loop ends
# when socat is gone (head fails on the closed pipe).
for n in 1 2 3 4; do
    ( while head -c 20000 /dev/zero; do sleep 1; done ) \
        | ip netns exec $H setpriv --reuid="$(id -u $LU)" --regid="$(id -g $LU)" \
            --clear-groups -- socat - TCP:198.51.100.2:9100 >/dev/null & PIDS+=($!)
done
# Short: user SU makes 20 connections a second (each ~20 kB down, open ~20 ms).
END=$((SECONDS + DURATION))
N=0
while [ $SECONDS -lt $END ]; do
    as $SU "$WORK/nl_burst" 198.51.100.2:9000 20 500 20000 --hold-ms 20 --parallel 4 >/dev/null
    N=$((N + 20))
    sleep 0.5
    if [ $((N % 1500)) -eq 0 ]; then
        echo "$(date +%T) $N short connections, RSS $(rss) kB," \
             "heap $(awk '/^Private_Dirty/ {print $2}' /proc/$DAEMON/smaps_rollup) kB dirty"
    fi
done
RSS1=$(rss); CPU1=$(cpu)
# Stop the long-lived flows, let the daemon see them close, then stop it.
for p in "${PIDS[@]:4}"; do kill "$p" 2>/dev/null || true; done
sleep 2
kill -TERM $DAEMON; wait $DAEMON || { echo "daemon exit status $?"; exit 1; }
ip netns exec $H conntrack -L -o extended > "$WORK/live.txt" 2>/dev/null || true
ip netns exec $H nft list table inet soak > "$WORK/nft.txt"
sleep 0.5
echo "RSS start ${RSS0} kB, end ${RSS1} kB; daemon CPU $(( (CPU1 - CPU0) )) ticks over ${DURATION} s; $N short connections"
tail -1 "$WORK/daemon.log"
grep -i enobufs "$WORK/capture.err" && echo "the capture overran: its totals are low" || true
python3 - "$WORK" "$(id -u $SU)" "$(id -u $LU)" <<'PY'
import json, re, subprocess, sys
work, su, lu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def parse(path):
    out = []
    for line in open(path):
        m = re.search(r'(ipv[46].*)', line)
        if not m: continue
        kv = re.findall(r'(\w+)=(\S+)', m.group(1))
        d = {}
        for k, v in kv: d.setdefault(k, []).append(v)
        if 'bytes' not in d or len(d['bytes']) < 2: continue
        out.append((int(d['dport'][0]), int(d['bytes'][0]), int(d['bytes'][1])))
    return out
flows = parse(f'{work}/destroy.txt') + parse(f'{work}/live.txt')
truth = {9000: [0, 0], 9100: [0, 0]}
for dport, ob, rb in flows:
    if dport in truth: truth[dport][0] += rb; truth[dport][1] += ob
# nftables: (rx, tx) per port from the counters (sport = received, dport = sent).
nft = {9000: [0, 0], 9100: [0, 0]}
for line in open(f'{work}/nft.txt'):
    m = re.search(r'tcp (s|d)port (\d+) counter packets \d+ bytes (\d+)', line)
    if m: nft[int(m.group(2))][0 if m.group(1) == 's' else 1] += int(m.group(3))
top = json.loads(subprocess.check_output([f'{work}/netledger', '--db', f'{work}/soak.db', 'top', '--json', '--since', '1d', '--limit', '100']))
got = {r['uid']: (r['rx_bytes'], r['tx_bytes']) for r in top}
ok = True
for uid, port in ((su, 9000), (lu, 9100)):
    g, t, n = got.get(uid, (0, 0)), tuple(truth[port]), tuple(nft[port])
    print(f'uid {uid} (port {port}): netledger rx/tx {g}, conntrack events {t}, nft counters {n}',
          'EXACT' if g == n else 'DIFFERENT')
    ok &= g == n
print('unattributed:', got.get(None))
sys.exit(0 if ok else 1)
PY
