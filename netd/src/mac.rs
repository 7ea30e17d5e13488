// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Ethernet MAC addresses: parsing, printing, and the address Docker derives
//! from an IPv4 address.

use std::{fmt, net::Ipv4Addr, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Docker's derivation: the locally administered prefix 02:42 followed
    /// by the four bytes of the IPv4 address (172.17.0.2 -> 02:42:ac:11:00:02).
    pub fn from_ipv4(ip: Ipv4Addr) -> Self {
        let [a, b, c, d] = ip.octets();
        Self([0x02, 0x42, a, b, c, d])
    }
}

/// Why a string is not a usable MAC address for an endpoint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MacError {
    #[error("invalid MAC address {0:?}: expected six hex bytes like 02:42:ac:11:00:02")]
    Syntax(String),
    #[error("invalid MAC address {0}: multicast addresses cannot be assigned to an interface")]
    Multicast(String),
    #[error("invalid MAC address {0}: the all-zero address cannot be assigned")]
    Zero(String),
}

impl FromStr for MacAddr {
    type Err = MacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || MacError::Syntax(s.to_owned());
        let mut bytes = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(syntax)?;
            if part.len() != 2 {
                return Err(syntax());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| syntax())?;
        }
        if parts.next().is_some() {
            return Err(syntax());
        }
        let mac = Self(bytes);
        if bytes[0] & 1 == 1 {
            return Err(MacError::Multicast(mac.to_string()));
        }
        if bytes == [0; 6] {
            return Err(MacError::Zero(mac.to_string()));
        }
        Ok(mac)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_docker_mac_from_ip() {
        assert_eq!(
            MacAddr::from_ipv4(Ipv4Addr::new(172, 17, 0, 2)).to_string(),
            "02:42:ac:11:00:02"
        );
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!(
            "02:42:AC:11:00:02".parse::<MacAddr>(),
            Ok(MacAddr([2, 0x42, 0xac, 0x11, 0, 2]))
        );
        assert!(matches!(
            "02:42:ac:11:00".parse::<MacAddr>(),
            Err(MacError::Syntax(_))
        ));
        assert!(matches!(
            "02:42:ac:11:00:02:03".parse::<MacAddr>(),
            Err(MacError::Syntax(_))
        ));
        assert!(matches!(
            "zz:42:ac:11:00:02".parse::<MacAddr>(),
            Err(MacError::Syntax(_))
        ));
        assert!(matches!(
            "01:00:5e:00:00:01".parse::<MacAddr>(),
            Err(MacError::Multicast(_))
        ));
        assert!(matches!(
            "00:00:00:00:00:00".parse::<MacAddr>(),
            Err(MacError::Zero(_))
        ));
    }
}
