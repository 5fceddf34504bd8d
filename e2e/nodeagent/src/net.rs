//! Pod addresses: one /32 per pod on the loopback of the environment's network namespace.
//! EndpointSlices reject loopback addresses, so pods get addresses of the namespace's own range, which
//! the host reaches through the namespace's veth (set up by `e2e/scripts/netns-up.sh`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use tokio::process::Command;

/// An IPv4 /24 (or smaller) range pods take addresses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s.split_once('/').ok_or_else(|| format!("{s}: not a CIDR"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s}: {e}"))?;
        let prefix: u8 = prefix.parse().map_err(|e| format!("{s}: {e}"))?;
        if !(16..=30).contains(&prefix) {
            return Err(format!("{s}: prefix must be between /16 and /30"));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Self {
            base: u32::from(ip) & mask,
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl Cidr {
    /// The lowest free host address (skipping the network and `.1`), or none when exhausted.
    pub fn allocate(&self, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let size = 1u32 << (32 - self.prefix);
        (2..size - 1)
            .map(|i| Ipv4Addr::from(self.base + i))
            .find(|ip| !used.contains(ip))
    }

    /// Whether the address is in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == self.base
    }
}

async fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Adds a pod address to the namespace's loopback (idempotent).
pub async fn add_address(netns: &str, addr: Ipv4Addr) -> Result<(), String> {
    match ip(&["-n", netns, "addr", "add", &format!("{addr}/32"), "dev", "lo"]).await {
        Err(e) if e.contains("File exists") => Ok(()),
        other => other,
    }
}

/// Removes a pod address (missing is fine).
pub async fn remove_address(netns: &str, addr: Ipv4Addr) -> Result<(), String> {
    match ip(&["-n", netns, "addr", "del", &format!("{addr}/32"), "dev", "lo"]).await {
        Err(e) if e.contains("Cannot assign") || e.contains("not found") => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_lowest_free_host_address() {
        let cidr: Cidr = "10.201.0.0/24".parse().unwrap();
        let mut used = BTreeSet::new();
        let a = cidr.allocate(&used).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 201, 0, 2));
        used.insert(a);
        assert_eq!(cidr.allocate(&used).unwrap(), Ipv4Addr::new(10, 201, 0, 3));
        assert!(cidr.contains(Ipv4Addr::new(10, 201, 0, 254)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 202, 0, 1)));
        let tiny: Cidr = "10.1.1.0/30".parse().unwrap();
        let used: BTreeSet<_> = [Ipv4Addr::new(10, 1, 1, 2)].into();
        assert_eq!(tiny.allocate(&used), None, "a /30 has one pod address");
        assert!("10.0.0.0/8".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }
}
