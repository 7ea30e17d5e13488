// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! What every error of netd's shares. The typed errors live with their
//! layers (`datapath::DatapathError`, `agent::error::AgentError`, ...); the
//! CLI adds context with anyhow.

/// An error and its causes in one line ("create veth vethab: File exists"),
/// skipping causes whose text the line already holds.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}
