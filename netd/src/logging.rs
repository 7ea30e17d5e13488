// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Logging: `tracing` with `RUST_LOG` filters; the `log` records aya and
//! aya-log emit reach the same output through tracing-log.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Logs to stderr at `info` unless `RUST_LOG` says otherwise.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (tests calling into the library) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
