// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `hold`: long-lived flows that echo all the time and check every byte, while
//! something is done to the datapath (the agent killed and restarted, a SYN
//! flood). Each flow sends a numbered message, waits for its echo, compares
//! it, pauses, and again, until the stop file appears; new connections are
//! attempted at a steady rate alongside.
//!
//! What it counts, per kind of flow: round trips; resets (the connection
//! ended: RST, EOF or a write error); mismatches (an echo that differs from
//! what was sent); stalls (a gap longer than `--stall-secs` between two
//! successful round trips of a flow, or from the last one to the end); lost
//! datagrams (UDP: never echoed) and late ones (echoed after the flow had
//! waited a second and moved on). New connections attempted while
//! the mark file exists (the agent is down) are counted apart.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
    task::JoinSet,
    time::timeout,
};

use crate::unspecified_like;

/// Longest wait for a TCP connection to be established: a SYN lost once is
/// retransmitted after 1 s and still makes it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a UDP flow waits for an echo before counting the datagram lost.
const UDP_ECHO_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a waiting flow looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Error messages kept in the report, per kind of flow.
const KEPT_ERRORS: usize = 10;
/// Bytes of a message: flow number, sequence number, and a pattern made of
/// both, so a byte from another flow or message shows up as a mismatch.
const MESSAGE: usize = 24;

#[derive(Debug, Args)]
pub struct HoldArgs {
    /// The server's address: its TCP and UDP echo share the port.
    #[arg(long, value_name = "IP:PORT")]
    to: SocketAddr,
    /// Long-lived TCP connections.
    #[arg(long, value_name = "N", default_value_t = 0)]
    tcp: u32,
    /// Long-lived UDP flows, each its own source port.
    #[arg(long, value_name = "N", default_value_t = 0)]
    udp: u32,
    /// New TCP connections attempted per second (each one: connect, one
    /// echo, close).
    #[arg(long, value_name = "N", default_value_t = 0)]
    new_per_sec: u32,
    /// Pause between two round trips of a flow, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    interval_ms: u64,
    /// A longer gap between two successful round trips of a flow is a stall.
    #[arg(long, value_name = "SECS", value_parser = crate::parse_seconds, default_value = "5")]
    stall_secs: Duration,
    /// Created once every long-lived flow is open (or failed to open).
    #[arg(long, value_name = "FILE")]
    ready_file: PathBuf,
    /// Run until this file exists.
    #[arg(long, value_name = "FILE")]
    stop_file: PathBuf,
    /// New connections attempted while this file exists are also counted
    /// apart, as `new_marked`.
    #[arg(long, value_name = "FILE")]
    mark_file: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize)]
pub struct HoldReport {
    tcp: FlowStats,
    udp: FlowStats,
    new: NewStats,
    seconds: f64,
}

impl HoldReport {
    pub fn succeeded(&self) -> bool {
        self.tcp.round_trips + self.udp.round_trips + self.new.succeeded > 0
    }
}

/// What the long-lived flows of one kind saw.
#[derive(Debug, Default, Serialize)]
struct FlowStats {
    flows: u32,
    /// Flows that could not be opened at the start.
    open_failures: u64,
    round_trips: u64,
    resets: u64,
    mismatches: u64,
    stalls: u64,
    /// UDP: datagrams never echoed.
    lost: u64,
    /// UDP: echoes that came after their flow had given up on them.
    late: u64,
    max_gap_ms: u64,
    errors: Vec<String>,
}

impl FlowStats {
    fn absorb(&mut self, flow: Flow) {
        self.round_trips += flow.round_trips;
        self.resets += u64::from(flow.reset);
        self.mismatches += flow.mismatches;
        self.stalls += flow.stalls;
        self.lost += flow.lost;
        self.late += flow.late;
        self.max_gap_ms = self.max_gap_ms.max(flow.max_gap.as_millis() as u64);
        if let Some(error) = flow.error {
            self.keep(error);
        }
    }

    fn keep(&mut self, error: String) {
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(error);
        }
    }
}

/// New connections: all of them, and those attempted while marked.
#[derive(Debug, Default, Serialize)]
struct NewStats {
    attempted: u64,
    succeeded: u64,
    attempted_marked: u64,
    succeeded_marked: u64,
    errors: Vec<String>,
}

/// One long-lived flow's life.
struct Flow {
    round_trips: u64,
    reset: bool,
    mismatches: u64,
    stalls: u64,
    lost: u64,
    late: u64,
    max_gap: Duration,
    last_ok: Instant,
    stall_after: Duration,
    error: Option<String>,
}

impl Flow {
    fn new(stall_after: Duration) -> Self {
        Self {
            round_trips: 0,
            reset: false,
            mismatches: 0,
            stalls: 0,
            lost: 0,
            late: 0,
            max_gap: Duration::ZERO,
            last_ok: Instant::now(),
            stall_after,
            error: None,
        }
    }

    /// Closes the gap since the last success: a stall if it was too long.
    fn gap_ends(&mut self) {
        let gap = self.last_ok.elapsed();
        self.max_gap = self.max_gap.max(gap);
        if gap > self.stall_after {
            self.stalls += 1;
        }
        self.last_ok = Instant::now();
    }

    fn round_trip(&mut self) {
        self.round_trips += 1;
        self.gap_ends();
    }

    /// The flow ended: the time since its last success counts too.
    fn finish(mut self) -> Self {
        self.gap_ends();
        self
    }
}

/// Message `seq` of flow `id`.
fn message(id: u32, seq: u64) -> [u8; MESSAGE] {
    let mut msg = [0; MESSAGE];
    msg[..4].copy_from_slice(&id.to_be_bytes());
    msg[4..12].copy_from_slice(&seq.to_be_bytes());
    let mix = (u64::from(id) << 32 ^ seq).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    msg[12..20].copy_from_slice(&mix.to_be_bytes());
    msg[20..].copy_from_slice(&(!mix as u32).to_be_bytes());
    msg
}

pub fn hold(args: &HoldArgs) -> Result<HoldReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: &HoldArgs) -> Result<HoldReport> {
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let interval = Duration::from_millis(args.interval_ms);
    let mut report = HoldReport::default();

    // Open every long-lived flow before saying ready, so the test disturbs
    // established flows only.
    let mut tcp = Vec::new();
    for id in 0..args.tcp {
        match open_tcp(args.to, id).await {
            Ok(stream) => tcp.push((id, stream)),
            Err(error) => {
                report.tcp.open_failures += 1;
                report.tcp.keep(format!("open {id}: {error}"));
            }
        }
    }
    let mut udp = Vec::new();
    for id in 0..args.udp {
        match open_udp(args.to).await {
            Ok(socket) => udp.push((id, socket)),
            Err(error) => {
                report.udp.open_failures += 1;
                report.udp.keep(format!("open {id}: {error}"));
            }
        }
    }
    report.tcp.flows = args.tcp;
    report.udp.flows = args.udp;
    std::fs::write(&args.ready_file, b"ready\n").context("writing the ready file")?;

    let mut tcp_tasks = JoinSet::new();
    for (id, stream) in tcp {
        let stop = stop.clone();
        tcp_tasks.spawn(hold_tcp(id, stream, interval, args.stall_secs, stop));
    }
    let mut udp_tasks = JoinSet::new();
    for (id, socket) in udp {
        let stop = stop.clone();
        udp_tasks.spawn(hold_udp(id, socket, interval, args.stall_secs, stop));
    }
    let new = Arc::new(Mutex::new(NewStats::default()));
    let attempts = (args.new_per_sec > 0).then(|| {
        tokio::spawn(attempt_new(
            args.to,
            args.new_per_sec,
            args.mark_file.clone(),
            stop.clone(),
            new.clone(),
        ))
    });

    while !args.stop_file.exists() {
        tokio::time::sleep(STOP_POLL).await;
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(flow) = tcp_tasks.join_next().await {
        report.tcp.absorb(flow.context("a TCP flow panicked")?);
    }
    while let Some(flow) = udp_tasks.join_next().await {
        report.udp.absorb(flow.context("a UDP flow panicked")?);
    }
    if let Some(attempts) = attempts {
        attempts.await.context("the new-connection task panicked")?;
    }
    report.new = std::mem::take(&mut *new.lock().expect("not poisoned"));
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

async fn open_tcp(to: SocketAddr, id: u32) -> std::io::Result<TcpStream> {
    let mut stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(to))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
    stream.set_nodelay(true)?;
    // The mode byte, echoed back with the first message.
    let mut first = vec![b'E'];
    first.extend_from_slice(&message(id, 0));
    stream.write_all(&first).await?;
    let mut echo = vec![0; first.len()];
    timeout(CONNECT_TIMEOUT, stream.read_exact(&mut echo))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
    if echo != first {
        return Err(std::io::Error::other("the first echo differs"));
    }
    Ok(stream)
}

async fn open_udp(to: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(unspecified_like(to), 0)).await?;
    // Connected: an echo from any other address (a missed reverse
    // translation) is not delivered, and shows up as lost.
    socket.connect(to).await?;
    Ok(socket)
}

async fn hold_tcp(
    id: u32,
    mut stream: TcpStream,
    interval: Duration,
    stall_after: Duration,
    stop: Arc<AtomicBool>,
) -> Flow {
    let mut flow = Flow::new(stall_after);
    let mut echo = [0; MESSAGE];
    let mut seq = 1;
    'flow: while !stop.load(Ordering::Relaxed) {
        let sent = message(id, seq);
        if let Err(error) = stream.write_all(&sent).await {
            flow.reset = true;
            flow.error = Some(format!("tcp {id} write: {error}"));
            break;
        }
        // Reads in slices, so a flow stuck waiting still sees the stop.
        let mut read = 0;
        while read < MESSAGE {
            match timeout(STOP_POLL, stream.read(&mut echo[read..])).await {
                Err(_) if stop.load(Ordering::Relaxed) => break 'flow,
                Err(_) => {}
                Ok(Ok(0)) => {
                    flow.reset = true;
                    flow.error = Some(format!("tcp {id}: closed by the peer"));
                    break 'flow;
                }
                Ok(Ok(n)) => read += n,
                Ok(Err(error)) => {
                    flow.reset = true;
                    flow.error = Some(format!("tcp {id} read: {error}"));
                    break 'flow;
                }
            }
        }
        if echo == sent {
            flow.round_trip();
        } else {
            flow.mismatches += 1;
            flow.error = Some(format!("tcp {id}: echo of message {seq} differs"));
        }
        seq += 1;
        tokio::time::sleep(interval).await;
    }
    flow.finish()
}

async fn hold_udp(
    id: u32,
    socket: UdpSocket,
    interval: Duration,
    stall_after: Duration,
    stop: Arc<AtomicBool>,
) -> Flow {
    let mut flow = Flow::new(stall_after);
    let mut buf = [0; 2 * MESSAGE];
    // Messages not echoed within UDP_ECHO_TIMEOUT: a late echo takes its
    // message off (it was slow, not lost); what is left at the end is lost.
    let mut unanswered = BTreeSet::new();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut sent = vec![b'E'];
        sent.extend_from_slice(&message(id, seq));
        // A send error is an ICMP error reported on the socket (the path
        // was broken): the datagram is lost, the flow goes on.
        if let Err(error) = socket.send(&sent).await {
            unanswered.insert(seq);
            flow.error = Some(format!("udp {id} send: {error}"));
        } else {
            let deadline = Instant::now() + UDP_ECHO_TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match timeout(left, socket.recv(&mut buf)).await {
                    Err(_) => {
                        unanswered.insert(seq);
                        break;
                    }
                    Ok(Err(error)) => {
                        unanswered.insert(seq);
                        flow.error = Some(format!("udp {id} receive: {error}"));
                        break;
                    }
                    Ok(Ok(len)) => {
                        let echo = &buf[..len];
                        if echo == sent.as_slice() {
                            flow.round_trip();
                            break;
                        }
                        match late_echo(id, echo) {
                            Some(old) if unanswered.remove(&old) => flow.late += 1,
                            _ => {
                                flow.mismatches += 1;
                                flow.error =
                                    Some(format!("udp {id}: echo of message {seq} differs"));
                            }
                        }
                    }
                }
            }
        }
        seq += 1;
        tokio::time::sleep(interval).await;
    }
    flow.lost = unanswered.len() as u64;
    flow.finish()
}

/// The sequence number of `echo` if it is exactly an earlier message of
/// flow `id` (a late echo), not a corrupted one.
fn late_echo(id: u32, echo: &[u8]) -> Option<u64> {
    let [b'E', rest @ ..] = echo else {
        return None;
    };
    let seq = u64::from_be_bytes(rest.get(4..12)?.try_into().ok()?);
    (rest == message(id, seq)).then_some(seq)
}

/// Starts `per_sec` new connections a second until stopped, each in its own
/// task so a slow one does not slow the rate.
async fn attempt_new(
    to: SocketAddr,
    per_sec: u32,
    mark_file: Option<PathBuf>,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<NewStats>>,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_sec);
    let next_id = AtomicU64::new(0);
    let mut attempts = JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let marked = mark_file.as_deref().is_some_and(Path::exists);
        // Ids above the long-lived flows' range, for distinct messages.
        let id = u32::MAX - (next_id.fetch_add(1, Ordering::Relaxed) as u32);
        let stats = stats.clone();
        attempts.spawn(async move {
            let outcome = open_tcp(to, id).await;
            let mut stats = stats.lock().expect("not poisoned");
            stats.attempted += 1;
            stats.attempted_marked += u64::from(marked);
            match outcome {
                Ok(_) => {
                    stats.succeeded += 1;
                    stats.succeeded_marked += u64::from(marked);
                }
                Err(error) => {
                    if stats.errors.len() < KEPT_ERRORS {
                        let when = if marked { " (marked)" } else { "" };
                        stats.errors.push(format!("new connection{when}: {error}"));
                    }
                }
            }
        });
    }
    while attempts.join_next().await.is_some() {}
}
