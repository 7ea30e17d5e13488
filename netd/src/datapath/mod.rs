// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Loading netd's eBPF programs, attaching them, and keeping them attached
//! while the agent is down.
//!
//! Everything the kernel keeps for netd lives under the bpffs directory
//! (`--bpffs`, default /sys/fs/bpf/netd): every map pinned by name
//! (`<bpffs>/NETD_CT`, ...) and every attachment as a pinned BPF link
//! (`<bpffs>/links/<name>`). A restarted agent reuses the pinned maps (no
//! entry lost) and swaps its freshly loaded programs into the pinned links
//! atomically (BPF_LINK_UPDATE), so packets never stop being translated.
//!
//! Kernels before 6.6 have no TCX: there the TC programs are cls_bpf
//! filters on a clsact qdisc, attached through netlink with a fixed
//! priority and handle, which a restarted agent replaces in place (the
//! kernel swaps the program atomically). See [`features`].

mod batch;
pub mod conntrack;
mod error;
pub mod features;
mod logs;
pub mod maps;
pub mod monitor;
pub mod observe;

use std::{
    fs, io,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, MapInfo, PerCpuArray, PerCpuValues},
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
        xdp::XdpLink,
    },
    sys::SyscallError,
};
use netd_common::{
    ct::{CtEntry, CtKey},
    drop,
    endpoint::{DatapathConfig, EndpointInfo},
    map_names as names,
    ports::{Mapping, MappingStats, PortKey, PortValue},
    stats::ProtoStats,
};
use tracing::{info, warn};

pub use self::{
    error::DatapathError,
    features::TcMode,
    maps::{Maps, PortRule},
};

/// Program names in the object.
pub const UPLINK_TC: &str = "netd_uplink_tc";
pub const UPLINK_XDP: &str = "netd_uplink_xdp";
pub const ENDPOINT_TC: &str = "netd_endpoint_tc";
pub const LAN_TC: &str = "netd_lan_tc";
/// The cgroup socket-address programs of host-local access.
pub const SOCKET_PROGRAMS: [&str; 10] = [
    "netd_connect4",
    "netd_sendmsg4",
    "netd_recvmsg4",
    "netd_getpeername4",
    "netd_connect6",
    "netd_sendmsg6",
    "netd_recvmsg6",
    "netd_getpeername6",
    "netd_bind4",
    "netd_bind6",
];

/// The priority and handle of netd's cls_bpf filters (netlink mode):
/// fixed, so that a restarted agent finds its own filter and replaces the
/// program in it, and never disturbs another tool's filters.
pub const TC_FILTER_PRIORITY: u16 = 0x4e44; // "ND"
pub const TC_FILTER_HANDLE: u32 = 1;

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// What to load.
#[derive(Clone, Debug)]
pub struct Options {
    /// netd's bpffs directory.
    pub bpffs: PathBuf,
    /// Also load the XDP program for the uplinks.
    pub xdp: bool,
    /// Conntrack entries (both directions of a flow count).
    pub ct_max: u32,
    /// Also load the cgroup socket programs (host-local access).
    pub sockets: bool,
    /// How TC programs are attached.
    pub tc_mode: TcMode,
}

/// One pinned map's capacity and memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapUsage {
    pub name: &'static str,
    pub max_entries: u32,
    pub memory_bytes: u64,
}

/// The expected key and value sizes of each pinned map, to detect pins
/// left by a netd whose layout differs.
fn expected_layout(name: &str) -> Option<(u32, u32)> {
    let sizes = |k: usize, v: usize| Some((k as u32, v as u32));
    match name {
        names::PROTO_STATS => sizes(4, size_of::<ProtoStats>()),
        names::DROPS => sizes(4, 8),
        // LPM keys are the 4-byte prefix length and the data.
        names::PORTS => sizes(4 + size_of::<PortKey>(), size_of::<PortValue>()),
        names::MAPPINGS => sizes(4, size_of::<Mapping>()),
        names::MAPPING_STATS => sizes(4, size_of::<MappingStats>()),
        names::CT => sizes(size_of::<CtKey>(), size_of::<CtEntry>()),
        names::ENDPOINTS => sizes(4, size_of::<EndpointInfo>()),
        names::LOCAL_ADDRS => sizes(4, 4),
        names::CONFIG => sizes(4, size_of::<DatapathConfig>()),
        names::VETHS => sizes(4, size_of::<netd_common::endpoint::VethInfo>()),
        names::ENDPOINT_STATS => sizes(4, size_of::<netd_common::endpoint::EndpointStats>()),
        names::FLOWS_CREATED => sizes(4, 8),
        names::MONITOR => sizes(4, size_of::<netd_common::monitor::MonitorConfig>()),
        names::MONITOR_BUCKETS => sizes(4, size_of::<netd_common::monitor::MonitorBucket>()),
        names::UPLINKS => sizes(4, size_of::<netd_common::endpoint::UplinkInfo>()),
        names::SOCK_REVNAT => sizes(
            size_of::<netd_common::ports::SockRevKey>(),
            size_of::<netd_common::ports::SockRevValue>(),
        ),
        names::FRAGS => sizes(
            size_of::<netd_common::ct::FragKey>(),
            size_of::<netd_common::ct::FragPorts>(),
        ),
        names::NETWORKS => sizes(4, size_of::<netd_common::endpoint::NetworkInfo>()),
        names::SUBNETS => sizes(4 + 4, 4),
        // A ring buffer has neither keys nor values, only its size.
        names::MONITOR_EVENTS => None,
        _ => None,
    }
}

/// Makes sure `dir` exists on a bpffs. If its parent is not a bpffs, mounts
/// one there (as systemd does at /sys/fs/bpf on most distributions).
fn ensure_bpffs(dir: &Path) -> Result<(), DatapathError> {
    let io = |what: String| move |source| DatapathError::Io { what, source };
    let parent = dir.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    let on_bpffs = |path: &Path| {
        nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type().0 == BPF_FS_MAGIC)
    };
    if !on_bpffs(parent) {
        nix::mount::mount(
            Some("bpf"),
            parent,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|source| DatapathError::NoBpffs {
            path: parent.to_owned(),
            source,
        })?;
        info!(path = %parent.display(), "mounted a bpffs");
    }
    fs::create_dir_all(crate::paths::links_dir(dir))
        .map_err(io(format!("creating {}", dir.display())))
}

/// Refuses pinned maps whose layout is not this netd's.
fn check_pinned_layouts(dir: &Path) -> Result<(), DatapathError> {
    for name in names::PINNED {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let Some((key, value)) = expected_layout(name) else {
            continue;
        };
        let info = MapInfo::from_pin(&path)
            .map_err(|source| DatapathError::MapOp { map: name, source })?;
        for (what, found, expected) in [
            ("key size", info.key_size(), key),
            ("value size", info.value_size(), value),
        ] {
            if found != expected {
                return Err(DatapathError::PinnedLayout {
                    path,
                    what,
                    found,
                    expected,
                });
            }
        }
    }
    Ok(())
}

fn is_not_found(err: &LinkError) -> bool {
    matches!(err, LinkError::SyscallError(SyscallError { io_error, .. }) if io_error.kind() == io::ErrorKind::NotFound)
}

/// A program whose attachments are BPF links netd pins.
trait LinkedProgram {
    /// Swaps this program into an existing link.
    fn adopt(&mut self, link: FdLink) -> Result<(), DatapathError>;
    /// Makes a new link to `interface`; `None` if the kernel attached the
    /// program without a BPF link (netlink, on kernels without TCX), which
    /// cannot be pinned.
    fn link_to(&mut self, interface: &str) -> Result<Option<FdLink>, aya::programs::ProgramError>;
}

/// A TC program and the side of the interface it goes on.
struct Tc<'a> {
    prog: &'a mut SchedClassifier,
    at: TcAttachType,
}

impl LinkedProgram for Tc<'_> {
    fn adopt(&mut self, link: FdLink) -> Result<(), DatapathError> {
        let link = SchedClassifierLink::try_from(link).map_err(DatapathError::Adopt)?;
        let id = self.prog.attach_to_link(link)?;
        // Drop our handle: the pin holds the link.
        drop(self.prog.take_link(id)?);
        Ok(())
    }

    fn link_to(&mut self, interface: &str) -> Result<Option<FdLink>, aya::programs::ProgramError> {
        let id = self.prog.attach(interface, self.at)?;
        Ok(FdLink::try_from(self.prog.take_link(id)?).ok())
    }
}

impl LinkedProgram for Xdp {
    fn adopt(&mut self, link: FdLink) -> Result<(), DatapathError> {
        let link = XdpLink::try_from(link).map_err(DatapathError::Adopt)?;
        let id = self.attach_to_link(link)?;
        drop(self.take_link(id)?);
        Ok(())
    }

    fn link_to(&mut self, interface: &str) -> Result<Option<FdLink>, aya::programs::ProgramError> {
        let id = self.attach(interface, XdpMode::default())?;
        Ok(FdLink::try_from(self.take_link(id)?).ok())
    }
}

/// Attaches `prog` to `interface` through the link pinned at `path`: a
/// pinned link is updated to run `prog` (BPF_LINK_UPDATE: atomic, no packet
/// sees no program) and adopted; if there is none, or the pinned one is
/// defunct (its interface was recreated), a new link is made and pinned.
fn attach_pinned(
    prog: &mut impl LinkedProgram,
    program: &'static str,
    interface: &str,
    path: &Path,
) -> Result<(), DatapathError> {
    match PinnedLink::from_pin(path) {
        Ok(pinned) => match prog.adopt(FdLink::from(pinned)) {
            Ok(()) => {
                info!(program, interface, "adopted pinned link");
                return Ok(());
            }
            Err(err) => {
                warn!(program, interface, error = %err, "pinned link unusable; attaching anew");
                let _ = fs::remove_file(path);
            }
        },
        Err(err) if is_not_found(&err) => {}
        Err(source) => {
            return Err(DatapathError::Link {
                path: path.to_owned(),
                source,
            });
        }
    }
    let link = prog
        .link_to(interface)
        .map_err(|source| DatapathError::Attach {
            program,
            interface: interface.to_owned(),
            source,
        })?
        .ok_or_else(|| DatapathError::NotPinnable {
            program,
            interface: interface.to_owned(),
        })?;
    link.pin(path).map_err(|source| DatapathError::Pin {
        path: path.to_owned(),
        source,
    })?;
    info!(program, interface, "attached");
    Ok(())
}

/// Adds a clsact qdisc to `interface` unless it has one; whether it added
/// it.
pub(crate) fn add_clsact(interface: &str) -> Result<bool, DatapathError> {
    match aya::programs::tc::qdisc_add_clsact(interface) {
        Ok(()) => {
            info!(interface, "added a clsact qdisc");
            Ok(true)
        }
        Err(err) if is_eexist(&err) => Ok(false),
        Err(err) => Err(DatapathError::Qdisc {
            interface: interface.to_owned(),
            source: err,
        }),
    }
}

/// Removes the clsact qdisc of `interface`, and with it every filter on
/// it; an interface without one (or gone) is fine. Synchronous, like aya's
/// `qdisc_add_clsact`: one request and its acknowledgment.
pub fn del_clsact(interface: &str) -> Result<(), DatapathError> {
    use netlink_packet_core::{
        NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    };
    use netlink_packet_route::{RouteNetlinkMessage, tc::TcMessage};
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

    /// TC_H_CLSACT and its handle, from linux/pkt_sched.h.
    const TC_H_CLSACT: u32 = 0xffff_fff1;
    const CLSACT_HANDLE: u32 = 0xffff_0000;
    let io = |source: io::Error| DatapathError::Io {
        what: format!("deleting the clsact qdisc of {interface}"),
        source,
    };
    let Ok(name) = std::ffi::CString::new(interface) else {
        return Ok(());
    };
    // SAFETY: `name` is a valid C string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Ok(());
    }
    let mut qdisc = TcMessage::with_index(index as i32);
    qdisc.header.parent = TC_H_CLSACT.into();
    qdisc.header.handle = CLSACT_HANDLE.into();
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut request = NetlinkMessage::new(
        header,
        RouteNetlinkMessage::DelQueueDiscipline(qdisc).into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);

    let mut socket = Socket::new(NETLINK_ROUTE).map_err(io)?;
    socket.bind_auto().map_err(io)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(io)?;
    socket.send(&buf, 0).map_err(io)?;
    let mut answer = vec![0; 8192];
    let size = socket.recv(&mut &mut answer[..], 0).map_err(io)?;
    let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&answer[..size])
        .map_err(|e| io(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
    match message.payload {
        NetlinkPayload::Error(err) if err.code.is_some() => match err.to_io() {
            // No clsact qdisc there (any more), or no interface.
            e if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::EINVAL | libc::ENODEV)
            ) =>
            {
                Ok(())
            }
            e => Err(io(e)),
        },
        _ => {
            info!(interface, "removed the clsact qdisc");
            Ok(())
        }
    }
}

/// netd's cls_bpf filter on ingress of `interface` (netlink mode), as a
/// link aya can replace the program of or detach.
fn netd_filter(interface: &str, at: TcAttachType) -> Result<SchedClassifierLink, DatapathError> {
    SchedClassifierLink::attached(
        interface,
        at,
        TC_FILTER_PRIORITY,
        TcHandle::from(TC_FILTER_HANDLE),
        None,
    )
    .map_err(|source| DatapathError::Io {
        what: format!("finding interface {interface}"),
        source,
    })
}

/// Removes netd's cls_bpf filter from ingress of `interface` (netlink
/// mode); absent is fine.
pub fn remove_filter(interface: &str) -> Result<(), DatapathError> {
    use aya::programs::links::Link as _;
    match netd_filter(interface, TcAttachType::Ingress)?.detach() {
        Ok(()) => Ok(()),
        Err(aya::programs::ProgramError::NetlinkError(err))
            if err.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(source) => Err(DatapathError::Attach {
            program: UPLINK_TC,
            interface: interface.to_owned(),
            source,
        }),
    }
}

/// Adds netd's cls_bpf filter running `prog` on ingress of `interface`,
/// whose clsact qdisc exists; false if netd's filter is there already (the
/// kernel refuses a second one with the same priority and handle).
fn attach_filter(
    prog: &mut SchedClassifier,
    program: &'static str,
    interface: &str,
    at: TcAttachType,
) -> Result<bool, DatapathError> {
    let attach = |source| DatapathError::Attach {
        program,
        interface: interface.to_owned(),
        source,
    };
    let options = TcAttachOptions::Netlink(NlOptions {
        priority: TC_FILTER_PRIORITY,
        handle: TcHandle::from(TC_FILTER_HANDLE),
        classid: None,
    });
    match prog.attach_with_options(interface, at, options) {
        Ok(id) => {
            keep_filter(prog, id)?;
            info!(program, interface, "attached (clsact via netlink)");
            Ok(true)
        }
        Err(aya::programs::ProgramError::TcError(err)) if is_eexist(&err) => Ok(false),
        Err(err) => Err(attach(err)),
    }
}

/// Takes the filter out of aya's hands, which would remove it when the
/// program is dropped: the filter must outlive the agent, as pinned links
/// do.
fn keep_filter(
    prog: &mut SchedClassifier,
    id: aya::programs::tc::SchedClassifierLinkId,
) -> Result<(), DatapathError> {
    std::mem::forget(prog.take_link(id)?);
    Ok(())
}

fn is_eexist(err: &TcError) -> bool {
    match err {
        TcError::NetlinkError(err) => err.raw_os_error() == Some(libc::EEXIST),
        TcError::IoError(err) => err.raw_os_error() == Some(libc::EEXIST),
        _ => false,
    }
}

/// netd's programs, loaded, with their maps pinned.
pub struct Datapath {
    ebpf: Ebpf,
    bpffs: PathBuf,
    xdp: bool,
    tc_mode: TcMode,
    /// Interfaces whose clsact qdisc this agent added (netlink mode).
    qdiscs_added: std::collections::BTreeSet<String>,
}

/// The drop counters of a `NETD_DROPS` pinned by an earlier netd, which
/// counted by reason alone (one row of at most [`drop::SLOTS`]): read, and
/// the pin removed, so that the load creates the map at its new size;
/// [`restore_drops`] writes them back into the `unattributed` row. Programs
/// already attached keep counting into the old map until the agent swaps
/// its own in: those few counts are lost, no packet is.
fn take_short_drops(dir: &Path) -> Result<Option<Vec<PerCpuValues<u64>>>, DatapathError> {
    let path = dir.join(names::DROPS);
    if !path.exists() {
        return Ok(None);
    }
    let map = |source| DatapathError::MapOp {
        map: names::DROPS,
        source,
    };
    let info = MapInfo::from_pin(&path).map_err(map)?;
    if info.max_entries() >= drop::ENTRIES {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).map_err(map)?;
    let old: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(data)).map_err(map)?;
    let reasons = info.max_entries().min(drop::SLOTS);
    let values = (0..reasons)
        .map(|i| old.get(&i, 0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(map)?;
    fs::remove_file(&path).map_err(|source| DatapathError::Io {
        what: format!("removing {} to resize it", path.display()),
        source,
    })?;
    info!(
        from = info.max_entries(),
        to = drop::ENTRIES,
        "resizing the pinned drop counters (by hook and reason)"
    );
    Ok(Some(values))
}

/// Writes counters [`take_short_drops`] saved into the new `NETD_DROPS`.
fn restore_drops(ebpf: &mut Ebpf, values: Vec<PerCpuValues<u64>>) -> Result<(), DatapathError> {
    let map = |source| DatapathError::MapOp {
        map: names::DROPS,
        source,
    };
    let mut drops: PerCpuArray<&mut MapData, u64> = PerCpuArray::try_from(
        ebpf.map_mut(names::DROPS)
            .ok_or(DatapathError::MissingMap(names::DROPS))?,
    )
    .map_err(map)?;
    for (i, counts) in values.into_iter().enumerate() {
        let slot = drop::slot(drop::hook::UNATTRIBUTED, drop::BASE + i as u32);
        drops.set(slot, counts, 0).map_err(map)?;
    }
    Ok(())
}

impl Datapath {
    /// Loads the programs, reusing the maps pinned under `options.bpffs` if
    /// there are any (and refusing them if their layout differs; resizing
    /// the drop counters of an older netd).
    pub fn load(options: &Options) -> Result<Self, DatapathError> {
        ensure_bpffs(&options.bpffs)?;
        check_pinned_layouts(&options.bpffs)?;
        let short_drops = take_short_drops(&options.bpffs)?;
        let reused: Vec<&str> = names::PINNED
            .into_iter()
            .filter(|name| options.bpffs.join(name).exists())
            .collect();
        let mut loader = EbpfLoader::new();
        for name in names::PINNED {
            loader.map_pin_path(name, options.bpffs.join(name));
        }
        loader.map_max_entries(names::CT, options.ct_max);
        let mut ebpf = loader.load(crate::ebpf::object())?;
        if let Some(values) = short_drops {
            restore_drops(&mut ebpf, values)?;
        }
        if reused.is_empty() {
            info!(bpffs = %options.bpffs.display(), "created and pinned the maps");
        } else {
            info!(bpffs = %options.bpffs.display(), maps = reused.len(), "reused pinned maps");
        }
        let mut programs = vec![UPLINK_TC, ENDPOINT_TC, LAN_TC];
        if options.xdp {
            programs.push(UPLINK_XDP);
        }
        if options.sockets {
            programs.extend(SOCKET_PROGRAMS);
        }
        for name in programs {
            let program = ebpf
                .program_mut(name)
                .ok_or(DatapathError::MissingProgram(name))?;
            match program {
                aya::programs::Program::SchedClassifier(p) => p.load()?,
                aya::programs::Program::Xdp(p) => p.load()?,
                aya::programs::Program::CgroupSockAddr(p) => p.load()?,
                _ => return Err(DatapathError::MissingProgram(name)),
            }
        }
        if let Err(err) = logs::spawn(&mut ebpf) {
            warn!(error = %err, "kernel-side logs unavailable");
        }
        Ok(Self {
            ebpf,
            bpffs: options.bpffs.clone(),
            xdp: options.xdp,
            tc_mode: options.tc_mode,
            qdiscs_added: std::collections::BTreeSet::new(),
        })
    }

    /// Whether this agent added the clsact qdisc of `interface`.
    pub fn added_qdisc(&self, interface: &str) -> bool {
        self.qdiscs_added.contains(interface)
    }

    pub fn tc_mode(&self) -> TcMode {
        self.tc_mode
    }

    pub fn maps(&mut self) -> Maps<'_> {
        Maps::new(&mut self.ebpf)
    }

    pub fn xdp(&self) -> bool {
        self.xdp
    }

    fn link_pin(&self, name: &str) -> PathBuf {
        crate::paths::link_pin(&self.bpffs, name)
    }

    /// Attaches TC program `program` to ingress of `interface`: through
    /// the link pinned as `pin` (see [`attach_pinned`]), or, in netlink
    /// mode, as netd's filter on its clsact qdisc (created if need be),
    /// replacing the program of a filter a previous agent left.
    pub fn attach_tc(
        &mut self,
        program: &'static str,
        interface: &str,
        pin: &str,
    ) -> Result<(), DatapathError> {
        self.attach_tc_at(program, interface, pin, TcAttachType::Ingress)
    }

    /// [`Self::attach_tc`] on egress of `interface`, which is looked up in
    /// the calling thread's namespace.
    pub fn attach_tc_egress(
        &mut self,
        program: &'static str,
        interface: &str,
        pin: &str,
    ) -> Result<(), DatapathError> {
        self.attach_tc_at(program, interface, pin, TcAttachType::Egress)
    }

    fn attach_tc_at(
        &mut self,
        program: &'static str,
        interface: &str,
        pin: &str,
        at: TcAttachType,
    ) -> Result<(), DatapathError> {
        let path = self.link_pin(pin);
        let tc_mode = self.tc_mode;
        // The qdiscs netd adds to the agent's own interfaces are recorded
        // for `netd down`; a container's device (egress: a LAN endpoint's,
        // in its namespace) takes its qdisc along when it goes.
        if tc_mode == TcMode::Netlink && add_clsact(interface)? && at == TcAttachType::Ingress {
            self.qdiscs_added.insert(interface.to_owned());
        }
        let prog = self.tc_program(program)?;
        match tc_mode {
            TcMode::Tcx => attach_pinned(&mut Tc { prog, at }, program, interface, &path),
            TcMode::Netlink => {
                if !attach_filter(prog, program, interface, at)? {
                    let link = netd_filter(interface, at)?;
                    let id = prog
                        .attach_to_link(link)
                        .map_err(|source| DatapathError::Attach {
                            program,
                            interface: interface.to_owned(),
                            source,
                        })?;
                    keep_filter(prog, id)?;
                    info!(
                        program,
                        interface, "replaced the program of netd's TC filter"
                    );
                }
                Ok(())
            }
        }
    }

    /// Attaches `program` to `interface` again if its attachment is gone
    /// (a link pin removed, a filter or qdisc deleted with `tc`); whether
    /// it was.
    pub fn reattach_tc_if_missing(
        &mut self,
        program: &'static str,
        interface: &str,
        pin: &str,
    ) -> Result<bool, DatapathError> {
        match self.tc_mode {
            TcMode::Tcx if self.has_link_pin(pin) => Ok(false),
            TcMode::Tcx => self.attach_tc(program, interface, pin).map(|()| true),
            TcMode::Netlink => {
                if add_clsact(interface)? {
                    self.qdiscs_added.insert(interface.to_owned());
                }
                let prog = self.tc_program(program)?;
                attach_filter(prog, program, interface, TcAttachType::Ingress)
            }
        }
    }

    fn tc_program(&mut self, program: &'static str) -> Result<&mut SchedClassifier, DatapathError> {
        Ok(self
            .ebpf
            .program_mut(program)
            .ok_or(DatapathError::MissingProgram(program))?
            .try_into()?)
    }

    /// Attaches the XDP program to `interface` through the link pinned as
    /// `pin` (see [`attach_pinned`]).
    pub fn attach_xdp(&mut self, interface: &str, pin: &str) -> Result<(), DatapathError> {
        let path = self.link_pin(pin);
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(UPLINK_XDP)
            .ok_or(DatapathError::MissingProgram(UPLINK_XDP))?
            .try_into()?;
        attach_pinned(prog, UPLINK_XDP, interface, &path)
    }

    /// Attaches the socket programs to the cgroup v2 at `cgroup`, through
    /// links pinned as `cgroup-<program>`. Each new link is made (cgroup
    /// links coexist) before the old pin goes, so connects are translated
    /// throughout an agent restart.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<(), DatapathError> {
        let dir = fs::File::open(cgroup).map_err(|source| DatapathError::Io {
            what: format!("opening cgroup {}", cgroup.display()),
            source,
        })?;
        for program in SOCKET_PROGRAMS {
            let path = self.link_pin(&format!("cgroup-{program}"));
            let prog: &mut aya::programs::CgroupSockAddr = self
                .ebpf
                .program_mut(program)
                .ok_or(DatapathError::MissingProgram(program))?
                .try_into()?;
            let attach = |source| DatapathError::Attach {
                program,
                interface: cgroup.display().to_string(),
                source,
            };
            // Mode "single" is what BPF links ask for: cgroup links always
            // coexist (link_create refuses BPF_F_ALLOW_MULTI).
            let id = prog
                .attach(&dir, aya::programs::links::CgroupAttachMode::Single)
                .map_err(attach)?;
            let link =
                FdLink::try_from(prog.take_link(id)?).map_err(|_| DatapathError::NotPinnable {
                    program,
                    interface: cgroup.display().to_string(),
                })?;
            let replaced = path.exists();
            let _ = fs::remove_file(&path);
            link.pin(&path)
                .map_err(|source| DatapathError::Pin { path, source })?;
            if replaced {
                info!(program, cgroup = %cgroup.display(), "replaced the cgroup link");
            } else {
                info!(program, cgroup = %cgroup.display(), "attached");
            }
        }
        Ok(())
    }

    /// Detaches the link pinned as `pin`; absent is fine.
    pub fn detach(&mut self, pin: &str) -> Result<(), DatapathError> {
        let path = self.link_pin(pin);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DatapathError::Io {
                what: format!("removing {}", path.display()),
                source,
            }),
        }
    }

    /// Whether the link pin `pin` is there.
    pub fn has_link_pin(&self, pin: &str) -> bool {
        self.link_pin(pin).exists()
    }

    /// Pins again the maps whose pins were removed (by hand, behind netd's
    /// back): without them a restarted agent would start from empty maps.
    /// Returns the maps pinned again.
    pub fn repin_maps(&mut self) -> Result<Vec<&'static str>, DatapathError> {
        let mut repinned = Vec::new();
        for name in names::PINNED {
            let path = self.bpffs.join(name);
            if path.exists() {
                continue;
            }
            let map = self.ebpf.map(name).ok_or(DatapathError::MissingMap(name))?;
            map.pin(&path).map_err(|source| DatapathError::MapPin {
                path: path.clone(),
                source,
            })?;
            repinned.push(name);
        }
        Ok(repinned)
    }

    /// What each pinned map may hold and the kernel memory it is charged
    /// (`memlock` in its fdinfo): bounded by `max_entries`, whatever the
    /// traffic, since every map is preallocated or capped.
    pub fn map_usage(&self) -> Vec<MapUsage> {
        map_usage(&self.bpffs)
    }

    /// The names of the pinned links.
    pub fn link_pins(&self) -> Vec<String> {
        fs::read_dir(crate::paths::links_dir(&self.bpffs))
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Each pinned map's capacity and kernel memory (`memlock`), read from the
/// pins under `bpffs`.
pub fn map_usage(bpffs: &Path) -> Vec<MapUsage> {
    names::PINNED
        .iter()
        .filter_map(|&name| {
            let info = MapInfo::from_pin(bpffs.join(name)).ok()?;
            let fd = info.fd().ok()?;
            let fdinfo =
                fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd())).ok()?;
            let memory_bytes = fdinfo
                .lines()
                .find_map(|line| line.strip_prefix("memlock:"))
                .and_then(|value| value.trim().parse().ok())?;
            Some(MapUsage {
                name,
                max_entries: info.max_entries(),
                memory_bytes,
            })
        })
        .collect()
}
