#!/usr/bin/env python3
"""Write the seed corpora, fuzz/corpus/TARGET/seed-*, from the real captures in fixtures/
(and contrib/netledger.toml). Run from the repo root: python3 fuzz/seed.py. Files the
fuzzer found and kept (fuzz/corpus/TARGET/id-*) are left alone."""
import glob, os, struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def messages(buf):
    """Netlink messages (header + payload, padded) of a captured stream."""
    out, off = [], 0
    while off + 16 <= len(buf):
        n = struct.unpack_from("<I", buf, off)[0]
        if n < 16 or off + n > len(buf):
            break
        out.append(buf[off:off + ((n + 3) & ~3)])
        off += (n + 3) & ~3
    return out


# /proc/net tables: selector byte bit 0 = UDP, bit 1 = big-endian; whole files and the
# header plus two rows of each.
for path in sorted(glob.glob(os.path.join(ROOT, "fixtures/proc/*/net/*"))):
    scenario, name = path.split(os.sep)[-3], path.split(os.sep)[-1]
    sel = (1 if name.startswith("udp") else 0) | (2 if scenario == "big-endian" else 0)
    text = open(path, "rb").read()
    put("proc_net", f"{scenario}-{name}", bytes([sel]) + text)
    put("proc_net", f"{scenario}-{name}-short", bytes([sel]) + b"\n".join(text.split(b"\n")[:3]))

# ctnetlink: the basic dump whole, its messages one by one (as NEW dump replies), each also
# as a DESTROY event (type IPCTNL_MSG_CT_DELETE) and a NEW event (NLM_F_CREATE|NLM_F_EXCL),
# and the first datagrams of the big dump.
basic = open(os.path.join(ROOT, "fixtures/netlink/basic.bin"), "rb").read()
put("ctnetlink", "basic-dump", basic)
for i, m in enumerate(messages(basic)):
    put("ctnetlink", f"basic-{i}", m)
    kind = struct.unpack_from("<H", m, 4)[0]
    if kind >> 8 == 1:  # NFNL_SUBSYS_CTNETLINK
        d = bytearray(m)
        struct.pack_into("<H", d, 4, (1 << 8) | 2)
        put("ctnetlink", f"basic-{i}-destroy", bytes(d))
        n = bytearray(m)
        struct.pack_into("<H", n, 6, 0x400 | 0x200)
        put("ctnetlink", f"basic-{i}-new", bytes(n))
many = open(os.path.join(ROOT, "fixtures/netlink/many.bin"), "rb").read()
put("ctnetlink", "many-head", b"".join(messages(many)[:12]))

# sock_diag: replies as the kernel builds them (inet_diag_msg after the netlink header):
# TCP over IPv4 and IPv6, UDP, -ENOENT, and a dump datagram ending in NLMSG_DONE.
def nlmsg(kind, flags, payload):
    return struct.pack("<IHHII", 16 + len(payload), kind, flags, 1, 0) + payload


def diag(family, state, sport, dport, src, dst, uid, inode):
    sockid = struct.pack(">HH", sport, dport) + src.ljust(16, b"\0") + dst.ljust(16, b"\0")
    sockid += struct.pack("<IQ", 0, 0xFFFFFFFFFFFFFFFF)
    return bytes([family, state, 0, 0]) + sockid + struct.pack("<IIIII", 0, 0, 0, uid, inode)


v4 = diag(2, 1, 41000, 9000, bytes([198, 51, 100, 1]), bytes([198, 51, 100, 2]), 1001, 123456)
v6 = diag(10, 1, 41000, 9000, bytes.fromhex("20010db8000000000000000000000001"),
          bytes.fromhex("20010db8000000000000000000000002"), 1002, 654321)
put("sock_diag", "tcp4", b"\0" + nlmsg(20, 0, v4))
put("sock_diag", "tcp6", b"\0" + nlmsg(20, 0, v6))
put("sock_diag", "udp4", b"\1" + nlmsg(20, 0, v4))
put("sock_diag", "enoent", b"\0" + nlmsg(2, 0, struct.pack("<i", -2) + nlmsg(20, 5, b"")[:16]))
put("sock_diag", "dump", b"\0" + nlmsg(20, 2, v4) + nlmsg(20, 2, v6) + nlmsg(3, 2, struct.pack("<i", 0)))

# /proc/PID/fd link names and /proc/PID/status text.
for name, text in [("socket", "socket:[123456]"), ("pipe", "pipe:[99]"),
                   ("anon", "anon_inode:[eventfd]"), ("path", "/dev/null"),
                   ("status", "Name:\tcat\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1001\t1001\t1001\t1001\nGid:\t100\t100\t100\t100\n")]:
    put("fd_link", name, text)

# The configuration file: the shipped example and small ones.
put("config", "contrib", open(os.path.join(ROOT, "contrib/netledger.toml"), "rb").read())
put("config", "small", 'db = "/var/lib/netledger/netledger.db"\ninterval = "30s"\n')
put("config", "retention", '[retention]\nraw = "7d"\nhourly = "90d"\ndaily = "forever"\n')

# The names file and services text.
put("names", "names", "# office\n198.51.100.0/24 lab\n2001:db8::/32 lab6\n203.0.113.7 web  # a host\n")
put("names", "services", "ssh\t\t22/tcp\ndomain\t\t53/udp\t# DNS\nhttp 80/tcp www\n")

# --since/--until and TZ forms.
for i, s in enumerate(["now", "today", "yesterday", "1h", "90min 3s", "2026-11-29",
                       "2026-11-29T10:00", "2026-11-29 10:00:30", "-5m", "300y",
                       "EST5EDT,M3.2.0,M11.1.0", ":Europe/Paris", "/usr/share/zoneinfo/UTC"]):
    put("timespec", str(i), s)

# log --format templates: byte 0 picks the connection's shape.
for i, s in enumerate(["%s %Ss %P %d %o %R %u %c tx=%t rx=%x", "%i:%r %l:%L %%%n",
                       "%e %D %U %T %X", "%q"]):
    put("log_format", str(i), bytes([i * 9]) + s.encode())
