// SPDX-License-Identifier: MIT OR GPL-2.0-only
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::datapath::observe::{Hook, Observer};

/// Count packets on an interface by protocol with netd's TC or XDP hook:
/// a quick check that this kernel runs netd's programs.
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
}

impl Observe {
    pub fn execute(self) -> anyhow::Result<()> {
        let hook = if self.xdp { Hook::Xdp } else { Hook::TcIngress };
        let mut observer = Observer::attach(&self.interface, hook)
            .with_context(|| format!("observing {}", self.interface))?;
        std::thread::sleep(Duration::from_secs(self.seconds));
        let stats = observer.read()?;
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
        observer.detach();
        Ok(())
    }
}
