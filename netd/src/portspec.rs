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
        "invalid port spec {0:?}: expected [HOSTIP:][HOSTPORT[-END]]:CTRPORT[-END][/PROTO], CTRPORT[-END][/PROTO] or published=HOSTPORT,target=CTRPORT[,protocol=PROTO]"
    )]
    Syntax(String),
    #[error(
        "invalid port spec {spec:?}: {token:?} is not a port number (1-65535) or a range FIRST-LAST"
    )]
    Port { spec: String, token: String },
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
    #[error(
        "invalid port spec {spec:?}: container port 0: a container port is 1-65535 (Docker records a binding of port 0)"
    )]
    ContainerPortZero { spec: String },
    #[error("invalid port spec {spec:?}: unsupported protocol {proto:?} (tcp or udp)")]
    Proto { spec: String, proto: String },
    #[error(
        "invalid port spec {spec:?}: one protocol per spec, not {protos:?} (Docker would take the first alone): give one spec for each"
    )]
    Protos { spec: String, protos: String },
    #[error("invalid port spec {spec:?}: {ip:?} is not an IP address")]
    HostIp { spec: String, ip: String },
    #[error(
        "invalid port spec {spec:?}: {ip} is an IPv6 address: netd publishes on IPv4 host addresses only"
    )]
    Ipv6 { spec: String, ip: String },
    #[error(
        "invalid port spec {spec:?}: {ip} is a {kind} address: a published port is reached at a unicast address of this host (Docker takes it and fails when binding)"
    )]
    HostIpKind {
        spec: String,
        ip: Ipv4Addr,
        kind: &'static str,
    },
    #[error(
        "invalid port spec {spec:?}: unknown field {field:?} (published, target, protocol, mode)"
    )]
    LongField { spec: String, field: String },
    #[error("invalid port spec {spec:?}: mode {mode:?} is not host or ingress")]
    LongMode { spec: String, mode: String },
    #[error("invalid port spec {spec:?}: target (the container port) is missing")]
    LongTarget { spec: String },
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

/// A port or a range `FIRST-LAST`, as Docker's parser takes it but
/// stricter: `8000-8010-8020` (Docker drops the third part) and signs are
/// refused, each naming the token.
fn parse_range(spec: &str, text: &str) -> Result<PortRange, SpecError> {
    let bad = || SpecError::Port {
        spec: spec.to_owned(),
        token: text.to_owned(),
    };
    let port = |p: &str| -> Result<u16, SpecError> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        match p.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(bad()),
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

/// The protocol after `/`, as Docker reads it: any case, empty meaning
/// tcp.
fn parse_proto(spec: &str, text: &str) -> Result<Proto, SpecError> {
    if text.contains('/') {
        return Err(SpecError::Protos {
            spec: spec.to_owned(),
            protos: text.to_owned(),
        });
    }
    match text.to_ascii_lowercase().as_str() {
        "" | "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        _ => Err(SpecError::Proto {
            spec: spec.to_owned(),
            proto: text.to_owned(),
        }),
    }
}

/// A host address: IPv4, unicast. IPv6 ones (bracketed or not) are named
/// as such.
fn parse_host_ip(spec: &str, text: &str) -> Result<Option<Ipv4Addr>, SpecError> {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if bare.is_empty() {
        return Ok(None);
    }
    if let Ok(ip) = bare.parse::<Ipv4Addr>() {
        let kind = if ip.is_multicast() {
            Some("multicast")
        } else if ip.is_broadcast() {
            Some("broadcast")
        } else {
            None
        };
        return match kind {
            Some(kind) => Err(SpecError::HostIpKind {
                spec: spec.to_owned(),
                ip,
                kind,
            }),
            None => Ok(Some(ip)),
        };
    }
    if bare.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(SpecError::Ipv6 {
            spec: spec.to_owned(),
            ip: bare.to_owned(),
        });
    }
    Err(SpecError::HostIp {
        spec: spec.to_owned(),
        ip: text.to_owned(),
    })
}

/// A host port or range: empty or `0` asks for an ephemeral port, as in
/// Docker.
fn parse_host(spec: &str, text: &str) -> Result<Option<PortRange>, SpecError> {
    match text {
        "" | "0" => Ok(None),
        _ => parse_range(spec, text).map(Some),
    }
}

fn parse_ctr(spec: &str, text: &str) -> Result<PortRange, SpecError> {
    if text.is_empty() {
        return Err(SpecError::Syntax(spec.to_owned()));
    }
    if text.bytes().all(|b| b == b'0') {
        return Err(SpecError::ContainerPortZero {
            spec: spec.to_owned(),
        });
    }
    parse_range(spec, text)
}

/// Docker CLI's long form: `published=8080,target=80,protocol=udp,mode=host`.
/// `mode` is Swarm's (`ingress` or `host`); outside Swarm Docker ignores it,
/// and so does netd.
fn parse_long(spec: &str) -> Result<PortSpec, SpecError> {
    let (mut host, mut ctr, mut proto) = (None, None, Proto::Tcp);
    for field in spec.split(',') {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| SpecError::Syntax(spec.to_owned()))?;
        match key.trim().to_ascii_lowercase().as_str() {
            "published" => host = parse_host(spec, value.trim())?,
            "target" => ctr = Some(parse_ctr(spec, value.trim())?),
            "protocol" => proto = parse_proto(spec, value.trim())?,
            "mode" => {
                if !matches!(value.trim(), "host" | "ingress") {
                    return Err(SpecError::LongMode {
                        spec: spec.to_owned(),
                        mode: value.to_owned(),
                    });
                }
            }
            _ => {
                return Err(SpecError::LongField {
                    spec: spec.to_owned(),
                    field: key.to_owned(),
                });
            }
        }
    }
    let ctr = ctr.ok_or_else(|| SpecError::LongTarget {
        spec: spec.to_owned(),
    })?;
    Ok(PortSpec {
        host_ip: None,
        host,
        ctr,
        proto,
    })
}

impl FromStr for PortSpec {
    type Err = SpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        if spec.contains('=') {
            return parse_long(spec).and_then(|parsed| parsed.check_lengths(spec));
        }
        let (rest, proto) = match spec.split_once('/') {
            Some((rest, proto)) => (rest, parse_proto(spec, proto)?),
            None => (spec, Proto::Tcp),
        };
        // As Docker splits: the last part is the container's, the one
        // before the host port, everything before that the address (so an
        // unbracketed IPv6 address is still recognised as one).
        let (ip, host, ctr) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (ip, after) = bracketed
                .split_once(']')
                .ok_or_else(|| SpecError::Syntax(spec.to_owned()))?;
            let ports = after
                .strip_prefix(':')
                .ok_or_else(|| SpecError::Syntax(spec.to_owned()))?;
            let (host, ctr) = ports
                .split_once(':')
                .ok_or_else(|| SpecError::Syntax(spec.to_owned()))?;
            (ip, host, ctr)
        } else {
            let mut parts = rest.rsplitn(3, ':');
            let ctr = parts.next().unwrap_or_default();
            let host = parts.next().unwrap_or_default();
            (parts.next().unwrap_or_default().trim(), host, ctr)
        };
        let ctr = parse_ctr(spec, ctr)?;
        let host_ip = parse_host_ip(spec, ip)?;
        let host = parse_host(spec, host)?;
        Self {
            host_ip,
            host,
            ctr,
            proto,
        }
        .check_lengths(spec)
    }
}

impl PortSpec {
    /// Host and container ranges of different lengths are refused, except
    /// many host ports for one container port.
    fn check_lengths(self, spec: &str) -> Result<Self, SpecError> {
        if let Some(host) = self.host
            && !self.ctr.is_single()
            && host.count() != self.ctr.count()
        {
            return Err(SpecError::RangeLengths {
                spec: spec.to_owned(),
                host: host.to_string(),
                ctr: self.ctr.to_string(),
            });
        }
        Ok(self)
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
            "-1:80".parse::<PortSpec>(),
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
            Err(SpecError::Port { .. })
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

    /// What Docker's `-p` takes on purpose, netd takes the same way.
    #[test]
    fn dockers_lenient_forms_parse_as_docker_reads_them() {
        let tcp80 = |host| PortSpec {
            host_ip: None,
            host,
            ctr: PortRange::single(80),
            proto: Proto::Tcp,
        };
        let at8080 = Some(PortRange::single(8080));
        assert_eq!(p("8080:80/TCP"), tcp80(at8080));
        assert_eq!(p("8080:80/Udp").proto, Proto::Udp);
        assert_eq!(p("8080:80/"), tcp80(at8080));
        assert_eq!(p("0:80"), tcp80(None));
        assert_eq!(p(":80"), tcp80(None));
        assert_eq!(p("::80"), tcp80(None));
        assert_eq!(
            p("127.0.0.1:0:80"),
            PortSpec {
                host_ip: Some(Ipv4Addr::LOCALHOST),
                ..tcp80(None)
            }
        );
        assert_eq!(p("published=8080,target=80"), tcp80(at8080));
        assert_eq!(
            p("published=8080,target=80,protocol=udp,mode=host"),
            PortSpec {
                proto: Proto::Udp,
                ..tcp80(at8080)
            }
        );
        assert_eq!(p("target=80"), tcp80(None));
        assert_eq!(
            p("published=8080-8081,target=80-81").host,
            Some(PortRange {
                first: 8080,
                last: 8081
            })
        );
    }

    /// Each message names the token that is wrong, and where netd is
    /// stricter than Docker, says why.
    #[test]
    fn errors_name_the_token_and_the_difference() {
        let err = |s: &str| s.parse::<PortSpec>().expect_err(s).to_string();
        assert!(
            err("-1:80").contains(r#""-1" is not a port number"#),
            "{}",
            err("-1:80")
        );
        assert!(err("8080-:80").contains(r#""8080-" is not a port number"#));
        assert!(
            err("8000-8010-8020:80")
                .contains(r#""8000-8010-8020" is not a port number (1-65535) or a range"#)
        );
        assert!(err("8080:+80").contains(r#""+80""#));
        let protos = err("8080:80/tcp/udp");
        assert!(
            protos.contains(r#"one protocol per spec, not "tcp/udp""#),
            "{protos}"
        );
        assert!(!protos.contains(r#""80/tcp""#), "{protos}");
        assert!(err("8080:80/sctp").contains(r#"unsupported protocol "sctp""#));
        for v6 in ["[::1]:8080:80", "::1:8080:80", "[2001:db8::1]::80"] {
            assert!(
                err(v6).contains("is an IPv6 address: netd publishes on IPv4 host addresses only"),
                "{v6}: {}",
                err(v6)
            );
        }
        assert!(err("224.0.0.1:8080:80").contains("224.0.0.1 is a multicast address"));
        assert!(err("255.255.255.255:8080:80").contains("is a broadcast address"));
        assert!(err("8080:0").contains("container port 0"));
        assert!(err("0").contains("container port 0"));
        assert!(
            err("published=8080,target=80,host_ip=1.2.3.4").contains(r#"unknown field "host_ip""#)
        );
        assert!(err("published=8080,target=80,mode=swarm").contains(r#"mode "swarm""#));
        assert!(err("published=8080").contains("target (the container port) is missing"));
        assert!(err("8080:").contains("expected [HOSTIP:]"));
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
