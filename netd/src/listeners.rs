// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Sockets bound in this network namespace: a host port a process already
//! uses must not be published over it (the process would silently lose its
//! traffic to the container).
//!
//! Asked of the kernel through sock_diag, for listening TCP and unconnected
//! UDP sockets only: reading /proc/net/tcp instead walks every bucket of
//! the machine's established-connection hash, which costs milliseconds per
//! publish on a big host. /proc is the fallback where sock_diag is missing
//! (udp_diag is a module some kernels lack).

use std::{
    collections::BTreeSet,
    fs, io,
    net::{IpAddr, Ipv4Addr},
};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use crate::portspec::Proto;

/// A bound socket: TCP in LISTEN, or any bound UDP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    pub proto: Proto,
    /// `None`: an IPv6 socket on `::`, which takes IPv4 too unless
    /// IPV6_V6ONLY (treated as taking it).
    pub addr: Option<Ipv4Addr>,
    pub port: u16,
}

impl Listener {
    /// Whether this socket uses `port` on `host_ip` (0.0.0.0 = every
    /// address).
    pub fn conflicts(&self, proto: Proto, host_ip: Ipv4Addr, port: u16) -> bool {
        self.proto == proto
            && self.port == port
            && match self.addr {
                None => true,
                Some(addr) => addr.is_unspecified() || host_ip.is_unspecified() || addr == host_ip,
            }
    }

    pub fn describe(&self) -> String {
        match self.addr {
            Some(addr) => format!("{addr}:{}/{}", self.port, self.proto),
            None => format!("[::]:{}/{}", self.port, self.proto),
        }
    }
}

/// TCP's LISTEN and UDP's "unconnected" states in /proc/net/{tcp,udp}.
const TCP_LISTEN: &str = "0A";
const UDP_CLOSE: &str = "07";

/// Parses one /proc/net/{tcp,udp}{,6} table.
pub fn parse(text: &str, proto: Proto, v6: bool) -> Vec<Listener> {
    let mut listeners = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
            continue;
        };
        let wanted = match proto {
            Proto::Tcp => TCP_LISTEN,
            Proto::Udp => UDP_CLOSE,
        };
        if *state != wanted {
            continue;
        }
        let Some((addr, port)) = local.split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port, 16) else {
            continue;
        };
        let addr = if v6 {
            match addr {
                // ::
                "00000000000000000000000000000000" => None,
                // ::ffff:a.b.c.d
                a if a.len() == 32 && &a[..24] == "0000000000000000FFFF0000" => {
                    u32::from_str_radix(&a[24..], 16)
                        .ok()
                        .map(|v| Ipv4Addr::from(v.swap_bytes()))
                }
                // Any other IPv6 address: no IPv4 port taken.
                _ => continue,
            }
        } else {
            // The kernel prints the address as a host-order u32 in hex.
            match u32::from_str_radix(addr, 16) {
                Ok(v) => Some(Ipv4Addr::from(v.swap_bytes())),
                Err(_) => continue,
            }
        };
        listeners.push(Listener { proto, addr, port });
    }
    listeners
}

/// Every bound socket of `protos` in this thread's network namespace.
pub fn current(protos: &BTreeSet<Proto>) -> Vec<Listener> {
    let mut all = Vec::new();
    for (file, proto, v6) in [
        ("tcp", Proto::Tcp, false),
        ("tcp6", Proto::Tcp, true),
        ("udp", Proto::Udp, false),
        ("udp6", Proto::Udp, true),
    ] {
        if !protos.contains(&proto) {
            continue;
        }
        match diag(proto, v6) {
            Ok(found) => all.extend(found),
            Err(_) => {
                if let Ok(text) = fs::read_to_string(format!("/proc/thread-self/net/{file}")) {
                    all.extend(parse(&text, proto, v6));
                }
            }
        }
    }
    all
}

/// What an IPv4 publish must respect of a socket bound to `addr`: `None`
/// for an IPv6 socket on `::` (takes IPv4 too unless IPV6_V6ONLY, treated
/// as taking it), the IPv4 address of an IPv4 or v4-mapped socket; the
/// outer `None` for any other IPv6 address (no IPv4 port taken).
fn ipv4_view(addr: IpAddr) -> Option<Option<Ipv4Addr>> {
    match addr {
        IpAddr::V4(v4) => Some(Some(v4)),
        IpAddr::V6(v6) if v6.is_unspecified() => Some(None),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(Some),
    }
}

/// The listening (TCP) or unconnected (UDP) sockets of one family, from
/// sock_diag.
fn diag(proto: Proto, v6: bool) -> io::Result<Vec<Listener>> {
    let (protocol, states) = match proto {
        Proto::Tcp => (IPPROTO_TCP, StateFlags::LISTEN),
        Proto::Udp => (IPPROTO_UDP, StateFlags::CLOSE),
    };
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: if v6 { AF_INET6 } else { AF_INET },
            protocol,
            extensions: ExtensionFlags::empty(),
            states,
            socket_id: if v6 {
                SocketId::new_v6()
            } else {
                SocketId::new_v4()
            },
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut found = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut buf[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[offset..size])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    let id = &response.header.socket_id;
                    if let Some(addr) = ipv4_view(id.source_address) {
                        found.push(Listener {
                            proto,
                            addr,
                            port: id.source_port,
                        });
                    }
                }
                NetlinkPayload::Done(_) => return Ok(found),
                NetlinkPayload::Error(err) => {
                    return Err(err.to_io());
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_sockets() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
        let udp = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
        let tcp6 = std::net::TcpListener::bind("[::]:0");
        let connected =
            std::net::TcpStream::connect(tcp.local_addr().expect("addr")).expect("connect");
        let found = diag(Proto::Tcp, false)
            .and_then(|mut all| {
                all.extend(diag(Proto::Tcp, true)?);
                all.extend(diag(Proto::Udp, false)?);
                Ok(all)
            })
            .expect("sock_diag");
        let has = |proto, addr, port| found.contains(&Listener { proto, addr, port });
        let tcp_port = tcp.local_addr().expect("addr").port();
        assert!(
            has(Proto::Tcp, Some(Ipv4Addr::LOCALHOST), tcp_port),
            "{found:?}"
        );
        let udp_port = udp.local_addr().expect("addr").port();
        assert!(
            has(Proto::Udp, Some(Ipv4Addr::UNSPECIFIED), udp_port),
            "{found:?}"
        );
        if let Ok(tcp6) = tcp6 {
            let port = tcp6.local_addr().expect("addr").port();
            assert!(has(Proto::Tcp, None, port), "{found:?}");
        }
        // A connected socket holds no port for publishing.
        let ephemeral = connected.local_addr().expect("addr").port();
        assert!(
            !found
                .iter()
                .any(|l| l.proto == Proto::Tcp && l.port == ephemeral),
            "{found:?}"
        );
    }

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
";
    const TCP6: &str =
        "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A
   1: 0000000000000000FFFF00000A00000A:1F91 00000000000000000000000000000000:0000 0A
";

    #[test]
    fn parses_listening_sockets_only() {
        let v4 = parse(TCP, Proto::Tcp, false);
        assert_eq!(
            v4,
            vec![
                Listener {
                    proto: Proto::Tcp,
                    addr: Some(Ipv4Addr::LOCALHOST),
                    port: 8080
                },
                Listener {
                    proto: Proto::Tcp,
                    addr: Some(Ipv4Addr::UNSPECIFIED),
                    port: 22
                },
            ]
        );
        let v6 = parse(TCP6, Proto::Tcp, true);
        assert_eq!(
            v6[0],
            Listener {
                proto: Proto::Tcp,
                addr: None,
                port: 80
            }
        );
        assert_eq!(v6[1].addr, Some(Ipv4Addr::new(10, 0, 0, 10)));
    }

    #[test]
    fn conflicts_follow_bind_semantics() {
        let lo = Listener {
            proto: Proto::Tcp,
            addr: Some(Ipv4Addr::LOCALHOST),
            port: 8080,
        };
        assert!(lo.conflicts(Proto::Tcp, Ipv4Addr::UNSPECIFIED, 8080));
        assert!(lo.conflicts(Proto::Tcp, Ipv4Addr::LOCALHOST, 8080));
        assert!(!lo.conflicts(Proto::Tcp, Ipv4Addr::new(10, 0, 0, 1), 8080));
        assert!(!lo.conflicts(Proto::Udp, Ipv4Addr::UNSPECIFIED, 8080));
        assert!(!lo.conflicts(Proto::Tcp, Ipv4Addr::UNSPECIFIED, 8081));
    }
}
