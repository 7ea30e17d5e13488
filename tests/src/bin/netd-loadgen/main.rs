// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The load generator that `cargo xtask bench` runs inside network namespaces:
//! one `serve` process on the server side, and one client process per
//! measurement on the client side.
//!
//! # Protocol
//!
//! **TCP.** The first byte a client sends selects what the server does with the
//! connection:
//!
//! - `E`, echo: the server writes back every byte it reads, the `E` included,
//!   until EOF or an error. A client's request of `n` bytes is therefore
//!   answered by the same `n` bytes; `crr` sends the `E` as the first byte of
//!   its one request, `rr` sends it alone once per connection and reads it back
//!   before its timed transactions.
//! - `S`, sink: the server reads and discards everything until EOF, then
//!   closes. Its EOF tells a sending client that every byte arrived.
//! - `G`, generate: the server writes 128 KiB buffers until a write fails, that
//!   is until the client has gone.
//!
//! Any other first byte closes the connection. Errors, such as the RST of a
//! `crr` client closing with `SO_LINGER {on, 0}`, just end the connection.
//!
//! **UDP.** The server counts the datagrams and bytes each of its sockets
//! receives. Two payloads are control requests, not counted, answered to the
//! sender: `!reset` zeroes the counters and is answered `ok`; `?count` is
//! answered `{"datagrams":N,"bytes":B}`, the counts since the last reset.
//! A datagram starting with `E` is echoed to its sender, not counted.
//!
//! # Output
//!
//! `serve` prints `ready` once every socket is listening, then runs until
//! killed. Each client prints one JSON object (with `"mode"` naming the client,
//! or `{"mode":..,"error":..}` if it could not run at all) and exits 0 only if
//! at least one operation succeeded. Every socket operation times out after
//! 2 s, so a broken path shows up as errors, never as a hang.

use std::{
    convert::Infallible,
    fmt,
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, UdpSocket},
    num::NonZeroUsize,
    ops::RangeInclusive,
    process::ExitCode,
    str::FromStr,
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use clap::{Args, Parser, Subcommand, ValueEnum};
use nix::{
    sched::{CpuSet, sched_setaffinity},
    sys::socket::{setsockopt, sockopt},
    unistd::Pid,
};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod flood;
mod hold;

/// Timeout of every client socket operation (connect, read, write).
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Backlog of the server's TCP listeners, for bursts of `crr` connections.
const LISTEN_BACKLOG: i32 = 4096;
/// Receive buffer of the server's UDP sockets, so a burst is not dropped there.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;
/// What the server's `G` mode and the `bulk send` client write at a time.
const CHUNK: usize = 128 << 10;
/// Read buffer of the `bulk receive` client.
const RECEIVE_BUFFER: usize = 256 << 10;
/// Read buffer of one server connection.
const CONNECTION_BUFFER: usize = 64 << 10;
/// Latency samples reserved per client thread up front; more grow the vector.
const SAMPLE_RESERVE: usize = 1 << 16;
/// How often a UDP control request is sent before giving up.
const CONTROL_ATTEMPTS: usize = 5;
/// Pause between the end of a UDP blast and `?count`, to let the server drain
/// its socket.
const UDP_SETTLE: Duration = Duration::from_millis(300);

/// The data written by `G` and `bulk send`: its content does not matter.
static ZEROS: [u8; CHUNK] = [0; CHUNK];

#[derive(Debug, Parser)]
#[command(about = "netd's benchmark load generator: a server and its clients")]
struct Cli {
    /// Pin the whole process, all its threads, to this CPU.
    #[arg(long, global = true)]
    cpu: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve TCP and UDP until killed.
    Serve(ServeArgs),
    #[command(flatten)]
    Client(Client),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Listen for TCP connections on this address (repeatable).
    #[arg(long, value_name = "ADDR:PORT")]
    tcp: Vec<SocketAddr>,
    /// Count UDP datagrams received on this address (repeatable).
    #[arg(long, value_name = "ADDR:PORT")]
    udp: Vec<SocketAddr>,
}

#[derive(Debug, Subcommand)]
enum Client {
    /// Request-response transactions over kept-alive TCP connections.
    Rr(RrArgs),
    /// A new TCP connection per request-response, closed with RST.
    Crr(CrrArgs),
    /// One TCP connection's throughput in one direction.
    Bulk(BulkArgs),
    /// Datagrams blasted round-robin over several UDP flows.
    Udp(UdpArgs),
    /// Long-lived TCP and UDP flows echoing with checks, and new
    /// connections alongside, until a stop file appears.
    Hold(hold::HoldArgs),
    /// TCP SYNs with spoofed sources, through a raw socket.
    SynFlood(flood::FloodArgs),
}

/// Bounds shared by all clients.
#[derive(Debug, Args)]
struct Limits {
    /// The server's address.
    #[arg(long, value_name = "IP:PORT")]
    to: SocketAddr,
    /// How long to run, in seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    duration: Duration,
    /// At most this many operations (transactions, connections, reads or
    /// writes, datagrams), attempts included.
    #[arg(long, value_name = "N", default_value_t = u64::MAX)]
    max: u64,
}

#[derive(Debug, Args)]
struct RrArgs {
    #[command(flatten)]
    limits: Limits,
    /// Parallel connections, one thread each.
    #[arg(long, value_name = "N")]
    flows: NonZeroUsize,
    /// Bytes of each request and of each response.
    #[arg(long, value_name = "BYTES", default_value = "64")]
    size: NonZeroUsize,
}

#[derive(Debug, Args)]
struct CrrArgs {
    #[command(flatten)]
    limits: Limits,
    /// Threads, each opening one connection after the other.
    #[arg(long, value_name = "C", default_value = "4")]
    concurrency: NonZeroUsize,
    /// Source address to bind [default: the unspecified address].
    #[arg(long, value_name = "IP")]
    source: Option<IpAddr>,
    /// Source ports, split among the threads.
    #[arg(long, value_name = "LO-HI", default_value = "20000-60999")]
    ports: PortRange,
    /// Bytes of the request (the `E` included) and of the response.
    #[arg(long, value_name = "BYTES", default_value = "64")]
    size: NonZeroUsize,
    /// Timeout of each socket operation (connect, write, read), in
    /// seconds: long enough, TCP's retransmissions (of a SYN after 1, 3
    /// and 7 s) recover what a loaded machine loses.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, default_value = "2")]
    timeout: Duration,
}

#[derive(Debug, Args)]
struct BulkArgs {
    #[command(flatten)]
    limits: Limits,
    /// Which way the data flows, seen from the client.
    #[arg(long)]
    direction: Direction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Direction {
    Send,
    Receive,
}

#[derive(Debug, Args)]
struct UdpArgs {
    #[command(flatten)]
    limits: Limits,
    /// Sockets, each its own source port and so its own flow.
    #[arg(long, value_name = "N")]
    flows: NonZeroUsize,
    /// Payload bytes of each datagram.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 18,
        value_parser = clap::value_parser!(u16).range(..=65507)
    )]
    size: u16,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.parse().map_err(|error| format!("{error}"))?;
    Duration::try_from_secs_f64(seconds).map_err(|error| error.to_string())
}

/// An inclusive range of ports, `LO-HI` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PortRange {
    lo: u16,
    hi: u16,
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (lo, hi) = text.split_once('-').ok_or("expected LO-HI")?;
        let port = |text: &str| {
            text.parse::<u16>()
                .map_err(|error| format!("{text:?}: {error}"))
        };
        let range = Self {
            lo: port(lo)?,
            hi: port(hi)?,
        };
        if range.lo > range.hi {
            return Err(format!("{text}: LO is above HI"));
        }
        Ok(range)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.lo, self.hi)
    }
}

impl PortRange {
    fn len(self) -> usize {
        usize::from(self.hi - self.lo) + 1
    }

    fn ports(self) -> RangeInclusive<u16> {
        self.lo..=self.hi
    }

    /// Splits the range into `parts` disjoint ranges covering it, their
    /// lengths differing by at most one. Needs `1 <= parts <= self.len()`.
    fn split(self, parts: usize) -> Vec<Self> {
        assert!(
            (1..=self.len()).contains(&parts),
            "cannot split {self:?} in {parts}"
        );
        let (base, extra) = (self.len() / parts, self.len() % parts);
        let mut lo = usize::from(self.lo);
        (0..parts)
            .map(|part| {
                let len = base + usize::from(part < extra);
                let port = |port: usize| u16::try_from(port).expect("inside the split range");
                let range = Self {
                    lo: port(lo),
                    hi: port(lo + len - 1),
                };
                lo += len;
                range
            })
            .collect()
    }
}

fn main() -> ExitCode {
    let Cli { cpu, command } = Cli::parse();
    match command {
        Command::Serve(args) => {
            // The server runs until killed: it only returns on failure.
            let Err(error) = pin_to_cpu(cpu).and_then(|()| serve(&args));
            eprintln!("netd-loadgen serve: {error:#}");
            ExitCode::FAILURE
        }
        Command::Client(client) => {
            let mode = client.name();
            match pin_to_cpu(cpu).and_then(|()| client.run()) {
                Ok(report) => {
                    print_json(&report);
                    if report.succeeded() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(error) => {
                    print_json(&Failure {
                        mode,
                        error: format!("{error:#}"),
                    });
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn print_json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string(value).expect("reports serialize to JSON")
    );
}

/// Pins the calling thread, and so every thread and runtime created after it,
/// to `cpu`.
fn pin_to_cpu(cpu: Option<usize>) -> Result<()> {
    let Some(cpu) = cpu else { return Ok(()) };
    let mut set = CpuSet::new();
    set.set(cpu)
        .with_context(|| format!("CPU {cpu} is out of range"))?;
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning to CPU {cpu}"))
}

/// Returns the unspecified address of `addr`'s family.
fn unspecified_like(addr: SocketAddr) -> IpAddr {
    match addr {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

// ---------------------------------------------------------------------------
// Server

fn serve(args: &ServeArgs) -> Result<Infallible> {
    let server = Server::bind(&args.tcp, &args.udp)?;
    let mut stdout = io::stdout();
    writeln!(stdout, "ready")
        .and_then(|()| stdout.flush())
        .context("printing ready")?;
    server.run()
}

/// The server's sockets, bound and listening, not yet served.
struct Server {
    tcp: Vec<std::net::TcpListener>,
    udp: Vec<UdpSocket>,
}

/// What a server UDP socket received since the last `!reset`; also the answer
/// to `?count`.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
struct UdpCounts {
    datagrams: u64,
    bytes: u64,
}

impl Server {
    fn bind(tcp: &[SocketAddr], udp: &[SocketAddr]) -> Result<Self> {
        ensure!(
            !tcp.is_empty() || !udp.is_empty(),
            "nothing to serve: give --tcp or --udp"
        );
        let tcp = tcp
            .iter()
            .map(|&addr| tcp_listener(addr).with_context(|| format!("listening on TCP {addr}")))
            .collect::<Result<_>>()?;
        let udp = udp
            .iter()
            .map(|&addr| udp_server_socket(addr).with_context(|| format!("binding UDP {addr}")))
            .collect::<Result<_>>()?;
        Ok(Self { tcp, udp })
    }

    /// Serves every socket on one thread until the process is killed.
    fn run(self) -> Result<Infallible> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the tokio runtime")?;
        runtime.block_on(async {
            for listener in self.tcp {
                tokio::spawn(accept_loop(tokio::net::TcpListener::from_std(listener)?));
            }
            for socket in self.udp {
                tokio::spawn(count_datagrams(tokio::net::UdpSocket::from_std(socket)?));
            }
            std::future::pending().await
        })
    }
}

fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn udp_server_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // SO_RCVBUFFORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN, which
    // the benchmarks have; without it SO_RCVBUF gives what rmem_max allows.
    if setsockopt(&socket, sockopt::RcvBufForce, &UDP_RECEIVE_BUFFER).is_err() {
        socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER)?;
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

async fn accept_loop(listener: tokio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    // Connection errors are normal (crr clients close with
                    // RST): the connection just ends.
                    let _ = serve_connection(stream).await;
                });
            }
            Err(error) => {
                // Typically EMFILE: back off instead of spinning on it.
                eprintln!("netd-loadgen serve: accept: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_connection(mut stream: tokio::net::TcpStream) -> io::Result<()> {
    // Echoed responses may take several writes; Nagle would hold back all but
    // the first until the client's (delayed) ACK.
    stream.set_nodelay(true)?;
    // `read_buf` fills the spare capacity: no zeroing per connection.
    let mut buf = Vec::with_capacity(CONNECTION_BUFFER);
    stream.read_buf(&mut buf).await?;
    match buf.first() {
        Some(b'E') => loop {
            stream.write_all(&buf).await?;
            buf.clear();
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        },
        Some(b'S') => loop {
            buf.clear();
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        },
        Some(b'G') => loop {
            stream.write_all(&ZEROS).await?;
        },
        // EOF before the mode byte, or an unknown mode.
        _ => Ok(()),
    }
}

async fn count_datagrams(socket: tokio::net::UdpSocket) {
    let mut counts = UdpCounts::default();
    let mut buf = vec![0; 1 << 16];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                eprintln!("netd-loadgen serve: UDP receive: {error}");
                continue;
            }
        };
        let answer = match &buf[..len] {
            b"!reset" => {
                counts = UdpCounts::default();
                b"ok".to_vec()
            }
            b"?count" => serde_json::to_vec(&counts).expect("counts serialize to JSON"),
            [b'E', ..] => buf[..len].to_vec(),
            _ => {
                counts.datagrams += 1;
                counts.bytes += len as u64;
                continue;
            }
        };
        // A lost answer is the client's to retry.
        let _ = socket.send_to(&answer, peer).await;
    }
}

// ---------------------------------------------------------------------------
// Clients: shared parts

/// A client's report, printed as one JSON object.
#[derive(Debug, Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
enum Report {
    Rr(RrReport),
    Crr(CrrReport),
    Bulk(BulkReport),
    Udp(UdpReport),
    Hold(hold::HoldReport),
    SynFlood(flood::FloodReport),
}

/// What a client prints when it could not run at all.
#[derive(Debug, Serialize)]
struct Failure {
    mode: &'static str,
    error: String,
}

#[derive(Debug, Serialize)]
struct RrReport {
    flows: usize,
    transactions: u64,
    seconds: f64,
    rate: f64,
    #[serde(flatten)]
    latency: Latency,
    errors: u64,
}

#[derive(Debug, Serialize)]
struct CrrReport {
    connections: u64,
    seconds: f64,
    rate: f64,
    #[serde(flatten)]
    latency: Latency,
    errors: u64,
    /// The errors by kind.
    failures: Failures,
    port_busy: u64,
}

/// Failed `crr` connections by what went wrong. A reset or refusal, an
/// early close and a wrong answer are what a broken path gives: the peer,
/// or a kernel that got a packet it has no socket for, said so. A timeout
/// is what a path that drops gives, and also what a machine too busy to
/// run the client, the server or softirqs in time gives.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Failures {
    timeouts: u64,
    resets: u64,
    closed: u64,
    mismatches: u64,
    other: u64,
}

impl Failures {
    fn count(&mut self, error: &io::Error) {
        match error.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => self.timeouts += 1,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => self.resets += 1,
            io::ErrorKind::UnexpectedEof => self.closed += 1,
            io::ErrorKind::InvalidData => self.mismatches += 1,
            _ => self.other += 1,
        }
    }

    fn merge(self, other: Self) -> Self {
        Self {
            timeouts: self.timeouts + other.timeouts,
            resets: self.resets + other.resets,
            closed: self.closed + other.closed,
            mismatches: self.mismatches + other.mismatches,
            other: self.other + other.other,
        }
    }
}

#[derive(Debug, Serialize)]
struct BulkReport {
    direction: Direction,
    bytes: u64,
    seconds: f64,
    gbit_per_s: f64,
    errors: u64,
}

#[derive(Debug, Serialize)]
struct UdpReport {
    flows: usize,
    sent: u64,
    received: u64,
    seconds: f64,
    pps: f64,
    send_errors: u64,
}

impl Report {
    /// Whether at least one operation succeeded.
    fn succeeded(&self) -> bool {
        match self {
            Self::Rr(report) => report.transactions > 0,
            Self::Crr(report) => report.connections > 0,
            Self::Bulk(report) => report.bytes > 0,
            Self::Udp(report) => report.received > 0,
            Self::Hold(report) => report.succeeded(),
            Self::SynFlood(report) => report.succeeded(),
        }
    }
}

impl Client {
    fn name(&self) -> &'static str {
        match self {
            Self::Rr(_) => "rr",
            Self::Crr(_) => "crr",
            Self::Bulk(_) => "bulk",
            Self::Udp(_) => "udp",
            Self::Hold(_) => "hold",
            Self::SynFlood(_) => "syn-flood",
        }
    }

    fn run(&self) -> Result<Report> {
        match self {
            Self::Rr(args) => Ok(Report::Rr(rr(args))),
            Self::Crr(args) => crr(args).map(Report::Crr),
            Self::Bulk(args) => Ok(Report::Bulk(bulk(args))),
            Self::Udp(args) => udp(args).map(Report::Udp),
            Self::Hold(args) => hold::hold(args).map(Report::Hold),
            Self::SynFlood(args) => flood::flood(args).map(Report::SynFlood),
        }
    }
}

/// A client run's clock and bounds, shared by its threads: a deadline and a
/// cap on operations.
struct Budget {
    start: Instant,
    deadline: Instant,
    remaining: AtomicU64,
}

impl Budget {
    /// Starts the clock.
    fn start(limits: &Limits) -> Self {
        let start = Instant::now();
        Self {
            start,
            deadline: start + limits.duration,
            remaining: AtomicU64::new(limits.max),
        }
    }

    /// Claims one operation: false once the time is up or the cap used.
    fn next(&self) -> bool {
        Instant::now() < self.deadline
            && self
                .remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
    }

    fn elapsed_secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// How many latency samples a thread reserves up front.
    fn sample_reserve(&self) -> usize {
        let cap = self.remaining.load(Ordering::Relaxed);
        usize::try_from(cap).map_or(SAMPLE_RESERVE, |cap| cap.min(SAMPLE_RESERVE))
    }
}

/// What client threads measured.
#[derive(Debug, Default)]
struct Tally {
    /// Latency of every successful operation, in nanoseconds.
    latencies_ns: Vec<u32>,
    errors: u64,
    failures: Failures,
    port_busy: u64,
}

impl Tally {
    fn new(budget: &Budget) -> Self {
        Self {
            latencies_ns: Vec::with_capacity(budget.sample_reserve()),
            ..Self::default()
        }
    }

    /// Records a successful operation that took `latency`.
    fn record(&mut self, latency: Duration) {
        // Saturates at u32::MAX ns (4.3 s): only a successful operation whose
        // steps each came close to their 2 s timeout gets there.
        self.latencies_ns
            .push(u32::try_from(latency.as_nanos()).unwrap_or(u32::MAX));
    }

    fn operations(&self) -> u64 {
        self.latencies_ns.len() as u64
    }

    fn merge(mut self, other: Self) -> Self {
        self.latencies_ns.extend(other.latencies_ns);
        self.errors += other.errors;
        self.failures = self.failures.merge(other.failures);
        self.port_busy += other.port_busy;
        self
    }
}

/// Runs `work(index)` on `threads` threads and merges what they measured.
fn run_threads(threads: usize, work: impl Fn(usize) -> Tally + Sync) -> Tally {
    let work = &work;
    thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|index| scope.spawn(move || work(index)))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("client threads do not panic"))
            .fold(Tally::default(), Tally::merge)
    })
}

/// Latency percentiles, in microseconds (0 without samples).
#[derive(Debug, Serialize)]
struct Latency {
    p50_us: f64,
    p99_us: f64,
}

impl Latency {
    fn of(mut samples_ns: Vec<u32>) -> Self {
        samples_ns.sort_unstable();
        Self {
            p50_us: percentile_us(&samples_ns, 50.0),
            p99_us: percentile_us(&samples_ns, 99.0),
        }
    }
}

/// The nearest-rank `percent` percentile of `sorted_ns`, converted to
/// microseconds; 0 if there are no samples.
fn percentile_us(sorted_ns: &[u32], percent: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let rank = (percent / 100.0 * sorted_ns.len() as f64).ceil() as usize;
    f64::from(sorted_ns[rank.clamp(1, sorted_ns.len()) - 1]) / 1e3
}

/// A blocking TCP socket with the client timeouts and TCP_NODELAY set.
fn tcp_client_socket(to: SocketAddr) -> io::Result<Socket> {
    tcp_client_socket_with(to, IO_TIMEOUT)
}

/// A blocking TCP socket with `timeout` on reads and writes and
/// TCP_NODELAY set.
fn tcp_client_socket_with(to: SocketAddr, timeout: Duration) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket)
}

fn connect(to: SocketAddr) -> io::Result<TcpStream> {
    let socket = tcp_client_socket(to)?;
    socket.connect_timeout(&to.into(), IO_TIMEOUT)?;
    Ok(socket.into())
}

// ---------------------------------------------------------------------------
// rr

fn rr(args: &RrArgs) -> RrReport {
    let budget = Budget::start(&args.limits);
    let tally = run_threads(args.flows.get(), |_| rr_flow(args, &budget));
    let seconds = budget.elapsed_secs();
    RrReport {
        flows: args.flows.get(),
        transactions: tally.operations(),
        seconds,
        rate: tally.operations() as f64 / seconds,
        latency: Latency::of(tally.latencies_ns),
        errors: tally.errors,
    }
}

/// One `rr` thread: transactions on one connection, reconnecting after a
/// failure.
fn rr_flow(args: &RrArgs, budget: &Budget) -> Tally {
    let mut tally = Tally::new(budget);
    let request = vec![0; args.size.get()];
    let mut response = vec![0; args.size.get()];
    let mut connection = None;
    while budget.next() {
        let stream = match connection {
            Some(ref mut stream) => stream,
            None => match echo_connection(args.limits.to) {
                Ok(stream) => connection.insert(stream),
                Err(_) => {
                    tally.errors += 1;
                    continue;
                }
            },
        };
        let started = Instant::now();
        match stream
            .write_all(&request)
            .and_then(|()| stream.read_exact(&mut response))
        {
            Ok(()) => tally.record(started.elapsed()),
            Err(_) => {
                tally.errors += 1;
                connection = None;
            }
        }
    }
    tally
}

/// Connects and switches the connection to echo: sends `E` and reads it back,
/// so the transactions that follow are answered byte for byte.
fn echo_connection(to: SocketAddr) -> io::Result<TcpStream> {
    let mut stream = connect(to)?;
    stream.write_all(b"E")?;
    let mut echoed = [0];
    stream.read_exact(&mut echoed)?;
    if echoed != *b"E" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the server did not echo",
        ));
    }
    Ok(stream)
}

// ---------------------------------------------------------------------------
// crr

fn crr(args: &CrrArgs) -> Result<CrrReport> {
    let threads = args.concurrency.get();
    ensure!(
        threads <= args.ports.len(),
        "{threads} threads need at least as many ports, {} has {}",
        args.ports,
        args.ports.len()
    );
    let ports = args.ports.split(threads);
    let source = args
        .source
        .unwrap_or_else(|| unspecified_like(args.limits.to));
    let budget = Budget::start(&args.limits);
    let tally = run_threads(threads, |index| {
        crr_thread(args, source, ports[index], &budget)
    });
    let seconds = budget.elapsed_secs();
    Ok(CrrReport {
        connections: tally.operations(),
        seconds,
        rate: tally.operations() as f64 / seconds,
        latency: Latency::of(tally.latencies_ns),
        errors: tally.errors,
        failures: tally.failures,
        port_busy: tally.port_busy,
    })
}

/// One `crr` thread: connections one after the other, each from the next port
/// of `ports`.
fn crr_thread(args: &CrrArgs, source: IpAddr, ports: PortRange, budget: &Budget) -> Tally {
    let mut tally = Tally::new(budget);
    let mut request = vec![0; args.size.get()];
    request[0] = b'E';
    let mut response = vec![0; args.size.get()];
    let mut next_ports = ports.ports().cycle();
    while budget.next() {
        let started = Instant::now();
        let to = args.limits.to;
        let result = crr_connect(
            to,
            source,
            &mut next_ports,
            ports.len(),
            &mut tally.port_busy,
            args.timeout,
        )
        .and_then(|mut stream| {
            stream.write_all(&request)?;
            stream.read_exact(&mut response)?;
            if response != request {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the echo differs from the request",
                ));
            }
            Ok(())
        });
        // The stream is closed by now, with an RST.
        match result {
            Ok(()) => tally.record(started.elapsed()),
            Err(error) => {
                tally.errors += 1;
                tally.failures.count(&error);
            }
        }
    }
    tally
}

/// Opens one `crr` connection from a fresh, explicit source port, the next
/// free one of `ports` (trying at most `tries`, counting those in use), set up
/// to close with an RST.
///
/// The kernel's own choice of ephemeral port would collide, through NAT, with
/// connections still in TIME_WAIT; the RST close leaves no TIME_WAIT on either
/// side, so the thread's ports can be cycled through again and again.
fn crr_connect(
    to: SocketAddr,
    source: IpAddr,
    ports: &mut impl Iterator<Item = u16>,
    tries: usize,
    port_busy: &mut u64,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let socket = tcp_client_socket_with(to, timeout)?;
    socket.set_reuse_address(true)?;
    // SO_LINGER {on, 0}: close() sends an RST instead of a FIN. Set now rather
    // than after the response, so that a connection failing halfway is closed
    // the same way.
    socket.set_linger(Some(Duration::ZERO))?;
    bind_next_free_port(&socket, source, ports, tries, port_busy)?;
    socket.connect_timeout(&to.into(), timeout)?;
    Ok(socket.into())
}

/// Binds `socket` to the first port of `ports` not in use, trying at most
/// `tries` and counting the busy ones.
fn bind_next_free_port(
    socket: &Socket,
    source: IpAddr,
    ports: &mut impl Iterator<Item = u16>,
    tries: usize,
    port_busy: &mut u64,
) -> io::Result<()> {
    for port in ports.take(tries) {
        match socket.bind(&SockAddr::from(SocketAddr::new(source, port))) {
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => *port_busy += 1,
            bound => return bound,
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "every source port is in use",
    ))
}

// ---------------------------------------------------------------------------
// bulk

fn bulk(args: &BulkArgs) -> BulkReport {
    let budget = Budget::start(&args.limits);
    let mut bytes = 0;
    let result = match args.direction {
        Direction::Send => bulk_send(args.limits.to, &budget, &mut bytes),
        Direction::Receive => bulk_receive(args.limits.to, &budget, &mut bytes),
    };
    let seconds = budget.elapsed_secs();
    BulkReport {
        direction: args.direction,
        bytes,
        seconds,
        gbit_per_s: bytes as f64 * 8.0 / seconds / 1e9,
        errors: u64::from(result.is_err()),
    }
}

/// Sends until the time is up, then waits for the sink's EOF, which it sends
/// only after reading everything.
fn bulk_send(to: SocketAddr, budget: &Budget, bytes: &mut u64) -> io::Result<()> {
    let mut stream = connect(to)?;
    stream.write_all(b"S")?;
    while budget.next() {
        stream.write_all(&ZEROS)?;
        *bytes += CHUNK as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    match stream.read(&mut [0])? {
        0 => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the sink sent data",
        )),
    }
}

/// Receives until the time is up, then closes.
fn bulk_receive(to: SocketAddr, budget: &Budget, bytes: &mut u64) -> io::Result<()> {
    let mut stream = connect(to)?;
    stream.write_all(b"G")?;
    let mut buf = vec![0; RECEIVE_BUFFER];
    while budget.next() {
        match stream.read(&mut buf)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            len => *bytes += len as u64,
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// udp

fn udp(args: &UdpArgs) -> Result<UdpReport> {
    let to = args.limits.to;
    let sockets = (0..args.flows.get())
        .map(|_| udp_flow(to))
        .collect::<io::Result<Vec<_>>>()
        .with_context(|| format!("opening UDP flows to {to}"))?;
    let control = &sockets[0];
    request(control, b"!reset", |answer| (answer == b"ok").then_some(()))?;

    let payload = vec![0; usize::from(args.size)];
    let budget = Budget::start(&args.limits);
    let (mut sent, mut send_errors) = (0, 0);
    for socket in sockets.iter().cycle().take_while(|_| budget.next()) {
        // ENOBUFS (a full queue) and ECONNREFUSED (an ICMP error from an
        // earlier datagram) are the usual errors; they do not stop the blast.
        match socket.send(&payload) {
            Ok(_) => sent += 1,
            Err(_) => send_errors += 1,
        }
    }
    let seconds = budget.elapsed_secs();

    thread::sleep(UDP_SETTLE);
    let counts: UdpCounts = request(control, b"?count", |answer| {
        serde_json::from_slice(answer).ok()
    })?;
    Ok(UdpReport {
        flows: args.flows.get(),
        sent,
        received: counts.datagrams,
        seconds,
        pps: counts.datagrams as f64 / seconds,
        send_errors,
    })
}

/// A UDP socket on its own ephemeral port, connected to `to`: one flow.
fn udp_flow(to: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(unspecified_like(to), 0))?;
    socket.connect(to)?;
    socket.set_read_timeout(Some(IO_TIMEOUT))?;
    socket.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(socket)
}

/// Sends the control request `what` and returns the first answer `parse`
/// accepts, trying [`CONTROL_ATTEMPTS`] times with [`IO_TIMEOUT`] each.
fn request<T>(socket: &UdpSocket, what: &[u8], parse: impl Fn(&[u8]) -> Option<T>) -> Result<T> {
    let mut buf = [0; 512];
    for _ in 0..CONTROL_ATTEMPTS {
        // A send error (an ICMP error pending on the socket) is one more
        // unanswered attempt.
        if socket.send(what).is_err() {
            continue;
        }
        let deadline = Instant::now() + IO_TIMEOUT;
        // Skips stale answers, such as the late `ok` of a retried `!reset`.
        while let Ok(len) = socket.recv(&mut buf) {
            if let Some(answer) = parse(&buf[..len]) {
                return Ok(answer);
            }
            if Instant::now() >= deadline {
                break;
            }
        }
    }
    bail!(
        "no answer to {} from {} after {CONTROL_ATTEMPTS} attempts",
        String::from_utf8_lossy(what),
        socket
            .peer_addr()
            .map_or_else(|error| error.to_string(), |peer| peer.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        // 1..=100 µs, in nanoseconds.
        let samples: Vec<u32> = (1..=100).map(|us| us * 1000).collect();
        assert_eq!(percentile_us(&samples, 50.0), 50.0);
        assert_eq!(percentile_us(&samples, 99.0), 99.0);
        assert_eq!(percentile_us(&samples, 100.0), 100.0);
        assert_eq!(percentile_us(&samples, 0.0), 1.0);
        assert_eq!(percentile_us(&[7000], 50.0), 7.0);
        assert_eq!(percentile_us(&[7000], 99.0), 7.0);
        // Nearest rank of 99 % of 3 samples is the 3rd (ceil 2.97).
        assert_eq!(percentile_us(&[1000, 2000, 3000], 99.0), 3.0);
        assert_eq!(percentile_us(&[1000, 2000, 3000], 50.0), 2.0);
        assert_eq!(percentile_us(&[], 50.0), 0.0);
    }

    #[test]
    fn port_range_parses() {
        assert_eq!("10-20".parse(), Ok(PortRange { lo: 10, hi: 20 }));
        assert_eq!("5-5".parse::<PortRange>().map(PortRange::len), Ok(1));
        assert!("20-10".parse::<PortRange>().is_err());
        assert!("10".parse::<PortRange>().is_err());
        assert!("0-65536".parse::<PortRange>().is_err());
    }

    #[test]
    fn port_range_splits_into_disjoint_covering_parts() {
        let whole = PortRange {
            lo: 20000,
            hi: 60999,
        };
        for parts in [1, 2, 3, 4, 7, 64, whole.len()] {
            let split = whole.split(parts);
            assert_eq!(split.len(), parts);
            assert_eq!(split[0].lo, whole.lo);
            assert_eq!(split[parts - 1].hi, whole.hi);
            for pair in split.windows(2) {
                assert_eq!(pair[1].lo, pair[0].hi + 1, "{pair:?} must be adjacent");
            }
            let lens = split.iter().map(|range| range.len());
            let (min, max) = (lens.clone().min(), lens.max());
            assert!(
                max.zip(min).is_some_and(|(max, min)| max - min <= 1),
                "{split:?}"
            );
        }
        assert_eq!(
            PortRange { lo: 1, hi: 10 }.split(3),
            [
                PortRange { lo: 1, hi: 4 },
                PortRange { lo: 5, hi: 7 },
                PortRange { lo: 8, hi: 10 }
            ]
        );
        assert_eq!(
            PortRange {
                lo: 65535,
                hi: 65535
            }
            .split(1),
            [PortRange {
                lo: 65535,
                hi: 65535
            }]
        );
    }

    fn limits(to: SocketAddr) -> Limits {
        Limits {
            to,
            duration: Duration::from_millis(300),
            max: u64::MAX,
        }
    }

    #[test]
    fn every_client_runs_against_the_server_on_loopback() {
        let localhost = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let server = Server::bind(&[localhost], &[localhost]).expect("binding on loopback");
        let tcp_addr = server.tcp[0].local_addr().expect("TCP listener address");
        let udp_addr = server.udp[0].local_addr().expect("UDP socket address");
        // The server runs until the test process exits.
        thread::spawn(move || server.run());

        let report = rr(&RrArgs {
            limits: limits(tcp_addr),
            flows: NonZeroUsize::new(2).expect("non-zero"),
            size: NonZeroUsize::new(64).expect("non-zero"),
        });
        assert!(report.transactions > 0 && report.errors == 0, "{report:?}");
        assert!(
            report.latency.p50_us > 0.0 && report.latency.p50_us <= report.latency.p99_us,
            "{report:?}"
        );

        let report = crr(&CrrArgs {
            limits: limits(tcp_addr),
            concurrency: NonZeroUsize::new(2).expect("non-zero"),
            source: None,
            ports: "20000-60999".parse().expect("a valid range"),
            size: NonZeroUsize::new(64).expect("non-zero"),
            timeout: IO_TIMEOUT,
        })
        .expect("crr runs");
        assert!(report.connections > 0 && report.errors == 0, "{report:?}");

        for direction in [Direction::Send, Direction::Receive] {
            let report = bulk(&BulkArgs {
                limits: limits(tcp_addr),
                direction,
            });
            assert!(report.bytes > 0 && report.errors == 0, "{report:?}");
        }

        let report = udp(&UdpArgs {
            limits: limits(udp_addr),
            flows: NonZeroUsize::new(4).expect("non-zero"),
            size: 18,
        })
        .expect("udp runs");
        assert!(
            report.sent > 0 && report.received > 0 && report.send_errors == 0,
            "{report:?}"
        );
        assert!(report.received <= report.sent, "{report:?}");
    }

    #[test]
    fn reports_name_their_mode() {
        let report = Report::Bulk(BulkReport {
            direction: Direction::Send,
            bytes: 1,
            seconds: 1.0,
            gbit_per_s: 8e-9,
            errors: 0,
        });
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["mode"], "bulk");
        assert_eq!(json["direction"], "send");
    }

    #[test]
    fn the_command_line_parses() {
        let cli = Cli::try_parse_from([
            "netd-loadgen",
            "crr",
            "--to",
            "10.0.0.1:80",
            "--duration",
            "1.5",
            "--cpu",
            "1",
        ])
        .expect("parses");
        assert_eq!(cli.cpu, Some(1));
        let Command::Client(Client::Crr(args)) = cli.command else {
            panic!("not crr")
        };
        assert_eq!(args.limits.duration, Duration::from_millis(1500));
        assert_eq!(args.limits.max, u64::MAX);
        assert_eq!(args.concurrency.get(), 4);
        assert_eq!(
            args.ports,
            PortRange {
                lo: 20000,
                hi: 60999
            }
        );
        assert!(
            Cli::try_parse_from([
                "netd-loadgen",
                "udp",
                "--to",
                "1.2.3.4:5",
                "--duration",
                "-1",
                "--flows",
                "1"
            ])
            .is_err()
        );
    }

    /// What the soak's verdict rests on: a refused connection counts as a
    /// reset, not as a timeout.
    #[test]
    fn crr_tells_resets_from_timeouts() {
        // A port nobody listens on: the kernel answers every SYN with RST.
        let closed = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let report = crr(&CrrArgs {
            limits: Limits {
                max: 20,
                ..limits(closed)
            },
            concurrency: NonZeroUsize::new(1).expect("non-zero"),
            source: None,
            ports: "20000-60999".parse().expect("a valid range"),
            size: NonZeroUsize::new(64).expect("non-zero"),
            timeout: IO_TIMEOUT,
        })
        .expect("crr runs");
        assert_eq!(report.connections, 0, "{report:?}");
        assert!(report.errors > 0, "{report:?}");
        assert_eq!(report.failures.resets, report.errors, "{report:?}");
        assert_eq!(report.failures.timeouts, 0, "{report:?}");
    }
}
