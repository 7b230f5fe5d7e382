//! Client addresses: who is calling (behind trusted proxies only), and how often.
//!
//! Concurrency model: an [`AddressLimiter`] is shared by every request handler of a process; its
//! table of buckets sits behind one mutex held only for a few arithmetic operations, never across
//! an await.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// An address range, `10.0.0.0/8` or `fd00::/8` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network = canonical(
            address
                .parse::<IpAddr>()
                .map_err(|_| format!("{s:?} is not an IP address or range (a.b.c.d/n, x::/n)"))?,
        );
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { network, prefix })
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}/{}", self.network, self.prefix))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, what a dual-stack socket reports) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The address a request comes from: the socket's peer, unless that peer is a proxy the operator
/// trusts, in which case the rightmost address of `X-Forwarded-For` that is not itself a trusted
/// proxy (the leftmost entries are whatever the client chose to send and prove nothing).
pub fn client_address(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for.unwrap_or_default().rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // Garbage in the chain: stop at the last address we could vouch for.
            break;
        };
        client = canonical(ip);
        if !is_trusted(client) {
            break;
        }
    }
    client
}

/// The caller of a request served by [`crate::serve`]: its socket peer (the [`PeerAddr`]
/// extension; unspecified without one, e.g. a router driven without a socket), or through a
/// trusted proxy its `X-Forwarded-For`.
///
/// [`PeerAddr`]: crate::PeerAddr
pub fn caller(
    extensions: &http::Extensions,
    headers: &http::HeaderMap,
    trusted: &[Cidr],
) -> IpAddr {
    let peer = extensions
        .get::<crate::PeerAddr>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.ip());
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    client_address(peer, forwarded, trusted)
}

/// The key an address is counted under: IPv6 clients get a /64 each (one host's share of a
/// typical allocation), so that rotating through a subnet buys nothing.
fn bucket_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per client address: `burst` requests at once, refilled at `per_minute`.
/// The table is bounded: when it is full, addresses not yet in it share one overflow bucket
/// (so a flood from many addresses is limited as a whole, never let through).
pub struct AddressLimiter {
    burst: f64,
    per_second: f64,
    max_addresses: usize,
    buckets: Mutex<Table>,
}

struct Table {
    by_address: HashMap<IpAddr, Bucket>,
    overflow: Bucket,
}

impl AddressLimiter {
    /// `per_minute` 0 disables the limit.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self::with_capacity(burst, per_minute, 100_000)
    }

    pub fn with_capacity(burst: u32, per_minute: u32, max_addresses: usize) -> Self {
        let now = Instant::now();
        Self {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute) / 60.0,
            max_addresses,
            buckets: Mutex::new(Table {
                by_address: HashMap::new(),
                overflow: Bucket {
                    tokens: f64::from(burst.max(1)),
                    at: now,
                },
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.per_second > 0.0
    }

    /// Takes one request's worth from `ip`'s bucket, or says how long until there is one.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let key = bucket_key(ip);
        let mut table = self.buckets.lock().expect("limiter lock");
        if !table.by_address.contains_key(&key) && table.by_address.len() >= self.max_addresses {
            let (burst, rate) = (self.burst, self.per_second);
            // A full bucket is the same as no entry: forget those first.
            table
                .by_address
                .retain(|_, b| refill(b, now, burst, rate) < burst);
        }
        let (burst, rate) = (self.burst, self.per_second);
        let bucket =
            if table.by_address.len() < self.max_addresses || table.by_address.contains_key(&key) {
                table.by_address.entry(key).or_insert(Bucket {
                    tokens: burst,
                    at: now,
                })
            } else {
                &mut table.overflow
            };
        let tokens = refill(bucket, now, burst, rate);
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            bucket.at = now;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / rate))
        }
    }
}

/// The bucket's level at `now` (without taking anything).
fn refill(bucket: &Bucket, now: Instant, burst: f64, rate: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * rate).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn ranges_parse_and_match() {
        let private = cidrs(&["10.0.0.0/8", "fd00::/8", "192.168.1.7"]);
        assert!(private[0].contains(ip("10.200.3.4")));
        assert!(!private[0].contains(ip("11.0.0.1")));
        assert!(private[0].contains(ip("::ffff:10.1.2.3")), "v4-mapped");
        assert!(private[1].contains(ip("fd12::1")));
        assert!(!private[1].contains(ip("fe80::1")));
        assert!(private[2].contains(ip("192.168.1.7")));
        assert!(!private[2].contains(ip("192.168.1.8")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        for bad in ["", "10.0.0.0/33", "::/129", "host.example", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        // Not through a trusted proxy: whatever the header says, the peer is the client.
        assert_eq!(
            client_address(ip("203.0.113.9"), Some("1.2.3.4"), &trusted),
            ip("203.0.113.9")
        );
        // Through the ingress: the rightmost untrusted hop, not the forged leftmost one.
        assert_eq!(
            client_address(
                ip("10.0.0.5"),
                Some("6.6.6.6, 198.51.100.7, 10.1.1.1"),
                &trusted
            ),
            ip("198.51.100.7")
        );
        // A trusted proxy that sent no header: the proxy is all we know.
        assert_eq!(
            client_address(ip("10.0.0.5"), None, &trusted),
            ip("10.0.0.5")
        );
        // Garbage stops the walk at the last address we could read.
        assert_eq!(
            client_address(ip("10.0.0.5"), Some("nonsense, 10.2.2.2"), &trusted),
            ip("10.2.2.2")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), Some("1.2.3.4"), &[]),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn a_burst_then_the_rate_per_address() {
        let limiter = AddressLimiter::new(3, 60);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check(ip("192.0.2.1"), t0).unwrap();
        }
        let wait = limiter.check(ip("192.0.2.1"), t0).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // Another address has its own bucket.
        limiter.check(ip("192.0.2.2"), t0).unwrap();
        // One a second comes back.
        limiter
            .check(ip("192.0.2.1"), t0 + Duration::from_millis(1001))
            .unwrap();
        assert!(
            limiter
                .check(ip("192.0.2.1"), t0 + Duration::from_millis(1002))
                .is_err()
        );
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client() {
        let limiter = AddressLimiter::new(2, 60);
        let t0 = Instant::now();
        limiter.check(ip("2001:db8:1:2::1"), t0).unwrap();
        limiter.check(ip("2001:db8:1:2:ffff::9"), t0).unwrap();
        assert!(limiter.check(ip("2001:db8:1:2::abcd"), t0).is_err());
        limiter.check(ip("2001:db8:1:3::1"), t0).unwrap();
    }

    #[test]
    fn a_full_table_limits_newcomers_together_and_never_grows() {
        let limiter = AddressLimiter::with_capacity(1, 60, 4);
        let t0 = Instant::now();
        for n in 0..4 {
            limiter.check(ip(&format!("192.0.2.{n}")), t0).unwrap();
        }
        // Table full of spent buckets: newcomers share the overflow bucket (burst 1).
        limiter.check(ip("198.51.100.1"), t0).unwrap();
        assert!(limiter.check(ip("198.51.100.2"), t0).is_err());
        assert_eq!(limiter.buckets.lock().unwrap().by_address.len(), 4);
        // Once the old buckets are full again they are forgotten and newcomers get their own.
        let later = t0 + Duration::from_secs(5);
        limiter.check(ip("198.51.100.3"), later).unwrap();
        assert!(limiter.buckets.lock().unwrap().by_address.len() <= 4);
    }

    #[test]
    fn zero_per_minute_disables() {
        let limiter = AddressLimiter::new(1, 0);
        for _ in 0..100 {
            limiter.check(ip("192.0.2.1"), Instant::now()).unwrap();
        }
    }
}
