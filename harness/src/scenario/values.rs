//! Value types that cannot hold an invalid value: a scenario that parses has well-formed
//! MACs, IQNs, subnets and durations, and the parser reports the line and column of a bad one.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

macro_rules! deserialize_from_str {
    ($ty:ty, $what:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(|e: String| {
                    de::Error::custom(format!("invalid {} `{}`: {}", $what, shown(&s), e))
                })
            }
        }
    };
}

/// Longest piece of a user's text an error message repeats.
const SHOWN_MAX: usize = 64;

/// A user's text as an error message repeats it: control characters escaped (a NUL or an
/// escape sequence must not reach the terminal as it is) and long texts cut, so that a
/// 5000-character name still gives a message that fits on a screen.
pub fn shown(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == SHOWN_MAX {
            out.push_str(&format!("... ({} characters)", s.chars().count()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A unicast Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err("expected six hex octets like 52:54:00:aa:00:01".into());
        }
        let mut out = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(format!("octet `{p}` is not two hex digits"));
            }
            out[i] = u8::from_str_radix(p, 16).map_err(|_| format!("octet `{p}` is not hex"))?;
        }
        if out[0] & 1 == 1 {
            return Err(
                "a multicast address cannot be a NIC's MAC (lowest bit of the first octet is set)"
                    .into(),
            );
        }
        if out == [0; 6] {
            return Err("the all-zero address cannot be a NIC's MAC".into());
        }
        Ok(MacAddr(out))
    }
}
deserialize_from_str!(MacAddr, "MAC address");

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// An iSCSI qualified name (RFC 3720 `iqn.` or `eui.` form), kept as written but lower-cased
/// because iSCSI names compare case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Iqn(String);

impl Iqn {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Iqn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        if lower.len() > 223 {
            return Err("longer than the 223 bytes iSCSI allows".into());
        }
        let ok_chars = |t: &str| {
            t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        };
        if let Some(rest) = lower.strip_prefix("iqn.") {
            // iqn.YYYY-MM.reversed.domain[:anything]
            let date = rest.get(..7).unwrap_or("");
            let valid_date = date.len() == 7
                && date.as_bytes()[4] == b'-'
                && date[..4].chars().all(|c| c.is_ascii_digit())
                && date[5..].chars().all(|c| c.is_ascii_digit());
            if !valid_date || rest.as_bytes().get(7) != Some(&b'.') || rest.len() < 9 {
                return Err(
                    "expected iqn.YYYY-MM.reversed.domain[:name], e.g. iqn.2026-11.lab:node01"
                        .into(),
                );
            }
            if !ok_chars(rest) {
                return Err("only letters, digits, '.', '-' and ':' are allowed".into());
            }
        } else if let Some(rest) = lower.strip_prefix("eui.") {
            if rest.len() != 16 || !rest.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err("an eui. name has exactly 16 hex digits".into());
            }
        } else {
            return Err("must start with `iqn.` or `eui.`".into());
        }
        Ok(Iqn(lower))
    }
}
deserialize_from_str!(Iqn, "iSCSI name");

impl fmt::Display for Iqn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IPv4 subnet for the lab segment. The harness takes the first host address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + n)
    }
    pub fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }
    /// The netmask in dotted form, e.g. 255.255.255.0.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - self.prefix))
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.netmask()) == u32::from(self.network)
    }
    /// Whether the two share any address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let wider = self.prefix.min(other.prefix);
        let mask = u32::MAX << (32 - wider);
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }
    /// The harness's own address on the segment (first host).
    pub fn server(&self) -> Ipv4Addr {
        self.host(1)
    }
    /// Dynamic DHCP pool: the upper half of the subnet, short of broadcast.
    pub fn pool(&self) -> (Ipv4Addr, Ipv4Addr) {
        let size = self.size();
        (self.host(size / 2), self.host(size - 2))
    }
}

impl FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or("expected CIDR notation like 10.77.0.0/24")?;
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("`{prefix}` is not a prefix length"))?;
        if !(16..=28).contains(&prefix) {
            return Err("the prefix length must be between 16 and 28".into());
        }
        let mask = u32::MAX << (32 - prefix);
        if u32::from(network) & !mask != 0 {
            return Err(format!(
                "host bits are set; the network address is {}/{prefix}",
                Ipv4Addr::from(u32::from(network) & mask)
            ));
        }
        if !network.is_private() {
            return Err(
                "use a private (RFC 1918) range: the lab must never look like a real network"
                    .into(),
            );
        }
        Ok(Subnet { network, prefix })
    }
}
deserialize_from_str!(Subnet, "subnet");

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A duration written like `90s`, `2m` or `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

/// No single wait in a scenario may exceed this: a boot that needs longer is broken.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let d =
            humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 90s, 2m, 1m30s)"))?;
        if d.is_zero() {
            return Err("must be longer than zero".into());
        }
        if d > MAX_WAIT {
            return Err(format!(
                "longer than the 1h limit ({})",
                humantime::format_duration(MAX_WAIT)
            ));
        }
        Ok(Dur(d))
    }
}
deserialize_from_str!(Dur, "duration");

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_and_prints_lowercase() {
        let m: MacAddr = "52:54:00:AA:00:01".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:aa:00:01");
        assert!("52-54-00-aa-00-02".parse::<MacAddr>().is_ok());
    }

    #[test]
    fn mac_rejects_bad_input() {
        for bad in [
            "",
            "52:54:00:aa:00",
            "52:54:00:aa:00:zz",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "525:4:00:aa:00:01",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn iqn_forms() {
        assert_eq!(
            "iqn.2026-11.Lab:Node01".parse::<Iqn>().unwrap().as_str(),
            "iqn.2026-11.lab:node01"
        );
        assert!("eui.0123456789abcdef".parse::<Iqn>().is_ok());
        for bad in [
            "iqn.26-11.lab:x",
            "iqn.2026-11",
            "foo.2026-11.lab",
            "iqn.2026-11.lab:a b",
            "eui.12",
        ] {
            assert!(bad.parse::<Iqn>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn subnet_rules() {
        let s: Subnet = "10.77.0.0/24".parse().unwrap();
        assert_eq!(s.server(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(
            s.pool(),
            (Ipv4Addr::new(10, 77, 0, 128), Ipv4Addr::new(10, 77, 0, 254))
        );
        assert!(s.contains(Ipv4Addr::new(10, 77, 0, 99)));
        assert!(!s.contains(Ipv4Addr::new(10, 78, 0, 99)));
        assert!("10.77.0.1/24"
            .parse::<Subnet>()
            .unwrap_err()
            .contains("host bits"));
        assert!("8.8.8.0/24"
            .parse::<Subnet>()
            .unwrap_err()
            .contains("private"));
        assert!("10.0.0.0/8".parse::<Subnet>().is_err());
        assert!("10.77.0.0".parse::<Subnet>().is_err());
    }

    #[test]
    fn shown_escapes_and_cuts() {
        assert_eq!(shown("node01"), "node01");
        assert_eq!(shown("a\0b\x1b[31m"), "a\\u{0}b\\u{1b}[31m");
        let long = shown(&"x".repeat(5000));
        assert!(long.ends_with("... (5000 characters)"), "{long}");
        assert!(long.len() < 100, "{long}");
    }

    #[test]
    fn durations() {
        assert_eq!("90s".parse::<Dur>().unwrap().0, Duration::from_secs(90));
        assert_eq!("1m30s".parse::<Dur>().unwrap().0, Duration::from_secs(90));
        assert!("0s".parse::<Dur>().is_err());
        assert!("2h".parse::<Dur>().is_err());
        assert!("soon".parse::<Dur>().is_err());
    }
}

/// What a value is called in a parse error.
pub trait Named {
    const WHAT: &'static str;
}

impl Named for MacAddr {
    const WHAT: &'static str = "MAC address";
}

impl Named for Iqn {
    const WHAT: &'static str = "iSCSI name";
}

impl Named for std::net::IpAddr {
    const WHAT: &'static str = "IP address";
}

/// A step field that a step repeated for each node (`each_node: true`) may take from the
/// node: `{node}`, `{mac}`, `{ip}`, `{initiator}` or `{target}` in place of the value. A text
/// with a `{` is kept as a template and checked when the step is written out per node.
#[derive(Debug, Clone)]
pub enum PerNode<T> {
    Is(T),
    Each(String),
}

impl<'de, T> Deserialize<'de> for PerNode<T>
where
    T: FromStr + Named,
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.contains('{') {
            return Ok(PerNode::Each(s));
        }
        s.parse()
            .map(PerNode::Is)
            .map_err(|e| de::Error::custom(format!("invalid {} `{}`: {e}", T::WHAT, shown(&s))))
    }
}
