//! The source a connection is counted against: its IPv4 address, or the /64 prefix of its
//! IPv6 address (one host or site usually holds a whole /64, so counting single IPv6
//! addresses would give it unlimited sources).

use std::net::{IpAddr, Ipv6Addr};

/// Where a connection comes from, for per-source caps and strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Source(IpAddr);

impl Source {
    /// The source of a peer at `ip`: an IPv4 address (also when written IPv4-mapped), or an
    /// IPv6 address cut to its /64.
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Source(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let v4: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(Source::of(mapped), Source::of(v4));
        assert_ne!(Source::of(v4), Source::of("127.0.0.1".parse().unwrap()));
    }
}
