// SPDX-License-Identifier: MIT OR GPL-2.0-only
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};

use crate::datapath::{
    features::Features,
    observe::{Hook, Observer},
};

/// Count packets on an interface by protocol with netd's TC or XDP hook:
/// a quick check that this kernel runs netd's programs. Ctrl-C ends the
/// count early; either way the program is detached and the interface left
/// as it was found.
///
/// Example: `netd observe eth0 --seconds 5`
#[derive(Args)]
pub struct Observe {
    /// Interface to observe (in the current network namespace).
    interface: String,
    /// Use the XDP hook instead of TC ingress.
    #[arg(long)]
    xdp: bool,
    /// How long to count before printing.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// How to attach the TC hook: as the agent's `--tc-attach`.
    #[arg(long, value_enum, default_value_t = crate::agent::config::TcAttachFlag::Auto)]
    tc_attach: crate::agent::config::TcAttachFlag,
}

impl Observe {
    pub async fn execute(self) -> anyhow::Result<()> {
        let hook = if self.xdp { Hook::Xdp } else { Hook::TcIngress };
        let tc_mode = crate::agent::config::pick_tc_mode(self.tc_attach, &Features::probe())?;
        // Before attaching: a Ctrl-C from here on ends the count and
        // detaches, never kills the process with the program attached.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut observer = Observer::attach_with(&self.interface, hook, tc_mode)
            .with_context(|| format!("observing {}", self.interface))?;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(self.seconds)) => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let stats = observer.read()?;
        observer.detach();
        println!(
            "{} {}: tcp {} udp {} icmp {} ipv4-other {} ipv6 {} arp {} other {} ({} bytes)",
            self.interface,
            hook.name(),
            stats.ipv4_tcp,
            stats.ipv4_udp,
            stats.ipv4_icmp,
            stats.ipv4_other,
            stats.ipv6,
            stats.arp,
            stats.other,
            stats.bytes
        );
        Ok(())
    }
}
