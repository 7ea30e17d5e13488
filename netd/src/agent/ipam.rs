// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! IPv4 address management for the network: Docker's default pools, the
//! lowest free address, and the checks on a requested one.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;

use super::error::AgentError;

/// Docker's default local pools, in its order: 172.17.0.0/16 to
/// 172.31.0.0/16, then 192.168.0.0/16 cut into /20s.
pub fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let large =
        (17..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("/16 is valid"));
    let small = (0..16)
        .map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).expect("/20 is valid"));
    large.chain(small)
}

/// The first default pool that overlaps none of `in_use` (the namespace's
/// routes and addresses).
pub fn pick_subnet(in_use: &[Ipv4Net]) -> Option<Ipv4Net> {
    default_pools().find(|pool| !in_use.iter().any(|net| overlaps(pool, net)))
}

/// A network's subnet and gateway: `subnet` if it overlaps none of
/// `in_use`, else the first free default pool; `gateway`, else the
/// subnet's first address. The gateway must be a host of the subnet.
pub fn choose(
    subnet: Option<Ipv4Net>,
    gateway: Option<Ipv4Addr>,
    in_use: &[Ipv4Net],
) -> Result<(Ipv4Net, Ipv4Addr), AgentError> {
    let subnet = match subnet {
        Some(subnet) => {
            let subnet = subnet.trunc();
            if let Some(existing) = in_use.iter().find(|net| overlaps(&subnet, net)) {
                return Err(AgentError::SubnetOverlap {
                    subnet,
                    existing: *existing,
                });
            }
            subnet
        }
        None => pick_subnet(in_use).ok_or(AgentError::NoFreeSubnet)?,
    };
    let gateway = match gateway {
        Some(gateway) => gateway,
        None => subnet
            .hosts()
            .next()
            .ok_or(AgentError::GatewayOutsideSubnet {
                gateway: subnet.network(),
                subnet,
            })?,
    };
    if !subnet.contains(&gateway) || gateway == subnet.network() || gateway == subnet.broadcast() {
        return Err(AgentError::GatewayOutsideSubnet { gateway, subnet });
    }
    Ok((subnet, gateway))
}

/// Whether two networks share an address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Checks that `ip` can be given to an endpoint: inside the subnet, not its
/// network or broadcast address, not the gateway, not taken. `taken` maps
/// assigned addresses to their endpoint's name.
pub fn check_requested(
    ip: Ipv4Addr,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    taken: &BTreeMap<Ipv4Addr, String>,
) -> Result<(), AgentError> {
    if !subnet.contains(&ip) {
        return Err(AgentError::IpOutsideSubnet { ip, subnet });
    }
    if ip == subnet.network() && subnet.prefix_len() < 31 {
        return Err(AgentError::IpReserved {
            ip,
            which: "network",
            subnet,
        });
    }
    if ip == subnet.broadcast() && subnet.prefix_len() < 31 {
        return Err(AgentError::IpReserved {
            ip,
            which: "broadcast",
            subnet,
        });
    }
    if ip == gateway {
        return Err(AgentError::IpIsGateway { ip });
    }
    if let Some(name) = taken.get(&ip) {
        return Err(AgentError::IpTaken {
            ip,
            name: name.clone(),
        });
    }
    Ok(())
}

/// The lowest address of `subnet` that [`check_requested`] accepts.
pub fn next_free(
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    taken: &BTreeMap<Ipv4Addr, String>,
) -> Result<Ipv4Addr, AgentError> {
    next_free_in(None, subnet, gateway, taken)
}

/// [`next_free`] within `range` of the subnet (`--ip-range`), if one is
/// given.
pub fn next_free_in(
    range: Option<Ipv4Net>,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    taken: &BTreeMap<Ipv4Addr, String>,
) -> Result<Ipv4Addr, AgentError> {
    let pool = range.unwrap_or(subnet);
    // A range's own first and last addresses are hosts of the subnet.
    let candidates: Box<dyn Iterator<Item = Ipv4Addr>> = match range {
        Some(range) if range.prefix_len() < 31 => Box::new(
            (u32::from(range.network())..=u32::from(range.broadcast())).map(Ipv4Addr::from),
        ),
        _ => Box::new(pool.hosts()),
    };
    candidates
        .filter(|ip| *ip != subnet.network() && *ip != subnet.broadcast())
        .find(|ip| *ip != gateway && !taken.contains_key(ip))
        .ok_or(AgentError::SubnetFull { subnet: pool })
}

/// `--ip-range`, checked against the network's subnet.
pub fn parse_range(text: &str, subnet: Ipv4Net) -> Result<Ipv4Net, AgentError> {
    let range: Ipv4Net = text
        .parse()
        .map_err(|_| AgentError::SubnetSyntax(text.to_owned()))?;
    let range = range.trunc();
    if !subnet.contains(&range) {
        return Err(AgentError::IpRange { range, subnet });
    }
    Ok(range)
}

/// `--aux-address NAME=IP` entries, each inside the subnet and not its
/// gateway.
pub fn parse_aux(
    given: &[String],
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<BTreeMap<String, Ipv4Addr>, AgentError> {
    given
        .iter()
        .map(|entry| {
            let bad = || AgentError::AuxAddress(entry.clone());
            let (name, ip) = entry.split_once('=').ok_or_else(bad)?;
            let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
            if name.is_empty() || !subnet.contains(&ip) || ip == gateway {
                return Err(bad());
            }
            Ok((name.to_owned(), ip))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges_and_aux_addresses_narrow_the_pool() {
        let subnet: Ipv4Net = "192.168.1.0/24".parse().expect("net");
        let gateway = Ipv4Addr::new(192, 168, 1, 1);
        let range = parse_range("192.168.1.128/25", subnet).expect("range");
        let mut taken = BTreeMap::new();
        assert_eq!(
            next_free_in(Some(range), subnet, gateway, &taken).expect("free"),
            Ipv4Addr::new(192, 168, 1, 128)
        );
        taken.insert(
            Ipv4Addr::new(192, 168, 1, 128),
            "aux address host".to_owned(),
        );
        assert_eq!(
            next_free_in(Some(range), subnet, gateway, &taken).expect("free"),
            Ipv4Addr::new(192, 168, 1, 129)
        );
        // The subnet's broadcast address is never given out.
        let last: Ipv4Net = "192.168.1.254/31".parse().expect("net");
        taken.insert(Ipv4Addr::new(192, 168, 1, 254), "x".to_owned());
        assert!(next_free_in(Some(last.trunc()), subnet, gateway, &taken).is_err());
        assert!(parse_range("10.0.0.0/25", subnet).is_err());
        assert!(parse_range("192.168.0.0/23", subnet).is_err());
        let aux = parse_aux(&["router=192.168.1.2".to_owned()], subnet, gateway).expect("aux");
        assert_eq!(aux["router"], Ipv4Addr::new(192, 168, 1, 2));
        for bad in [
            "router",
            "=192.168.1.2",
            "r=10.0.0.1",
            "r=192.168.1.1",
            "r=x",
        ] {
            assert!(
                parse_aux(&[bad.to_owned()], subnet, gateway).is_err(),
                "{bad}"
            );
        }
    }

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("net")
    }

    #[test]
    fn a_network_gets_a_free_subnet_and_a_gateway_inside_it() {
        let in_use = [net("172.17.0.0/16"), net("10.1.0.0/24")];
        let (subnet, gateway) = choose(None, None, &in_use).expect("a pool");
        assert_eq!(
            (subnet, gateway),
            (net("172.18.0.0/16"), "172.18.0.1".parse().expect("ip"))
        );
        let (subnet, gateway) = choose(
            Some(net("10.2.0.9/24")),
            Some("10.2.0.254".parse().expect("ip")),
            &in_use,
        )
        .expect("given");
        assert_eq!(
            (subnet, gateway.to_string().as_str()),
            (net("10.2.0.0/24"), "10.2.0.254")
        );
        assert!(matches!(
            choose(Some(net("10.1.0.128/25")), None, &in_use),
            Err(AgentError::SubnetOverlap { existing, .. }) if existing == in_use[1]
        ));
        for outside in ["10.3.0.0", "10.3.0.255", "10.4.0.1"] {
            assert!(matches!(
                choose(
                    Some(net("10.3.0.0/24")),
                    Some(outside.parse().expect("ip")),
                    &in_use
                ),
                Err(AgentError::GatewayOutsideSubnet { .. })
            ));
        }
    }

    #[test]
    fn picks_first_docker_pool_free_of_routes() {
        assert_eq!(pick_subnet(&[]), Some(net("172.17.0.0/16")));
        assert_eq!(
            pick_subnet(&[net("172.17.0.0/16"), net("172.18.5.0/24")]),
            Some(net("172.19.0.0/16"))
        );
        // A default route overlaps everything: it is not a reason to skip.
        // (Callers leave 0.0.0.0/0 out; see Agent::routes_in_use.)
        let all_172: Vec<_> = (17..=31).map(|b| net(&format!("172.{b}.0.0/16"))).collect();
        let mut in_use = all_172;
        in_use.push(net("192.168.0.0/24"));
        assert_eq!(pick_subnet(&in_use), Some(net("192.168.16.0/20")));
    }

    #[test]
    fn requested_addresses_are_checked() {
        let subnet = net("172.17.0.0/16");
        let gw = Ipv4Addr::new(172, 17, 0, 1);
        let taken = BTreeMap::from([(Ipv4Addr::new(172, 17, 0, 2), "web".to_owned())]);
        let check = |ip| check_requested(ip, subnet, gw, &taken);
        assert!(check(Ipv4Addr::new(172, 17, 0, 3)).is_ok());
        assert!(matches!(
            check(Ipv4Addr::new(10, 0, 0, 1)),
            Err(AgentError::IpOutsideSubnet { .. })
        ));
        assert!(matches!(check(gw), Err(AgentError::IpIsGateway { .. })));
        assert!(matches!(
            check(Ipv4Addr::new(172, 17, 0, 0)),
            Err(AgentError::IpReserved {
                which: "network",
                ..
            })
        ));
        assert!(matches!(
            check(Ipv4Addr::new(172, 17, 255, 255)),
            Err(AgentError::IpReserved {
                which: "broadcast",
                ..
            })
        ));
        assert!(matches!(
            check(Ipv4Addr::new(172, 17, 0, 2)),
            Err(AgentError::IpTaken { .. })
        ));
    }

    #[test]
    fn allocates_lowest_free_and_reports_full() {
        let subnet = net("10.9.0.0/29");
        let gw = Ipv4Addr::new(10, 9, 0, 1);
        let mut taken = BTreeMap::new();
        let mut got = Vec::new();
        while let Ok(ip) = next_free(subnet, gw, &taken) {
            taken.insert(ip, String::new());
            got.push(ip.octets()[3]);
        }
        assert_eq!(got, vec![2, 3, 4, 5, 6]);
        assert!(matches!(
            next_free(subnet, gw, &taken),
            Err(AgentError::SubnetFull { .. })
        ));
    }
}
