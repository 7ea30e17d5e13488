// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Names for containers: the agent's DNS server, one per network, on the
//! network's gateway address (UDP and TCP port 53), bound to its bridge.
//!
//! The protocol is hickory-dns's: its server parses and answers every
//! message, its resolver forwards what is not a container's name to the
//! upstream resolvers, with its cache and timeouts. What is netd's is the
//! table of names ([`Names`]) and the scope of an answer: a container sees
//! the names on the networks its namespace is on, never another network's
//! (as Docker's embedded resolver and Podman's aardvark-dns scope theirs).
//!
//! Binding to the bridge (`SO_BINDTODEVICE`) is what keeps port 53 off the
//! host's other addresses and off the uplinks: a query that reaches the
//! gateway's address through any other interface finds no socket. The
//! server's access list refuses a source outside the network's subnet.

use std::{
    collections::{HashMap, HashSet},
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    str::FromStr as _,
    sync::{Arc, RwLock},
    time::Duration,
};

use hickory_server::{
    Server,
    net::{
        NetError,
        runtime::{Time, TokioTime},
        xfer::Protocol,
    },
    proto::{
        op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode},
        rr::{LowerName, Name, RData, Record, RecordType, rdata},
        serialize::binary::BinEncoder,
    },
    resolver::config::{NameServerConfig, ResolverOpts},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    store::forwarder::{ForwardConfig, ForwardZoneHandler},
    zone_handler::{Catalog, MessageResponse, MessageResponseBuilder},
};
use ipnet::{IpNet, Ipv4Net};
use socket2::{Domain, Socket, Type};
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// Port 53, where resolv.conf's nameservers are asked.
pub const PORT: u16 = 53;

/// Answers change with the endpoints at once: nothing may keep them.
const TTL: u32 = 0;

/// How long a TCP client may stay silent before the server hangs up.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// TCP connections one network's server holds at once, and from one
/// address. TCP is a client's fallback for a truncated answer, one query
/// and gone; a container opening connections by the thousand must not take
/// the agent's files (hickory's own TCP server takes every connection it is
/// offered, so netd accepts them itself), nor its neighbours' turn: one
/// over the per-address limit is closed at once, one over the total waits
/// in the listen backlog.
const MAX_TCP_CONNECTIONS: usize = 256;
const MAX_TCP_CONNECTIONS_PER_ADDRESS: usize = 8;

/// Why the DNS service could not do something; each names what it tried.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("binding the DNS server to {addr} on {bridge}: {source}")]
    Bind {
        addr: SocketAddrV4,
        bridge: String,
        source: io::Error,
    },
    #[error("reading the upstream resolvers from {path}: {source}")]
    ResolvConf { path: String, source: io::Error },
    #[error("reading the upstream resolvers from {path}: {source}")]
    ResolvConfSyntax {
        path: String,
        source: hickory_server::net::NetError,
    },
    #[error("configuring the forwarder: {0}")]
    Forwarder(String),
}

/// One endpoint as the names see it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub network: String,
    /// The endpoint's name and aliases, the name first.
    pub names: Vec<String>,
    pub ip: Ipv4Addr,
    /// Its network namespace (or, for an endpoint whose namespace netd
    /// does not know, the endpoint itself): what makes two endpoints the
    /// same container.
    pub sandbox: String,
}

/// One network as the names see it.
#[derive(Clone, Debug)]
pub struct Network {
    pub name: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub bridge: String,
    /// An internal network's containers get no way out, names included:
    /// nothing is forwarded for them.
    pub internal: bool,
}

/// The names on one network.
#[derive(Default, Debug)]
struct NetworkNames {
    subnet: Option<Ipv4Net>,
    internal: bool,
    /// By lowercase name or alias: the addresses that answer it.
    by_name: HashMap<String, Vec<Ipv4Addr>>,
    /// By address: who has it.
    by_addr: HashMap<Ipv4Addr, Holder>,
    /// The network's name as a domain: lowercase.
    domain: String,
}

/// The endpoint an address is.
#[derive(Debug)]
struct Holder {
    /// Its first name that is a DNS name, for PTR.
    ptr_name: Option<String>,
    sandbox: String,
}

/// Every network's names, and which networks each sandbox is on. Built
/// whole from the agent's state at each change of endpoints or networks,
/// and swapped in: a query never sees half a change.
#[derive(Default, Debug)]
pub struct Names {
    networks: HashMap<String, NetworkNames>,
    sandboxes: HashMap<String, Vec<String>>,
    /// Every network's domain (its name, lowercase), looked up per query.
    domains: HashSet<String>,
}

/// What a query for a container's name gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The name is a container's: these records (none for a type it has
    /// no data of, AAAA on an IPv4 network).
    Records(Vec<Record>),
    /// The name is in containers' domain (a single label, or the reverse
    /// name of an address of a netd subnet) but nobody has it.
    NoSuchName,
    /// Not a container's name: the upstream resolvers'.
    Forward,
    /// Not a container's name, and the asker may not go outside (an
    /// internal network).
    Refuse,
}

impl Names {
    pub fn new(networks: &[Network], entries: &[Entry]) -> Self {
        let mut names = Self::default();
        for net in networks {
            let slot = names.networks.entry(net.name.clone()).or_default();
            slot.subnet = Some(net.subnet);
            slot.internal = net.internal;
            slot.domain = net.name.to_ascii_lowercase();
            names.domains.insert(slot.domain.clone());
        }
        for entry in entries {
            let Some(net) = names.networks.get_mut(&entry.network) else {
                continue;
            };
            for name in entry.names.iter().filter(|n| is_dns_name(n)) {
                net.by_name
                    .entry(name.to_ascii_lowercase())
                    .or_default()
                    .push(entry.ip);
            }
            let holder = Holder {
                ptr_name: entry.names.iter().find(|n| is_dns_name(n)).cloned(),
                sandbox: entry.sandbox.clone(),
            };
            net.by_addr.insert(entry.ip, holder);
            names
                .sandboxes
                .entry(entry.sandbox.clone())
                .or_default()
                .push(entry.network.clone());
        }
        names
    }

    /// The networks whose names `asker`, asking on `network`, sees:
    /// `network` first, then every other network its namespace is on;
    /// `network` alone for an address no endpoint has.
    fn scope<'a>(&'a self, network: &'a str, asker: Ipv4Addr) -> Vec<&'a str> {
        let mut scope = vec![network];
        if let Some(others) = self
            .networks
            .get(network)
            .and_then(|net| net.by_addr.get(&asker))
            .and_then(|holder| self.sandboxes.get(&holder.sandbox))
        {
            scope.extend(others.iter().map(String::as_str).filter(|n| *n != network));
        }
        scope
    }

    /// The answer to `asker`'s query on `network` for `qname` of `qtype`.
    pub fn answer(
        &self,
        network: &str,
        asker: Ipv4Addr,
        qname: &Name,
        qtype: RecordType,
    ) -> Answer {
        let internal = self.networks.get(network).is_some_and(|n| n.internal);
        let scope = self.scope(network, asker);
        let text = qname.to_ascii().to_ascii_lowercase();
        let text = text.trim_end_matches('.');
        if let Some(addr) = reverse_v4(text) {
            return self.answer_ptr(&scope, addr, qname, qtype, internal);
        }
        // The first network of the scope with the name answers: the one
        // asked on, if it has it. A name is one endpoint per network; two
        // networks' endpoints of one name are two containers, never mixed
        // in one answer.
        let mut found = Vec::new();
        for net in &scope {
            let Some(names) = self.networks.get(*net) else {
                continue;
            };
            // `NAME.NETWORK`, the network being the search domain too.
            let local = text
                .strip_suffix(names.domain.as_str())
                .and_then(|t| t.strip_suffix('.'))
                .unwrap_or(text);
            if let Some(addrs) = names.by_name.get(local) {
                found.extend(addrs.iter().copied());
                break;
            }
        }
        // A single label asked for an address is a container's name or
        // nobody's; so is a name in a netd network's domain (a search
        // domain's miss must not go out with the network's name). The root
        // and other types of a single label (a TLD's SOA, DS) are the
        // world's.
        let single = !text.is_empty() && !text.contains('.');
        let address_type = matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY);
        let in_netd_domain = text
            .rsplit_once('.')
            .is_some_and(|(_, last)| self.domains.contains(last));
        let ours = (single && address_type) || in_netd_domain;
        if !found.is_empty() {
            found.sort();
            found.dedup();
            let records = match qtype {
                RecordType::A | RecordType::ANY => found
                    .into_iter()
                    .map(|ip| Record::from_rdata(qname.clone(), TTL, RData::A(rdata::A(ip))))
                    .collect(),
                _ => Vec::new(),
            };
            return Answer::Records(records);
        }
        match (ours, internal) {
            (true, _) => Answer::NoSuchName,
            (false, true) => Answer::Refuse,
            (false, false) => Answer::Forward,
        }
    }

    fn answer_ptr(
        &self,
        scope: &[&str],
        addr: Ipv4Addr,
        qname: &Name,
        qtype: RecordType,
        internal: bool,
    ) -> Answer {
        for net in scope {
            let Some(names) = self.networks.get(*net) else {
                continue;
            };
            if let Some(holder) = names.by_addr.get(&addr) {
                let target = holder
                    .ptr_name
                    .as_ref()
                    .and_then(|name| Name::from_str(&format!("{name}.{}.", names.domain)).ok());
                // No DNS name on this network: perhaps on another.
                let Some(target) = target else {
                    continue;
                };
                let records = match qtype {
                    RecordType::PTR | RecordType::ANY => vec![Record::from_rdata(
                        qname.clone(),
                        TTL,
                        RData::PTR(rdata::PTR(target)),
                    )],
                    _ => Vec::new(),
                };
                return Answer::Records(records);
            }
        }
        // Another network's address is nobody's to this asker, and no
        // upstream's to know.
        let netd_subnet = self
            .networks
            .values()
            .any(|n| n.subnet.is_some_and(|s| s.contains(&addr)));
        match (netd_subnet, internal) {
            (true, _) => Answer::NoSuchName,
            (false, true) => Answer::Refuse,
            (false, false) => Answer::Forward,
        }
    }
}

/// `d.c.b.a.in-addr.arpa` as the address `a.b.c.d`: decimal octets as an
/// address is written (no sign, no leading zero).
fn reverse_v4(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut octets = [0u8; 4];
    let mut parts = rest.split('.');
    for octet in octets.iter_mut().rev() {
        let part = parts.next()?;
        let canonical =
            part.bytes().all(|b| b.is_ascii_digit()) && (part == "0" || !part.starts_with('0'));
        *octet = canonical.then(|| part.parse().ok()).flatten()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// Whether `name` can be asked for: one or more DNS labels of 63 bytes at
/// most, each starting with a letter or a digit (glibc refuses a leading
/// `-`; a Docker endpoint's 64-digit ID, a pod's `NAMESPACE/NAME`, are
/// not names either).
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            label.len() <= 63
                && label.starts_with(|c: char| c.is_ascii_alphanumeric())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The names every network's server reads, swapped whole at each change.
#[derive(Clone, Default)]
pub struct SharedNames(Arc<RwLock<Arc<Names>>>);

impl SharedNames {
    pub fn replace(&self, names: Names) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(names);
    }

    fn current(&self) -> Arc<Names> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Where names that are not containers' go.
#[derive(Clone, Debug)]
pub enum Upstream {
    /// The resolvers a resolv.conf names (the agent's own, by default).
    ResolvConf(String),
    /// These addresses, port 53.
    Servers(Vec<IpAddr>),
}

/// A catalog with one zone, the root, forwarded upstream: hickory's
/// resolver with its cache, its timeouts and its TCP retry of a truncated
/// answer.
fn forwarder(upstream: &Upstream) -> Result<Catalog, DnsError> {
    let (servers, options) = match upstream {
        Upstream::Servers(addrs) => (
            addrs
                .iter()
                .map(|ip| NameServerConfig::udp_and_tcp(*ip))
                .collect(),
            ResolverOpts::default(),
        ),
        Upstream::ResolvConf(path) => {
            let text = std::fs::read(path).map_err(|source| DnsError::ResolvConf {
                path: path.clone(),
                source,
            })?;
            let (config, options) = hickory_server::resolver::system_conf::parse_resolv_conf(text)
                .map_err(|source| DnsError::ResolvConfSyntax {
                    path: path.clone(),
                    source,
                })?;
            let (_, _, servers) = config.into_parts();
            (servers, options)
        }
    };
    let handler = ForwardZoneHandler::builder_tokio(ForwardConfig {
        name_servers: servers,
        options: Some(options),
    })
    .build()
    .map_err(DnsError::Forwarder)?;
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::from(Name::root()), vec![Arc::new(handler)]);
    Ok(catalog)
}

/// Queries forwarded at once, all networks together: each holds an
/// upstream socket until answered or timed out, so a container flooding
/// its gateway with names to forward cannot take the agent's files. One
/// over is answered SERVFAIL at once.
const MAX_FORWARDS_IN_FLIGHT: usize = 1024;

/// One network's server: answers from the names, forwards the rest.
struct Handler {
    network: String,
    names: SharedNames,
    forward: Arc<Catalog>,
    forwards: Arc<tokio::sync::Semaphore>,
}

impl Handler {
    /// Hands `request` to the forwarder, if a slot is free.
    async fn forward<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        match self.forwards.try_acquire() {
            Ok(_slot) => self.forward.handle_request::<R, T>(request, response).await,
            Err(_) => respond(request, response, ResponseCode::ServFail, &[]).await,
        }
    }
}

/// Sends netd's own answer to `request`: `code` and `records`.
async fn respond<R: ResponseHandler>(
    request: &Request,
    mut response: R,
    code: ResponseCode,
    records: &[Record],
) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = matches!(code, ResponseCode::NoError | ResponseCode::NXDomain);
    metadata.recursion_available = true;
    metadata.response_code = code;
    let edns = request.edns.as_ref().map(|theirs| {
        let mut ours = Edns::new();
        ours.set_max_payload(theirs.max_payload().max(512));
        ours
    });
    let mut builder = MessageResponseBuilder::from_message_request(request);
    if let Some(edns) = &edns {
        builder.edns(edns);
    }
    let message = builder.build(metadata, records.iter(), [], [], []);
    match response.send_response(message).await {
        Ok(info) => info,
        Err(error) => {
            debug!(%error, "sending a DNS answer failed");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            Header {
                metadata,
                counts: HeaderCounts::default(),
            }
            .into()
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        // The sockets are IPv4: an IPv6 source is not one of the network's.
        let IpAddr::V4(asker) = request.src().ip().to_canonical() else {
            return respond(request, response, ResponseCode::Refused, &[]).await;
        };
        let query = match request.request_info() {
            Ok(info) if info.metadata.op_code == OpCode::Query => info.query,
            // Not one plain query: the catalog answers it (NOTIMP, FORMERR)
            // and forwards nothing.
            _ => return self.forward.handle_request::<R, T>(request, response).await,
        };
        let answer = self.names.current().answer(
            &self.network,
            asker,
            query.original().name(),
            query.query_type(),
        );
        match answer {
            Answer::Forward => self.forward::<R, T>(request, response).await,
            Answer::Records(records) => {
                respond(request, response, ResponseCode::NoError, &records).await
            }
            Answer::NoSuchName => respond(request, response, ResponseCode::NXDomain, &[]).await,
            Answer::Refuse => respond(request, response, ResponseCode::Refused, &[]).await,
        }
    }
}

/// Serves DNS over TCP on `listener`: at most [`MAX_TCP_CONNECTIONS`] at
/// once and [`MAX_TCP_CONNECTIONS_PER_ADDRESS`] from one address, each
/// closed after [`TCP_TIMEOUT`] of silence, a source outside `subnet`
/// closed on at once.
async fn serve_tcp(listener: tokio::net::TcpListener, handler: Arc<Handler>, subnet: Ipv4Net) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    let per_address: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of files, say: wait for some to close, do not spin.
                debug!(%error, "accepting a DNS connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let source = peer.ip().to_canonical();
        let inside = matches!(source, IpAddr::V4(ip) if subnet.contains(&ip));
        if !inside {
            continue;
        }
        {
            let mut open = per_address.lock().unwrap_or_else(|e| e.into_inner());
            let count = open.entry(source).or_default();
            if *count >= MAX_TCP_CONNECTIONS_PER_ADDRESS {
                continue;
            }
            *count += 1;
        }
        let (handler, per_address) = (handler.clone(), per_address.clone());
        connections.spawn(async move {
            let _slot = slot;
            serve_connection(stream, peer, &handler).await;
            let mut open = per_address.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = open.get_mut(&source) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&source);
                }
            }
        });
    }
}

/// Answers the queries of one TCP connection (RFC 1035's two-byte length
/// before each message), one at a time, until it closes, falls silent or
/// sends something that is no DNS query (which ends it: a TCP client that
/// sends garbage gets no FORMERR, as over UDP, but a closed connection).
async fn serve_connection(stream: tokio::net::TcpStream, peer: SocketAddr, handler: &Handler) {
    use tokio::io::AsyncReadExt as _;
    let (mut reader, writer) = stream.into_split();
    let answers = TcpAnswers(Arc::new(tokio::sync::Mutex::new(writer)));
    loop {
        let mut length = [0u8; 2];
        if !matches!(
            tokio::time::timeout(TCP_TIMEOUT, reader.read_exact(&mut length)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(length))];
        if !matches!(
            tokio::time::timeout(TCP_TIMEOUT, reader.read_exact(&mut message)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let Ok(request) = Request::from_bytes(message, peer, Protocol::Tcp) else {
            return;
        };
        if request.metadata.message_type == MessageType::Response {
            return;
        }
        handler
            .handle_request::<_, TokioTime>(&request, answers.clone())
            .await;
    }
}

/// Where a TCP connection's answers go, each framed by its length.
#[derive(Clone)]
struct TcpAnswers(Arc<tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>>);

#[async_trait::async_trait]
impl ResponseHandler for TcpAnswers {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        use tokio::io::AsyncWriteExt as _;
        // Encoded apart (name compression counts from the message's first
        // byte), then the two bytes of its length and it, written at once.
        let mut message = Vec::with_capacity(512);
        let info = {
            let mut encoder = BinEncoder::new(&mut message);
            encoder.set_max_size(u16::MAX);
            response.destructive_emit(&mut encoder)?
        };
        let length = u16::try_from(message.len()).unwrap_or(u16::MAX);
        let mut framed = Vec::with_capacity(message.len() + 2);
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(&message);
        self.0.lock().await.write_all(&framed).await?;
        Ok(info)
    }
}

/// A socket of `kind` bound to `addr` on `bridge` alone.
fn bound_socket(kind: Type, addr: SocketAddrV4, bridge: &str) -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, kind.cloexec(), None)?;
    socket.set_nonblocking(true)?;
    socket.bind_device(Some(bridge.as_bytes()))?;
    // TCP only: a listener re-made at once (a network removed and made
    // again) must not wait for its old connections' TIME_WAIT. On UDP it
    // would let another socket share the gateway's port 53.
    if kind == Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    // The gateway's address may come a moment after the bridge (or go
    // down with it): the socket stays bound meanwhile.
    socket.set_freebind_v4(true)?;
    socket.bind(&addr.into())?;
    if kind == Type::STREAM {
        socket.listen(128)?;
    }
    Ok(socket)
}

/// A network's running server, stopped on drop.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

/// The agent's DNS service: one server per network, the shared names, the
/// forwarder.
pub struct Dns {
    names: SharedNames,
    forward: Arc<Catalog>,
    forwards: Arc<tokio::sync::Semaphore>,
    running: HashMap<String, Running>,
}

impl Dns {
    /// The service forwarding to `upstream`.
    pub fn new(upstream: &Upstream) -> Result<Self, DnsError> {
        Ok(Self::with_catalog(forwarder(upstream)?))
    }

    /// The service without a forwarder (the upstream could not be read):
    /// containers' names are answered, other names REFUSED.
    pub fn without_forwarding() -> Self {
        Self::with_catalog(Catalog::new())
    }

    fn with_catalog(catalog: Catalog) -> Self {
        Self {
            names: SharedNames::default(),
            forward: Arc::new(catalog),
            forwards: Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS_IN_FLIGHT)),
            running: HashMap::new(),
        }
    }

    /// Replaces the names every server answers from.
    pub fn set_names(&self, names: Names) {
        self.names.replace(names);
    }

    /// Whether `network`'s server runs.
    pub fn serves(&self, network: &str) -> bool {
        self.running.contains_key(network)
    }

    /// Starts `net`'s server (nothing if it runs).
    pub fn serve(&mut self, net: &Network) -> Result<(), DnsError> {
        if self.running.contains_key(&net.name) {
            return Ok(());
        }
        let addr = SocketAddrV4::new(net.gateway, PORT);
        let bind_err = |source: io::Error| DnsError::Bind {
            addr,
            bridge: net.bridge.clone(),
            source,
        };
        let udp = bound_socket(Type::DGRAM, addr, &net.bridge)
            .and_then(|s| tokio::net::UdpSocket::from_std(s.into()))
            .map_err(bind_err)?;
        let tcp = bound_socket(Type::STREAM, addr, &net.bridge)
            .and_then(|s| tokio::net::TcpListener::from_std(s.into()))
            .map_err(bind_err)?;
        let handler = || Handler {
            network: net.name.clone(),
            names: self.names.clone(),
            forward: self.forward.clone(),
            forwards: self.forwards.clone(),
        };
        // Only the network's own addresses are answered; everything else
        // is refused.
        let mut server = Server::with_access(
            handler(),
            [IpNet::from(Ipv4Net::default())],
            [IpNet::V4(net.subnet)],
        );
        server.register_socket(udp);
        let tcp = tokio::spawn(serve_tcp(tcp, Arc::new(handler()), net.subnet));
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let network = net.name.clone();
        tokio::spawn(async move {
            let _ = stop_rx.await;
            // Dropping the TCP task closes the listener and its connections.
            tcp.abort();
            let _ = tcp.await;
            if let Err(error) = server.shutdown_gracefully().await {
                warn!(%network, %error, "the DNS server stopped with an error");
            }
            let _ = done_tx.send(());
        });
        self.running.insert(
            net.name.clone(),
            Running {
                stop: Some(stop_tx),
                done: Some(done_rx),
            },
        );
        Ok(())
    }

    /// Stops `network`'s server and closes its sockets (nothing if none
    /// runs).
    pub async fn stop(&mut self, network: &str) {
        if let Some(running) = self.running.remove(network) {
            running.stop().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, subnet: &str, internal: bool) -> Network {
        let subnet: Ipv4Net = subnet.parse().expect("subnet");
        Network {
            name: name.to_owned(),
            subnet,
            gateway: subnet.hosts().next().expect("a host"),
            bridge: format!("br-{name}"),
            internal,
        }
    }

    fn entry(network: &str, names: &[&str], ip: &str, sandbox: &str) -> Entry {
        Entry {
            network: network.to_owned(),
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            ip: ip.parse().expect("address"),
            sandbox: sandbox.to_owned(),
        }
    }

    fn names() -> Names {
        Names::new(
            &[
                net("front", "10.1.0.0/24", false),
                net("back", "10.2.0.0/24", false),
                net("vault", "10.3.0.0/24", true),
            ],
            &[
                entry("front", &["web", "www", "api"], "10.1.0.2", "ns-web"),
                entry("back", &["web"], "10.2.0.2", "ns-web"),
                entry("back", &["db"], "10.2.0.3", "ns-db"),
                entry("front", &["cache"], "10.1.0.4", "ns-cache"),
                entry("vault", &["secret"], "10.3.0.2", "ns-secret"),
                entry(
                    "front",
                    &["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"],
                    "10.1.0.9",
                    "dk",
                ),
            ],
        )
    }

    fn a(answer: Answer) -> Vec<Ipv4Addr> {
        match answer {
            Answer::Records(records) => records
                .iter()
                .map(|r| match &r.data {
                    RData::A(a) => a.0,
                    other => panic!("not an A record: {other:?}"),
                })
                .collect(),
            other => panic!("no records: {other:?}"),
        }
    }

    fn ask(names: &Names, network: &str, asker: &str, qname: &str, qtype: RecordType) -> Answer {
        names.answer(
            network,
            asker.parse().expect("address"),
            &Name::from_str(qname).expect("name"),
            qtype,
        )
    }

    #[test]
    fn names_and_aliases_resolve_on_the_askers_networks_only() {
        let names = names();
        let web: Vec<Ipv4Addr> = vec!["10.1.0.2".parse().expect("address")];
        // cache (front only) sees web's front address, by name and alias,
        // with and without the network's domain, in any case.
        for qname in ["web.", "WWW.", "api.front.", "web.front"] {
            assert_eq!(
                a(ask(&names, "front", "10.1.0.4", qname, RecordType::A)),
                web,
                "{qname}"
            );
        }
        // db is on back only: web's back address; cache is another network's.
        assert_eq!(
            a(ask(&names, "back", "10.2.0.3", "web.", RecordType::A)),
            vec!["10.2.0.2".parse::<Ipv4Addr>().expect("address")]
        );
        // ... and cache and web's alias are another network's.
        for (qname, want) in [
            ("cache.", Answer::NoSuchName),
            ("www.", Answer::NoSuchName),
            // In a netd network's domain: netd's to say, never upstream's.
            ("cache.front.", Answer::NoSuchName),
        ] {
            assert_eq!(
                ask(&names, "back", "10.2.0.3", qname, RecordType::A),
                want,
                "{qname}"
            );
        }
        // web, on both, asking on back, sees front's names too.
        assert_eq!(
            a(ask(&names, "back", "10.2.0.2", "cache.", RecordType::A)),
            vec!["10.1.0.4".parse::<Ipv4Addr>().expect("address")]
        );
        // AAAA of an IPv4 container: the name exists, with no such data.
        assert_eq!(
            ask(&names, "front", "10.1.0.4", "web.", RecordType::AAAA),
            Answer::Records(Vec::new())
        );
        // A 64-digit ID is no DNS label: not a name, and no PTR; but the
        // address is known, so not forwarded either.
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert!(!names.networks["front"].by_name.contains_key(id));
        assert_eq!(
            ask(
                &names,
                "front",
                "10.1.0.4",
                "9.0.1.10.in-addr.arpa.",
                RecordType::PTR
            ),
            Answer::NoSuchName
        );
    }

    #[test]
    fn other_names_are_forwarded_except_from_an_internal_network() {
        let names = names();
        for (network, asker, qname, qtype, want) in [
            (
                "front",
                "10.1.0.4",
                "example.org.",
                RecordType::A,
                Answer::Forward,
            ),
            (
                "vault",
                "10.3.0.2",
                "example.org.",
                RecordType::A,
                Answer::Refuse,
            ),
            (
                "vault",
                "10.3.0.2",
                "nobody.",
                RecordType::A,
                Answer::NoSuchName,
            ),
            (
                "front",
                "10.1.0.4",
                "8.8.8.8.in-addr.arpa.",
                RecordType::PTR,
                Answer::Forward,
            ),
        ] {
            assert_eq!(
                ask(&names, network, asker, qname, qtype),
                want,
                "{network} {qname}"
            );
        }
    }

    #[test]
    fn ptr_names_an_address_on_the_askers_networks() {
        let names = names();
        match ask(
            &names,
            "front",
            "10.1.0.4",
            "2.0.1.10.in-addr.arpa.",
            RecordType::PTR,
        ) {
            Answer::Records(records) => {
                assert_eq!(records.len(), 1);
                assert_eq!(
                    &records[0].data,
                    &RData::PTR(rdata::PTR(Name::from_str("web.front.").expect("name")))
                );
            }
            other => panic!("{other:?}"),
        }
        // db's address is on back, which cache is not on; nor is it an
        // upstream's to answer.
        assert_eq!(
            ask(
                &names,
                "front",
                "10.1.0.4",
                "3.0.2.10.in-addr.arpa.",
                RecordType::PTR
            ),
            Answer::NoSuchName
        );
        assert_eq!(
            ask(
                &names,
                "front",
                "10.1.0.4",
                "77.0.1.10.in-addr.arpa.",
                RecordType::PTR
            ),
            Answer::NoSuchName
        );
    }

    #[test]
    fn the_network_asked_on_answers_first_and_domains_ignore_case() {
        let names = Names::new(
            &[
                net("Front", "10.1.0.0/24", false),
                net("back", "10.2.0.0/24", false),
            ],
            &[
                entry("Front", &["db"], "10.1.0.5", "ns-db1"),
                entry("back", &["db"], "10.2.0.5", "ns-db2"),
                entry("Front", &["web"], "10.1.0.2", "ns-web"),
                entry("back", &["web"], "10.2.0.2", "ns-web"),
            ],
        );
        // web is on both; asking on back, back's db answers, not both dbs.
        assert_eq!(
            a(ask(&names, "back", "10.2.0.2", "db.", RecordType::A)),
            vec!["10.2.0.5".parse::<Ipv4Addr>().expect("address")]
        );
        assert_eq!(
            a(ask(&names, "Front", "10.1.0.2", "db.", RecordType::A)),
            vec!["10.1.0.5".parse::<Ipv4Addr>().expect("address")]
        );
        assert_eq!(
            a(ask(&names, "back", "10.2.0.2", "db.front.", RecordType::A)),
            vec!["10.1.0.5".parse::<Ipv4Addr>().expect("address")]
        );
        match ask(
            &names,
            "Front",
            "10.1.0.2",
            "5.0.1.10.in-addr.arpa.",
            RecordType::PTR,
        ) {
            Answer::Records(records) => assert_eq!(
                records[0].data,
                RData::PTR(rdata::PTR(Name::from_str("db.front.").expect("name")))
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_root_and_a_tlds_other_records_are_the_worlds() {
        let names = names();
        for (qname, qtype, want) in [
            (".", RecordType::NS, Answer::Forward),
            ("com.", RecordType::DS, Answer::Forward),
            ("com.", RecordType::A, Answer::NoSuchName),
            ("www.example.front.", RecordType::A, Answer::NoSuchName),
        ] {
            assert_eq!(
                ask(&names, "front", "10.1.0.4", qname, qtype),
                want,
                "{qname} {qtype}"
            );
        }
    }

    #[test]
    fn dns_names_are_labels_starting_with_a_letter_or_digit() {
        for good in ["web", "www.api", "a_b", "9lives", &"a".repeat(63)] {
            assert!(is_dns_name(good), "{good}");
        }
        for bad in [
            "",
            "-web",
            "_web",
            "web.",
            "a..b",
            "we b",
            "web!",
            &"a".repeat(64),
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }

    #[test]
    fn reverse_names_parse_as_addresses() {
        assert_eq!(
            reverse_v4("4.3.2.1.in-addr.arpa"),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(reverse_v4("3.2.1.in-addr.arpa"), None);
        assert_eq!(reverse_v4("5.4.3.2.1.in-addr.arpa"), None);
        assert_eq!(reverse_v4("256.3.2.1.in-addr.arpa"), None);
        assert_eq!(reverse_v4("example.org"), None);
        assert_eq!(reverse_v4("4.3.2.01.in-addr.arpa"), None);
        assert_eq!(reverse_v4("4.3.2.+1.in-addr.arpa"), None);
        assert_eq!(
            reverse_v4("0.0.0.10.in-addr.arpa"),
            Some(Ipv4Addr::new(10, 0, 0, 0))
        );
    }
}
