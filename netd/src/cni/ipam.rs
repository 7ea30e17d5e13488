// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Delegation to an IPAM plugin named by the configuration (`"ipam":
//! {"type": "host-local", ...}`): run from `CNI_PATH` with the same
//! environment and configuration, as the specification's delegation says.

use std::{
    io::Write as _,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Stdio},
};

use serde_json::Value;

use super::spec::{CniError, Code, Environment};

/// Runs the IPAM plugin `kind` for `command`; its stdout.
pub fn run(kind: &str, command: &str, env: &Environment, conf: &[u8]) -> Result<Value, CniError> {
    let plugin = find(kind, env)?;
    let mut child = Command::new(&plugin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            CniError::new(
                Code::Io,
                format!("running IPAM plugin {}", plugin.display()),
            )
            .details(e.to_string())
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits without reading is judged by its status.
        let _ = stdin.write_all(conf);
    }
    let out = child.wait_with_output().map_err(|e| {
        CniError::new(
            Code::Io,
            format!("running IPAM plugin {}", plugin.display()),
        )
        .details(e.to_string())
    })?;
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if !out.status.success() {
        // Its own error, passed on with its code.
        let code = answer["code"].as_u64().unwrap_or(Code::Io as u64) as u32;
        let msg = answer["msg"].as_str().unwrap_or("failed without a message");
        return Err(CniError::with_code(
            code,
            format!("IPAM plugin {kind}: {msg}"),
        ));
    }
    Ok(answer)
}

/// Runs the IPAM plugin's ADD: the IPv4 address it assigned.
pub fn add(kind: &str, env: &Environment, conf: &[u8]) -> Result<Ipv4Addr, CniError> {
    let result = run(kind, "ADD", env, conf)?;
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|address| address.split('/').next()?.parse().ok())
        .next()
        .ok_or_else(|| {
            CniError::new(
                Code::InvalidConfig,
                format!("IPAM plugin {kind} assigned no IPv4 address"),
            )
            .details(result.to_string())
        })
}

fn find(kind: &str, env: &Environment) -> Result<PathBuf, CniError> {
    if kind.contains('/') {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!("IPAM type {kind:?} must be a plugin name, not a path"),
        ));
    }
    env.path
        .iter()
        .map(|dir| dir.join(kind))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            CniError::new(
                Code::InvalidConfig,
                format!("IPAM plugin {kind} not found in CNI_PATH"),
            )
        })
}
