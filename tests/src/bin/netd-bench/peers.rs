// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! What the peers netd is measured against load: Docker 20.10's iptables
//! rules, the nftables DNAT map, docker-proxy's command line.
//!
//! The rule text is generated from the same list of published ports every
//! variant gets, so all of them publish exactly the same thing.

use std::fmt::Write as _;

/// The bridge of the netfilter and proxy beds (netd makes its own).
pub const BRIDGE: &str = "br0";
/// The container's address in every bed (netd's IPAM hands out the same).
pub const CTR_IP: &str = "172.30.0.2";
pub const SUBNET: &str = "172.30.0.0/16";
pub const GATEWAY: &str = "172.30.0.1";

/// The measured TCP port: host 8080 to container 80, as `-p 8080:80`.
pub const TCP_PORT: Port = Port {
    proto: Proto::Tcp,
    host: 8080,
    ctr: 80,
};
/// The measured UDP port.
pub const UDP_PORT: Port = Port {
    proto: Proto::Udp,
    host: 9000,
    ctr: 9000,
};
/// Extra published ports (the scaling benchmarks) are 20000, 20001, ...
pub const FILLER_BASE: u16 = 20000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// One published port: `host` on every host address to `ctr` in the
/// container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub proto: Proto,
    pub host: u16,
    pub ctr: u16,
}

impl Port {
    /// Docker's `-p` syntax, which `netd publish` takes too.
    pub fn spec(&self) -> String {
        format!("{}:{}/{}", self.host, self.ctr, self.proto.as_str())
    }
}

/// `count` TCP ports in all: `count - 1` fillers, then the measured port
/// last (Docker appends a new port's rules, so the port published last is
/// the one a linear rule walk reaches last), plus the UDP port first.
pub fn published(count: usize) -> Vec<Port> {
    let mut ports = vec![UDP_PORT];
    ports.extend(fillers(count.saturating_sub(1)));
    ports.push(TCP_PORT);
    ports
}

/// The first `count` filler ports.
pub fn fillers(count: usize) -> impl Iterator<Item = Port> {
    (0..count).map(|i| {
        let port = FILLER_BASE + u16::try_from(i).expect("fewer than 45,000 fillers");
        Port {
            proto: Proto::Tcp,
            host: port,
            ctr: port,
        }
    })
}

/// Docker 20.10's ruleset for `ports` on bridge br0, as dockerd generates
/// it (order aside), for `iptables-restore`.
///
/// `local_dnat`: the rules of `userland-proxy: false`, where host-local
/// clients are DNATed in OUTPUT (loopback destinations included, with
/// route_localnet on the bridge and a masquerade of local sources) instead
/// of reaching docker-proxy.
pub fn docker_rules(ports: &[Port], local_dnat: bool) -> String {
    let mut nat = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n",
    );
    nat.push_str("-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n");
    if local_dnat {
        nat.push_str("-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER\n");
        let _ = writeln!(
            nat,
            "-A POSTROUTING -o {BRIDGE} -m addrtype --src-type LOCAL -j MASQUERADE"
        );
    } else {
        nat.push_str("-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n");
    }
    let _ = writeln!(
        nat,
        "-A POSTROUTING -s {SUBNET} ! -o {BRIDGE} -j MASQUERADE"
    );
    let _ = writeln!(nat, "-A DOCKER -i {BRIDGE} -j RETURN");
    let mut filter = format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n:DOCKER-ISOLATION-STAGE-1 - [0:0]\n:DOCKER-ISOLATION-STAGE-2 - [0:0]\n:DOCKER-USER - [0:0]\n\
         -A FORWARD -j DOCKER-USER\n\
         -A FORWARD -j DOCKER-ISOLATION-STAGE-1\n\
         -A FORWARD -o {BRIDGE} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A FORWARD -o {BRIDGE} -j DOCKER\n\
         -A FORWARD -i {BRIDGE} ! -o {BRIDGE} -j ACCEPT\n\
         -A FORWARD -i {BRIDGE} -o {BRIDGE} -j ACCEPT\n\
         -A DOCKER-ISOLATION-STAGE-1 -i {BRIDGE} ! -o {BRIDGE} -j DOCKER-ISOLATION-STAGE-2\n\
         -A DOCKER-ISOLATION-STAGE-1 -j RETURN\n\
         -A DOCKER-ISOLATION-STAGE-2 -o {BRIDGE} -j DROP\n\
         -A DOCKER-ISOLATION-STAGE-2 -j RETURN\n\
         -A DOCKER-USER -j RETURN\n"
    );
    for port in ports {
        for (table, rule) in docker_port_rules(port) {
            let text = if table == "nat" {
                &mut nat
            } else {
                &mut filter
            };
            let _ = writeln!(text, "-A {rule}");
        }
    }
    nat.push_str("COMMIT\n");
    filter.push_str("COMMIT\n");
    nat + &filter
}

/// The three rules (table, chain and rule) Docker adds for one published
/// port: the masquerade of the container's hairpin, the DNAT and the
/// forward accept.
pub fn docker_port_rules(port: &Port) -> [(&'static str, String); 3] {
    let Port { proto, host, ctr } = *port;
    let p = proto.as_str();
    [
        (
            "nat",
            format!(
                "POSTROUTING -s {CTR_IP}/32 -d {CTR_IP}/32 -p {p} -m {p} --dport {ctr} -j MASQUERADE"
            ),
        ),
        (
            "nat",
            format!(
                "DOCKER ! -i {BRIDGE} -p {p} -m {p} --dport {host} -j DNAT --to-destination {CTR_IP}:{ctr}"
            ),
        ),
        (
            "filter",
            format!(
                "DOCKER -d {CTR_IP}/32 ! -i {BRIDGE} -o {BRIDGE} -p {p} -m {p} --dport {ctr} -j ACCEPT"
            ),
        ),
    ]
}

/// The nftables ruleset with a DNAT map: one lookup whatever the number of
/// ports (netfilter's best case), and the same policy as Docker's rules
/// (masquerade of container egress, forward only to published ports and
/// replies).
pub fn nft_ruleset(ports: &[Port]) -> String {
    // nft refuses an empty element list.
    let elements = if ports.is_empty() {
        String::new()
    } else {
        format!(
            "\n    elements = {{ {} }}",
            ports
                .iter()
                .map(nft_element)
                .collect::<Vec<_>>()
                .join(",\n      ")
        )
    };
    format!(
        "table ip netbench {{\n\
         \x20 map pubports {{\n\
         \x20   type inet_proto . inet_service : ipv4_addr . inet_service{elements}\n\
         \x20 }}\n\
         \x20 chain prerouting {{\n\
         \x20   type nat hook prerouting priority dstnat; policy accept;\n\
         \x20   fib daddr type local dnat ip to meta l4proto . th dport map @pubports\n\
         \x20 }}\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   ip saddr {SUBNET} oifname != \"{BRIDGE}\" masquerade\n\
         \x20 }}\n\
         \x20 chain forward {{\n\
         \x20   type filter hook forward priority filter; policy drop;\n\
         \x20   ct state established,related accept\n\
         \x20   ct status dnat oifname \"{BRIDGE}\" accept\n\
         \x20   iifname \"{BRIDGE}\" accept\n\
         \x20 }}\n\
         }}\n"
    )
}

/// One element of the DNAT map.
pub fn nft_element(port: &Port) -> String {
    format!(
        "{} . {} : {CTR_IP} . {}",
        port.proto.as_str(),
        port.host,
        port.ctr
    )
}

/// docker-proxy's command line for `port` on every host address.
pub fn docker_proxy(port: &Port) -> String {
    format!(
        "{} -proto {} -host-ip 0.0.0.0 -host-port {} -container-ip {CTR_IP} -container-port {}",
        docker_proxy_bin().display(),
        port.proto.as_str(),
        port.host,
        port.ctr
    )
}

/// docker-proxy: `NETD_DOCKER_PROXY` (cargo xtask bench finds or unpacks
/// it), else where Debian's docker.io installs it.
pub fn docker_proxy_bin() -> std::path::PathBuf {
    std::env::var_os("NETD_DOCKER_PROXY")
        .map_or_else(|| "/usr/sbin/docker-proxy".into(), Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_port_comes_last() {
        let ports = published(3);
        assert_eq!(ports.len(), 4);
        assert_eq!(ports[0], UDP_PORT);
        assert_eq!(ports[1].host, FILLER_BASE);
        assert_eq!(ports[3], TCP_PORT);
        let rules = docker_rules(&ports, false);
        let dnat: Vec<_> = rules.lines().filter(|l| l.contains("DNAT")).collect();
        assert_eq!(dnat.len(), 4);
        assert!(dnat[3].contains("--dport 8080"), "{dnat:?}");
    }

    #[test]
    fn docker_rules_match_dockerd_for_one_port() {
        let rules = docker_rules(&[TCP_PORT], false);
        for line in [
            "-A DOCKER ! -i br0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.30.0.2:80",
            "-A DOCKER -d 172.30.0.2/32 ! -i br0 -o br0 -p tcp -m tcp --dport 80 -j ACCEPT",
            "-A POSTROUTING -s 172.30.0.2/32 -d 172.30.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE",
            "-A POSTROUTING -s 172.30.0.0/16 ! -o br0 -j MASQUERADE",
            "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
            ":FORWARD DROP [0:0]",
        ] {
            assert!(rules.lines().any(|l| l == line), "missing {line}");
        }
        assert_eq!(rules.matches("COMMIT").count(), 2);
    }

    #[test]
    fn nft_map_may_be_empty() {
        assert!(!nft_ruleset(&[]).contains("elements"));
    }

    #[test]
    fn nft_map_holds_every_port() {
        let text = nft_ruleset(&published(2));
        assert!(text.contains("tcp . 8080 : 172.30.0.2 . 80"));
        assert!(text.contains("udp . 9000 : 172.30.0.2 . 9000"));
        assert!(text.contains("tcp . 20000 : 172.30.0.2 . 20000"));
    }
}
