//! Addresses of this host's interfaces (in the caller's network namespace), used to tell
//! the direction of flows that have no socket.

use std::collections::HashSet;
use std::net::IpAddr;

/// Every address configured on an interface, via `getifaddrs(3)`. Errors yield an empty
/// set: socket local addresses still tell most directions.
pub fn host_addrs() -> HashSet<IpAddr> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        return HashSet::new();
    };
    list.filter_map(|ifa| {
        let addr = ifa.address?;
        if let Some(v4) = addr.as_sockaddr_in() {
            Some(IpAddr::V4(v4.ip()))
        } else {
            addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_is_a_host_address() {
        let addrs = super::host_addrs();
        assert!(addrs.contains(&"127.0.0.1".parse().unwrap()), "{addrs:?}");
    }
}
