//! Names for what reports show: remote addresses through a lookup file (CIDR or address →
//! name, like constat's), ports through `/etc/services`. Unknown values stay as they are.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

/// A lookup file line that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum NamesError {
    /// The file cannot be read.
    #[error("cannot read names file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is not `ADDRESS-or-CIDR NAME`.
    #[error("{path}:{line}: expected `ADDRESS-or-CIDR NAME`, got {text:?}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
}

/// Remote address names; the longest matching prefix wins.
#[derive(Debug, Default, Clone)]
pub struct RemoteNames {
    nets: Vec<(IpNet, String)>,
}

impl RemoteNames {
    /// Parse lookup-file text: `ADDRESS-or-CIDR NAME` per line, `#` comments.
    pub fn parse(text: &str, path: &Path) -> Result<RemoteNames, NamesError> {
        let mut nets = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut f = line.split_whitespace();
            let (Some(addr), Some(name)) = (f.next(), f.next()) else {
                return Err(syntax(path, i, raw));
            };
            let net = match addr.parse::<IpNet>() {
                Ok(n) => n.trunc(),
                Err(_) => match addr.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => return Err(syntax(path, i, raw)),
                },
            };
            nets.push((net, name.to_string()));
        }
        // Longest prefix first, so the first match is the most specific.
        nets.sort_by_key(|n| std::cmp::Reverse(n.0.prefix_len()));
        Ok(RemoteNames { nets })
    }

    /// Load `path`; with `explicit` false a missing file is an empty table.
    pub fn load(path: &Path, explicit: bool) -> Result<RemoteNames, NamesError> {
        match std::fs::read_to_string(path) {
            Ok(t) => RemoteNames::parse(&t, path),
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(RemoteNames::default())
            }
            Err(source) => Err(NamesError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// The name of `addr`, if the table has one.
    pub fn name(&self, addr: &str) -> Option<&str> {
        let ip: IpAddr = addr.parse().ok()?;
        self.nets
            .iter()
            .find(|(n, _)| n.contains(&ip))
            .map(|(_, name)| name.as_str())
    }
}

fn syntax(path: &Path, i: usize, raw: &str) -> NamesError {
    NamesError::Syntax {
        path: path.to_owned(),
        line: i + 1,
        text: raw.to_string(),
    }
}

/// Service names by (IP protocol number, port), from `/etc/services`.
#[derive(Debug, Default, Clone)]
pub struct Services {
    by_port: HashMap<(u8, u16), String>,
}

impl Services {
    /// Parse `/etc/services` text (`name port/proto [aliases]`). Malformed lines are skipped:
    /// the file is the system's, not ours.
    pub fn parse(text: &str) -> Services {
        let mut by_port = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut f = line.split_whitespace();
            let (Some(name), Some(pp)) = (f.next(), f.next()) else {
                continue;
            };
            let Some((port, proto)) = pp.split_once('/') else {
                continue;
            };
            let proto = match proto {
                "tcp" => 6,
                "udp" => 17,
                _ => continue,
            };
            if let Ok(port) = port.parse() {
                by_port
                    .entry((proto, port))
                    .or_insert_with(|| name.to_string());
            }
        }
        Services { by_port }
    }

    /// `/etc/services`, or nothing when it is missing.
    pub fn system() -> Services {
        std::fs::read_to_string("/etc/services")
            .map(|t| Services::parse(&t))
            .unwrap_or_default()
    }

    /// The service name of a protocol and port.
    pub fn name(&self, protocol: u8, port: u16) -> Option<&str> {
        self.by_port.get(&(protocol, port)).map(String::as_str)
    }
}

/// `tcp`, `udp`, or `proto-N`.
pub fn protocol_name(p: u8) -> Cow<'static, str> {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "ipv6-icmp".into(),
        n => format!("proto-{n}").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_unknown_stays_unnamed() {
        let t = "# lookup\n198.51.100.0/24 example-net\n198.51.100.2 mirror  # the mirror\n\
                 2001:db8::/32 doc6\n";
        let n = RemoteNames::parse(t, Path::new("names")).unwrap();
        assert_eq!(n.name("198.51.100.2"), Some("mirror"));
        assert_eq!(n.name("198.51.100.9"), Some("example-net"));
        assert_eq!(n.name("2001:db8::7"), Some("doc6"));
        assert_eq!(n.name("203.0.113.1"), None);
    }

    #[test]
    fn bad_line_names_file_and_line() {
        let e =
            RemoteNames::parse("10.0.0.0/8 lan\nnot-an-address x\n", Path::new("/n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/n:2: expected `ADDRESS-or-CIDR NAME`, got \"not-an-address x\""
        );
    }

    #[test]
    fn services_by_protocol_and_port() {
        let s = Services::parse("https\t443/tcp\nhttps 443/udp\ndomain 53/udp\nbad line\n");
        assert_eq!(s.name(6, 443), Some("https"));
        assert_eq!(s.name(17, 53), Some("domain"));
        assert_eq!(s.name(6, 53), None);
    }

    #[test]
    fn missing_default_file_is_empty_but_missing_explicit_file_is_an_error() {
        let p = Path::new("/nonexistent/netledger/names");
        assert!(RemoteNames::load(p, false)
            .unwrap()
            .name("10.0.0.1")
            .is_none());
        assert!(RemoteNames::load(p, true).is_err());
    }
}
