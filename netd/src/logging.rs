// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Logging: `tracing` with `RUST_LOG` filters; the `log` records aya and
//! aya-log emit reach the same output through tracing-log.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// The default filter: netd at `info`; hickory's DNS crates at `warn`
/// only for the resolver and not at all for the server, which logs every
/// query (two lines each) and every malformed message a container sends:
/// a container must not be able to fill the agent's log.
const DEFAULT_FILTER: &str =
    "info,hickory_server=off,hickory_net=error,hickory_proto=error,hickory_resolver=warn";

/// Logs to stderr at [`DEFAULT_FILTER`] unless `RUST_LOG` says otherwise.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // A second init (tests calling into the library) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
