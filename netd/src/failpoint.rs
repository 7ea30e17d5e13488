// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Crash points for tests of recovery: with `NETD_FAILPOINT=NAME` in its
//! environment, the agent kills itself with SIGKILL when it reaches the
//! point NAME, leaving whatever it had half-done for a restarted agent to
//! finish. Unset, a failpoint is one environment lookup.

/// Kills the process if `NETD_FAILPOINT` names this point.
pub fn hit(name: &str) {
    if std::env::var_os("NETD_FAILPOINT").is_some_and(|point| point == name) {
        eprintln!("failpoint {name}: SIGKILL");
        // SIGKILL, not abort(): no unwinding, no destructor, no core file.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
