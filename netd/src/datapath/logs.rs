// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Kernel-side logs (aya-log): the programs log on rare paths only, at
//! debug level; a task drains them into the agent's log.

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;

/// Starts draining `ebpf`'s log ring buffer. Needs a tokio runtime.
pub fn spawn(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let logger = EbpfLogger::init(ebpf)?;
    // SAFETY: the fd is the logger's ring buffer, owned by the logger, open
    // and unchanged for as long as the AsyncFd holds the logger.
    let mut logger =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
            .map_err(|err| err.into_parts().1)?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = logger.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    Ok(())
}
