// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Docker's `-p` syntax: `[HOSTIP:]HOSTPORT[-END]:CTRPORT[-END][/PROTO]`,
//! `HOSTIP::CTRPORT[-END]` and `CTRPORT[-END]` (ephemeral host ports), and
//! the `0.0.0.0:8080->80/tcp` form Docker prints.

use std::{fmt, net::Ipv4Addr, str::FromStr};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A transport protocol netd publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    pub fn from_number(number: u8) -> Option<Self> {
        match number {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An inclusive port range; a single port is `first == last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    /// How many ports the range holds.
    pub fn count(&self) -> u32 {
        u32::from(self.last - self.first) + 1
    }

    pub fn is_single(&self) -> bool {
        self.first == self.last
    }

    pub fn overlaps(&self, other: &Self) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SpecError {
    #[error(
        "invalid port spec {0:?}: expected [HOSTIP:]HOSTPORT[-END]:CTRPORT[-END][/tcp|/udp], HOSTIP::CTRPORT or CTRPORT"
    )]
    Syntax(String),
    #[error("invalid port spec {spec:?}: {port:?} is not a port number (1-65535)")]
    Port { spec: String, port: String },
    #[error("invalid port spec {spec:?}: the range {range} ends before it starts")]
    Backwards { spec: String, range: String },
    #[error(
        "invalid port spec {spec:?}: the host range {host} and the container range {ctr} have different lengths"
    )]
    RangeLengths {
        spec: String,
        host: String,
        ctr: String,
    },
    #[error("invalid port spec {spec:?}: unsupported protocol {proto:?} (tcp or udp)")]
    Proto { spec: String, proto: String },
    #[error(
        "invalid port spec {spec:?}: {ip:?} is not an IPv4 address (netd publishes on IPv4 host addresses)"
    )]
    HostIp { spec: String, ip: String },
}

/// A parsed `-p` spec. `host == None` asks for ephemeral host ports;
/// `host_ip == None` for the network's default host address
/// (`com.docker.network.bridge.host_binding_ipv4`, 0.0.0.0 unless set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub host_ip: Option<Ipv4Addr>,
    pub host: Option<PortRange>,
    pub ctr: PortRange,
    pub proto: Proto,
}

fn parse_range(spec: &str, text: &str) -> Result<PortRange, SpecError> {
    let port = |p: &str| -> Result<u16, SpecError> {
        match p.parse::<u16>() {
            Ok(port) if port > 0 && !p.starts_with('+') => Ok(port),
            _ => Err(SpecError::Port {
                spec: spec.to_owned(),
                port: p.to_owned(),
            }),
        }
    };
    let range = match text.split_once('-') {
        Some((first, last)) => PortRange {
            first: port(first)?,
            last: port(last)?,
        },
        None => PortRange::single(port(text)?),
    };
    if range.last < range.first {
        return Err(SpecError::Backwards {
            spec: spec.to_owned(),
            range: text.to_owned(),
        });
    }
    Ok(range)
}

impl FromStr for PortSpec {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let syntax = || SpecError::Syntax(spec.to_owned());
        let (rest, proto) = match spec.rsplit_once('/') {
            Some((rest, "tcp")) => (rest, Proto::Tcp),
            Some((rest, "udp")) => (rest, Proto::Udp),
            Some((_, proto)) => {
                return Err(SpecError::Proto {
                    spec: spec.to_owned(),
                    proto: proto.to_owned(),
                });
            }
            None => (spec, Proto::Tcp),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (host_ip, host, ctr) = match parts.as_slice() {
            [ctr] => (None, None, *ctr),
            [host, ctr] => (None, Some(*host), *ctr),
            [ip, host, ctr] => (Some(*ip), (!host.is_empty()).then_some(*host), *ctr),
            _ => return Err(syntax()),
        };
        if ctr.is_empty() {
            return Err(syntax());
        }
        let host_ip = match host_ip {
            None | Some("") => None,
            Some(ip) => Some(ip.parse().map_err(|_| SpecError::HostIp {
                spec: spec.to_owned(),
                ip: ip.to_owned(),
            })?),
        };
        let ctr = parse_range(spec, ctr)?;
        let host = host.map(|h| parse_range(spec, h)).transpose()?;
        if let Some(host) = host
            && !ctr.is_single()
            && host.count() != ctr.count()
        {
            return Err(SpecError::RangeLengths {
                spec: spec.to_owned(),
                host: host.to_string(),
                ctr: ctr.to_string(),
            });
        }
        Ok(Self {
            host_ip,
            host,
            ctr,
            proto,
        })
    }
}

/// Docker's display of a mapping: `0.0.0.0:8080->80/tcp`,
/// `0.0.0.0:8080-8081->80-81/tcp`, `0.0.0.0:8080-8090->80/tcp`.
pub fn docker_form(host_ip: Ipv4Addr, host: PortRange, ctr: PortRange, proto: Proto) -> String {
    format!("{host_ip}:{host}->{ctr}/{proto}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PortSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_forms_parse() {
        let any = Ipv4Addr::UNSPECIFIED;
        assert_eq!(p("0.0.0.0:8080:80").host_ip, Some(any));
        assert_eq!(
            p("8080:80"),
            PortSpec {
                host_ip: None,
                host: Some(PortRange::single(8080)),
                ctr: PortRange::single(80),
                proto: Proto::Tcp
            }
        );
        assert_eq!(
            p("127.0.0.1:8080:80/udp").host_ip,
            Some(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(p("127.0.0.1:8080:80/udp").proto, Proto::Udp);
        assert_eq!(p("10.0.0.1::80").host, None);
        assert_eq!(p("10.0.0.1::80").host_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(p("80").host, None);
        assert_eq!(
            p("80-82").ctr,
            PortRange {
                first: 80,
                last: 82
            }
        );
        assert_eq!(
            p("8080-8082:80-82").host,
            Some(PortRange {
                first: 8080,
                last: 8082
            })
        );
        // Many host ports to one container port.
        assert_eq!(p("8080-8090:80").ctr, PortRange::single(80));
    }

    #[test]
    fn bad_specs_name_the_problem() {
        assert!(matches!(
            "0:80".parse::<PortSpec>(),
            Err(SpecError::Port { .. })
        ));
        assert!(matches!(
            "65536:80".parse::<PortSpec>(),
            Err(SpecError::Port { .. })
        ));
        assert!(matches!(
            "8080:80-".parse::<PortSpec>(),
            Err(SpecError::Port { .. })
        ));
        assert!(matches!(
            "8090-8080:80".parse::<PortSpec>(),
            Err(SpecError::Backwards { .. })
        ));
        assert!(matches!(
            "8080-8082:80-81".parse::<PortSpec>(),
            Err(SpecError::RangeLengths { .. })
        ));
        assert!(matches!(
            "8080:80/sctp".parse::<PortSpec>(),
            Err(SpecError::Proto { .. })
        ));
        assert!(matches!(
            "1.2.3:8080:80".parse::<PortSpec>(),
            Err(SpecError::HostIp { .. })
        ));
        assert!(matches!(
            "a:b:c:d".parse::<PortSpec>(),
            Err(SpecError::Syntax(_))
        ));
        assert!(matches!(
            "8080:".parse::<PortSpec>(),
            Err(SpecError::Syntax(_))
        ));
        assert!(matches!(
            "65000-65535:1-600".parse::<PortSpec>(),
            Err(SpecError::RangeLengths { .. })
        ));
    }

    #[test]
    fn prints_like_docker() {
        let any = Ipv4Addr::UNSPECIFIED;
        assert_eq!(
            docker_form(
                any,
                PortRange::single(8080),
                PortRange::single(80),
                Proto::Tcp
            ),
            "0.0.0.0:8080->80/tcp"
        );
        assert_eq!(
            docker_form(
                any,
                PortRange {
                    first: 8080,
                    last: 8090
                },
                PortRange::single(80),
                Proto::Udp
            ),
            "0.0.0.0:8080-8090->80/udp"
        );
    }
}
