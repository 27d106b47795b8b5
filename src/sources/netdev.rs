//! Interface byte counters from `/proc/net/dev` (of the reader's network namespace), for
//! `live`'s header: the link's own rate beside the flows' sum.
//!
//! The counters are the drivers' (L2 lengths for most drivers, so a little above the IP
//! lengths conntrack counts, and everything non-IP too): a comparison, not a check.

use std::path::Path;

/// One interface's byte counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDev {
    /// Interface name.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
}

/// Why `/proc/net/dev` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NetDevError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Parse `/proc/net/dev` (pure): two header lines, then `name: rx_bytes rx_packets … (8
/// receive fields) tx_bytes …` (net/core/net-procfs.c, dev_seq_printf_stats). Lines that
/// do not read are skipped.
pub fn parse_netdev(text: &str) -> Vec<NetDev> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            (f.len() >= 16).then(|| NetDev {
                name: name.trim().to_string(),
                rx_bytes: f[0],
                tx_bytes: f[8],
            })
        })
        .collect()
}

/// Read `PROC/net/dev`.
pub fn read_netdev(proc_root: &Path) -> Result<Vec<NetDev>, NetDevError> {
    let path = proc_root.join("net/dev");
    std::fs::read_to_string(&path)
        .map(|t| parse_netdev(&t))
        .map_err(|source| NetDevError::Read { path, source })
}

/// Bytes received and sent by every interface but loopback (traffic to the host itself
/// never leaves it), summed.
pub fn link_bytes(devs: &[NetDev]) -> (u64, u64) {
    devs.iter()
        .filter(|d| d.name != "lo")
        .fold((0, 0), |(rx, tx), d| (rx + d.rx_bytes, tx + d.tx_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux 6.x, as `cat /proc/net/dev` printed it.
    const DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:   26318     421    0    0    0     0          0         0    26318     421    0    0    0     0       0          0
  eth0: 9876543210 7000000    0    5    0     0          0        12 123456789   900000    0    0    0     0       0          0
veth-x1:     100       2    0    0    0     0          0         0      200       3    0    0    0     0       0          0
";

    #[test]
    fn netdev_reads_rx_and_tx_bytes_and_the_link_leaves_loopback_out() {
        let devs = parse_netdev(DEV);
        assert_eq!(devs.len(), 3);
        assert_eq!(
            devs[1],
            NetDev {
                name: "eth0".into(),
                rx_bytes: 9_876_543_210,
                tx_bytes: 123_456_789
            }
        );
        assert_eq!(devs[2].name, "veth-x1");
        assert_eq!(link_bytes(&devs), (9_876_543_310, 123_456_989));
    }
}
