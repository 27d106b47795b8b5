//! The owner mark: the uid of the local socket that sent a flow's first packet, written
//! by the kernel into the conntrack entry's mark, so that every later dump and event names
//! the flow's owner whatever happened to the socket since (closed before a pass saw it,
//! in TIME_WAIT, which names no owner).
//!
//! The rules live in netledger's own table (`inet netledger`, chain `output`, so only
//! locally generated packets) and write only an unset mark, from the first packet a local
//! socket sends in the flow:
//!
//! ```text
//! ct mark 0 ct direction original ct mark set meta skuid | 0x80000000
//! ct mark 0 ct direction reply meta l4proto tcp tcp flags & (syn|ack) == syn|ack ct mark set …
//! ct mark 0 ct direction reply meta l4proto != tcp ct mark set …
//! ```
//!
//! Outgoing flows are marked by their first packet (the SYN, the first datagram); incoming
//! TCP connections only by the SYN-ACK, which the kernel sends on behalf of the listener
//! (`meta skuid` reads the listening socket's owner, whose uid every accepted socket
//! inherits); incoming UDP by the server socket's first answer. A SYN-ACK sent without a
//! socket (SYN cookies) or by a fast-open child not yet accepted carries no uid, and the
//! connection then stays unmarked: its later packets come from the accepted socket, whose
//! file may belong to another user than the listener's (a socket-activated service), and
//! would otherwise mark it with a uid the socket tables contradict.
//!
//! The high bit ([`FLAG`]) tells uid 0 from "unset" and every uid from a mark some other
//! tool wrote with the bit clear. `nft` up to 1.0.7 refuses the statement ("datatype
//! mismatch: expected packet mark, expression has type user ID"), while the kernel takes
//! it: the rule is sent as nftables netlink messages ([`install_rule`]), its five
//! expressions (`ct` load, `cmp`, `meta` load, `bitwise`, `ct` set) exactly what nft 1.0.8
//! and later make of `nft list ruleset`'s text (`crate::prereq::firewall` on the round trip).
//! `nft list ruleset` shows it, with the comment [`COMMENT`].
//!
//! Coexistence: the rule writes only a mark that is 0, so another tool that marks first
//! keeps its mark; one that marks later overwrites netledger's. Either way a mark is then
//! not a uid: [`foreign_writers`] finds the rules of other tables that write `ct mark`
//! (nftables `ct mark set`, iptables-nft `CONNMARK`), and the passes compare every mark
//! with the uid of the flow's live socket (`attribute::MarkCheck`). Marks are used only
//! while netledger's rule is the only writer seen and no mark ever disagreed.

pub mod trust;

use std::io;
use std::process::{Command, Stdio};

/// The bit netledger's rule sets in every mark it writes: uid 0 is `0x80000000`, never
/// the unset 0. Uids with this bit set (above 2^31 − 1) cannot be told apart, and come
/// back as a disagreement rather than as a wrong uid.
pub const FLAG: u32 = 0x8000_0000;

/// The rule's comment, which tells it apart in `nft list`.
pub const COMMENT: &str = "netledger: owner uid into ct mark";

/// The uid a mark written by netledger's rule names (`None` for a mark it did not write:
/// 0, or the high bit clear).
pub fn uid_of(mark: u32) -> Option<u32> {
    (mark & FLAG != 0).then_some(mark & !FLAG)
}

/// The mark netledger's rule writes for `uid`.
pub fn mark_of(uid: u32) -> u32 {
    uid | FLAG
}

// ---- the rule, as nftables netlink messages (include/uapi/linux/netfilter/nf_tables.h) ----

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_INET: u8 = 1;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_APPEND: u16 = 0x800;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 2;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
/// `NFTNL_UDATA_RULE_COMMENT` (libnftnl's rule userdata, which nft prints as `comment`).
const UDATA_RULE_COMMENT: u8 = 0;

const NFT_REG_1: u32 = 1;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_CT_SREG: u16 = 4;
const NFT_CT_MARK: u32 = 3;
const NFT_CT_DIRECTION: u32 = 1;
const IP_CT_DIR_ORIGINAL: u8 = 0;
const IP_CT_DIR_REPLY: u8 = 1;
const NFT_CMP_NEQ: u32 = 1;
const NFT_META_L4PROTO: u32 = 16;
const IPPROTO_TCP: u8 = 6;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
/// The flags byte of the TCP header.
const TCP_FLAGS_OFFSET: u32 = 13;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFT_META_SKUID: u32 = 10;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;

/// One netlink attribute, padded to 4 bytes.
fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (4 - len % 4) % 4, 0);
}

fn nested(out: &mut Vec<u8>, kind: u16, inner: impl FnOnce(&mut Vec<u8>)) {
    let mut v = Vec::new();
    inner(&mut v);
    attr(out, kind | NLA_F_NESTED, &v);
}

/// nf_tables' u32 attributes are big endian.
fn be(out: &mut Vec<u8>, kind: u16, v: u32) {
    attr(out, kind, &v.to_be_bytes());
}

fn data(out: &mut Vec<u8>, kind: u16, bytes: &[u8]) {
    nested(out, kind, |d| attr(d, NFTA_DATA_VALUE, bytes));
}

fn expr(out: &mut Vec<u8>, name: &str, body: impl FnOnce(&mut Vec<u8>)) {
    nested(out, NFTA_LIST_ELEM, |e| {
        attr(e, NFTA_EXPR_NAME, format!("{name}\0").as_bytes());
        nested(e, NFTA_EXPR_DATA, body);
    });
}

fn message(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.push(family);
    m.push(0); // NFNETLINK_V0
    m.extend_from_slice(&res_id.to_be_bytes());
    m.extend_from_slice(attrs);
    m
}

/// Which packets of a flow one of the owner rules marks from.
#[derive(Clone, Copy)]
enum Marks {
    /// The first packet of an outgoing flow.
    Original,
    /// The SYN-ACK of an incoming TCP connection.
    ReplySynAck,
    /// The first answer to an incoming flow of another protocol (UDP).
    ReplyNotTcp,
}

/// The number of owner rules ([`rule_batch`]).
pub const RULES: usize = 3;

fn cmp(x: &mut Vec<u8>, op: u32, value: &[u8]) {
    expr(x, "cmp", |e| {
        be(e, NFTA_CMP_SREG, NFT_REG_1);
        be(e, NFTA_CMP_OP, op);
        data(e, NFTA_CMP_DATA, value);
    });
}

fn load_ct(x: &mut Vec<u8>, key: u32) {
    expr(x, "ct", |e| {
        be(e, NFTA_CT_DREG, NFT_REG_1);
        be(e, NFTA_CT_KEY, key);
    });
}

fn load_meta(x: &mut Vec<u8>, key: u32) {
    expr(x, "meta", |e| {
        be(e, NFTA_META_DREG, NFT_REG_1);
        be(e, NFTA_META_KEY, key);
    });
}

/// The expressions of one owner rule.
fn rule_exprs(x: &mut Vec<u8>, which: Marks) {
    load_ct(x, NFT_CT_MARK);
    cmp(x, NFT_CMP_EQ, &0u32.to_ne_bytes());
    load_ct(x, NFT_CT_DIRECTION);
    let dir = match which {
        Marks::Original => IP_CT_DIR_ORIGINAL,
        _ => IP_CT_DIR_REPLY,
    };
    cmp(x, NFT_CMP_EQ, &[dir]);
    match which {
        Marks::Original => {}
        Marks::ReplySynAck => {
            load_meta(x, NFT_META_L4PROTO);
            cmp(x, NFT_CMP_EQ, &[IPPROTO_TCP]);
            expr(x, "payload", |e| {
                be(e, NFTA_PAYLOAD_DREG, NFT_REG_1);
                be(e, NFTA_PAYLOAD_BASE, NFT_PAYLOAD_TRANSPORT_HEADER);
                be(e, NFTA_PAYLOAD_OFFSET, TCP_FLAGS_OFFSET);
                be(e, NFTA_PAYLOAD_LEN, 1);
            });
            expr(x, "bitwise", |e| {
                be(e, NFTA_BITWISE_SREG, NFT_REG_1);
                be(e, NFTA_BITWISE_DREG, NFT_REG_1);
                be(e, NFTA_BITWISE_LEN, 1);
                data(e, NFTA_BITWISE_MASK, &[TCP_SYN | TCP_ACK]);
                data(e, NFTA_BITWISE_XOR, &[0]);
            });
            cmp(x, NFT_CMP_EQ, &[TCP_SYN | TCP_ACK]);
        }
        Marks::ReplyNotTcp => {
            load_meta(x, NFT_META_L4PROTO);
            cmp(x, NFT_CMP_NEQ, &[IPPROTO_TCP]);
        }
    }
    owner_into_mark(x);
}

/// The batch that appends the owner rules to chain `output` of table `inet netledger`.
pub fn rule_batch(seq: u32) -> Vec<u8> {
    let res = NFNL_SUBSYS_NFTABLES;
    let mut batch = message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, res, &[]);
    let all = [Marks::Original, Marks::ReplySynAck, Marks::ReplyNotTcp];
    for (i, which) in all.into_iter().enumerate() {
        batch.extend(rule_message(seq + 1 + i as u32, which));
    }
    batch.extend(message(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq + 1 + RULES as u32,
        0,
        res,
        &[],
    ));
    batch
}

fn rule_message(seq: u32, which: Marks) -> Vec<u8> {
    let mut a = Vec::new();
    attr(&mut a, NFTA_RULE_TABLE, b"netledger\0");
    attr(&mut a, NFTA_RULE_CHAIN, b"output\0");
    nested(&mut a, NFTA_RULE_EXPRESSIONS, |x| rule_exprs(x, which));
    let mut udata = vec![UDATA_RULE_COMMENT, (COMMENT.len() + 1) as u8];
    udata.extend_from_slice(COMMENT.as_bytes());
    udata.push(0);
    attr(&mut a, NFTA_RULE_USERDATA, &udata);
    message(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE,
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK,
        seq,
        NFPROTO_INET,
        0,
        &a,
    )
}

/// `ct mark set meta skuid | FLAG`.
fn owner_into_mark(x: &mut Vec<u8>) {
    load_meta(x, NFT_META_SKUID);
    // dreg = (sreg & ~FLAG) ^ FLAG: sreg | FLAG, on the register as the CPU holds it.
    expr(x, "bitwise", |e| {
        be(e, NFTA_BITWISE_SREG, NFT_REG_1);
        be(e, NFTA_BITWISE_DREG, NFT_REG_1);
        be(e, NFTA_BITWISE_LEN, 4);
        data(e, NFTA_BITWISE_MASK, &(!FLAG).to_ne_bytes());
        data(e, NFTA_BITWISE_XOR, &FLAG.to_ne_bytes());
    });
    expr(x, "ct", |e| {
        be(e, NFTA_CT_KEY, NFT_CT_MARK);
        be(e, NFTA_CT_SREG, NFT_REG_1);
    });
}

/// Append the owner rules to `inet netledger`'s chain `output` (which must exist).
pub fn install_rule() -> io::Result<()> {
    use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let seq = 1;
    socket.send(&rule_batch(seq), 0)?;
    let mut buf = vec![0u8; 8192];
    let mut acked = 0;
    loop {
        let mut window: &mut [u8] = &mut buf[..];
        let n = socket.recv(&mut window, 0)?;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            let mseq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
            if len < 16 || off + len > n {
                break;
            }
            if kind == NLMSG_ERROR && mseq > seq && mseq <= seq + RULES as u32 && len >= 20 {
                let err = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap());
                if err != 0 {
                    return Err(io::Error::from_raw_os_error(-err));
                }
                acked += 1;
                if acked == RULES {
                    return Ok(());
                }
            }
            off += (len + 3) & !3;
        }
    }
}

/// How many owner rules `nft -j list …`'s output holds ([`RULES`] when installed).
pub fn rules_present(json: &str) -> usize {
    json.matches(COMMENT).count()
}

/// The rules outside `inet netledger` that write a conntrack mark, one line each (`table
/// ip mangle chain OUTPUT: ct mark set …`), from `nft -j list ruleset`'s output: nftables
/// `ct mark set` (a `mangle` of `ct mark`) and iptables-nft's `CONNMARK` target.
pub fn foreign_writers(ruleset_json: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(ruleset_json) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let rules = v["nftables"].as_array().into_iter().flatten();
    for rule in rules.filter_map(|o| o.get("rule")) {
        let (family, table, chain) = (
            rule["family"].as_str().unwrap_or("?"),
            rule["table"].as_str().unwrap_or("?"),
            rule["chain"].as_str().unwrap_or("?"),
        );
        if family == "inet" && table == "netledger" {
            continue;
        }
        let what = rule["expr"].as_array().into_iter().flatten().find_map(|e| {
            if let Some(m) = e.get("mangle") {
                (m["key"]["ct"]["key"] == "mark").then_some("ct mark set")
            } else if e.get("xt").is_some() {
                let text = e.to_string();
                (text.contains("CONNMARK") || text.contains("connmark")).then_some("CONNMARK")
            } else {
                None
            }
        });
        if let Some(what) = what {
            out.push(format!("table {family} {table} chain {chain}: {what}"));
        }
    }
    out
}

/// `nft -j` with `args`, its standard output (None when nft cannot run or fails).
pub fn nft_json(args: &[&str]) -> Option<String> {
    let out = Command::new("nft")
        .arg("-j")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the marks can be believed, from the ruleset now: netledger's rule is installed
/// and no other table writes the mark. `Err` carries the one-line reason they cannot.
pub fn ruleset_state() -> Result<(), String> {
    let Some(ruleset) = nft_json(&["list", "ruleset"]) else {
        return Err("cannot run `nft -j list ruleset`".into());
    };
    let foreign = foreign_writers(&ruleset);
    if let Some(first) = foreign.first() {
        return Err(format!(
            "another rule writes the conntrack mark ({first}{})",
            if foreign.len() > 1 {
                format!(", and {} more", foreign.len() - 1)
            } else {
                String::new()
            }
        ));
    }
    if rules_present(&ruleset) != RULES {
        return Err("netledger's owner rule is not installed (run `netledger setup`)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_zero_is_not_unset_and_a_clear_high_bit_is_not_a_uid() {
        assert_eq!(uid_of(mark_of(0)), Some(0));
        assert_eq!(uid_of(mark_of(1001)), Some(1001));
        assert_eq!(uid_of(0), None);
        assert_eq!(uid_of(0x2a), None);
    }

    #[test]
    fn foreign_writers_are_other_tables_ct_mark_set_and_connmark() {
        let json = r#"{"nftables":[{"metainfo":{}},
          {"rule":{"family":"inet","table":"netledger","chain":"output","expr":[
            {"mangle":{"key":{"ct":{"key":"mark"}},"value":1}}]}},
          {"rule":{"family":"ip","table":"fw","chain":"out","expr":[
            {"mangle":{"key":{"meta":{"key":"mark"}},"value":1}}]}},
          {"rule":{"family":"ip","table":"fw","chain":"pre","expr":[
            {"mangle":{"key":{"ct":{"key":"mark"}},"value":42}}]}},
          {"rule":{"family":"ip","table":"mangle","chain":"OUTPUT","expr":[
            {"xt":{"type":"target","name":"CONNMARK"}}]}}]}"#;
        assert_eq!(
            foreign_writers(json),
            [
                "table ip fw chain pre: ct mark set",
                "table ip mangle chain OUTPUT: CONNMARK"
            ]
        );
    }
}
