//! The owner mark: the uid of the local socket that sent a flow's first packet, written
//! by the kernel into the conntrack entry's mark, so that every later dump and event names
//! the flow's owner whatever happened to the socket since (closed before a pass saw it,
//! in TIME_WAIT, which names no owner).
//!
//! The rule lives in netledger's own table (`inet netledger`, chain `output`, so only
//! locally generated packets: new outgoing flows, and the SYN-ACK or first reply a local
//! server's socket sends on an incoming one) and writes only an unset mark:
//!
//! ```text
//! ct mark 0 ct mark set meta skuid | 0x80000000
//! ```
//!
//! The high bit ([`FLAG`]) tells uid 0 from "unset" and every uid from a mark some other
//! tool wrote with the bit clear. `nft` 1.0.6 refuses the statement ("datatype mismatch:
//! expected packet mark, expression has type user ID"), while the kernel takes it: the
//! rule is sent as nftables netlink messages ([`install_rule`]), its five expressions
//! (`ct` load, `cmp`, `meta` load, `bitwise`, `ct` set) exactly what nft would have made.
//! `nft list ruleset` shows it, with the comment [`COMMENT`].
//!
//! Coexistence: the rule writes only a mark that is 0, so another tool that marks first
//! keeps its mark; one that marks later overwrites netledger's. Either way a mark is then
//! not a uid: [`foreign_writers`] finds the rules of other tables that write `ct mark`
//! (nftables `ct mark set`, iptables-nft `CONNMARK`), and the passes compare every mark
//! with the uid of the flow's live socket (`attribute::MarkCheck`). Marks are used only
//! while netledger's rule is the only writer seen and no mark ever disagreed.

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

/// The batch that appends the owner rule to chain `output` of table `inet netledger`.
pub fn rule_batch(seq: u32) -> Vec<u8> {
    let mut a = Vec::new();
    attr(&mut a, NFTA_RULE_TABLE, b"netledger\0");
    attr(&mut a, NFTA_RULE_CHAIN, b"output\0");
    nested(&mut a, NFTA_RULE_EXPRESSIONS, |x| {
        expr(x, "ct", |e| {
            be(e, NFTA_CT_DREG, NFT_REG_1);
            be(e, NFTA_CT_KEY, NFT_CT_MARK);
        });
        expr(x, "cmp", |e| {
            be(e, NFTA_CMP_SREG, NFT_REG_1);
            be(e, NFTA_CMP_OP, NFT_CMP_EQ);
            data(e, NFTA_CMP_DATA, &0u32.to_ne_bytes());
        });
        expr(x, "meta", |e| {
            be(e, NFTA_META_DREG, NFT_REG_1);
            be(e, NFTA_META_KEY, NFT_META_SKUID);
        });
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
    });
    let mut udata = vec![UDATA_RULE_COMMENT, (COMMENT.len() + 1) as u8];
    udata.extend_from_slice(COMMENT.as_bytes());
    udata.push(0);
    attr(&mut a, NFTA_RULE_USERDATA, &udata);

    let res = NFNL_SUBSYS_NFTABLES;
    let mut batch = message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, res, &[]);
    batch.extend(message(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE,
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK,
        seq + 1,
        NFPROTO_INET,
        0,
        &a,
    ));
    batch.extend(message(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq + 2,
        0,
        res,
        &[],
    ));
    batch
}

/// Append the owner rule to `inet netledger`'s chain `output` (which must exist).
pub fn install_rule() -> io::Result<()> {
    use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let seq = 1;
    socket.send(&rule_batch(seq), 0)?;
    let mut buf = vec![0u8; 8192];
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
            if kind == NLMSG_ERROR && mseq == seq + 1 && len >= 20 {
                let err = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap());
                return if err == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-err))
                };
            }
            off += (len + 3) & !3;
        }
    }
}

/// Whether `nft -j list table inet netledger`'s output holds the owner rule.
pub fn rule_present(table_json: &str) -> bool {
    table_json.contains(COMMENT)
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
    if !rule_present(&ruleset) {
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
