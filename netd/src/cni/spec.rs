// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The CNI specification's data (1.1, and the 0.3.x/0.4.0/1.0.0 versions
//! runtimes still send): what a runtime gives a plugin (environment and
//! network configuration) and what the plugin answers (a result, a version
//! list or an error).

use std::{collections::BTreeSet, fmt, path::PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The versions netd speaks; results are in the configuration's version.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version: VERSION's answer when the configuration names none.
pub const LATEST: &str = "1.1.0";

/// The error codes of the specification (section "Error").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    /// STATUS: the plugin cannot serve ADD (the agent is down).
    NotAvailable = 50,
}

/// A failure, as the specification prints it on stdout.
#[derive(Debug)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self::with_code(code as u32, msg)
    }

    /// An error with a plugin-specific code (100 and up).
    pub fn with_code(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    #[must_use]
    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn to_json(&self, version: &str) -> Value {
        let mut body = serde_json::json!({
            "cniVersion": version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            body["details"] = Value::String(self.details.clone());
        }
        body
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

/// The operation asked for, from `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "GC" => Self::Gc,
            "STATUS" => Self::Status,
            "VERSION" => Self::Version,
            _ => return None,
        })
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub path: Vec<PathBuf>,
}

impl Environment {
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Self {
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            path: var("CNI_PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        }
    }

    /// The variable `name` (`CNI_CONTAINERID`...), which `command` needs.
    pub fn require<'a>(
        &self,
        value: &'a Option<String>,
        name: &str,
        command: Command,
    ) -> Result<&'a str, CniError> {
        value.as_deref().ok_or_else(|| {
            CniError::new(
                Code::InvalidEnvironment,
                format!("{name} is required for {command:?}").to_uppercase(),
            )
        })
    }
}

/// A network configuration, as the runtime hands it on stdin; fields netd
/// does not know are kept for the IPAM plugin it may delegate to.
#[derive(Clone, Debug, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The agent's API socket [default: NETD_SOCKET, else netd's default].
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub ipam: Option<Ipam>,
    #[serde(default)]
    pub dns: Option<Value>,
    #[serde(default, rename = "runtimeConfig")]
    pub runtime_config: RuntimeConfig,
    #[serde(default, rename = "prevResult")]
    pub prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Ipam {
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(default, rename = "portMappings")]
    pub port_mappings: Vec<PortMapping>,
}

/// One entry of the `portMappings` capability.
#[derive(Clone, Debug, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

impl PortMapping {
    /// The mapping as Docker's `-p` spec, which netd publishes.
    pub fn spec(&self) -> Result<String, CniError> {
        let proto = self.protocol.as_deref().unwrap_or("tcp").to_lowercase();
        let host_ip = self.host_ip.as_deref().unwrap_or("");
        if host_ip.contains(':') {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!(
                    "port mapping {}:{}: netd publishes on IPv4 host addresses only, not {host_ip}",
                    self.host_port, self.container_port
                ),
            ));
        }
        Ok(match host_ip {
            "" | "0.0.0.0" => format!("{}:{}/{proto}", self.host_port, self.container_port),
            ip => format!("{ip}:{}:{}/{proto}", self.host_port, self.container_port),
        })
    }
}

impl PortMapping {
    /// Whether `form`, a published port as the agent lists it (Docker's
    /// `IP:HOST->CTR/PROTO`), is this mapping. The host address is compared
    /// only when the mapping names one: without, the agent binds its
    /// default.
    pub fn is_published_as(&self, form: &str) -> bool {
        let Some((host, ctr)) = form.split_once("->") else {
            return false;
        };
        let Some((host_ip, host_port)) = host.rsplit_once(':') else {
            return false;
        };
        let proto = self.protocol.as_deref().unwrap_or("tcp").to_lowercase();
        let wanted_ip = self.host_ip.as_deref().filter(|ip| !ip.is_empty());
        host_port == self.host_port.to_string()
            && ctr == format!("{}/{proto}", self.container_port)
            && wanted_ip.is_none_or(|ip| ip == host_ip)
    }
}

/// An attachment a GC must keep.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The valid attachments as a set.
pub fn attachment_set(list: &[Attachment]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect()
}

/// An ADD's result.
#[derive(Clone, Debug, Serialize)]
pub struct AddResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<RouteConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Value>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Interface {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct IpConfig {
    /// "4": results of versions before 1.0.0 carry it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    pub address: String,
    pub gateway: String,
    pub interface: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct RouteConfig {
    pub dst: String,
    pub gw: String,
}

/// Whether results in `version` carry `"version": "4"` in their IPs.
pub fn ips_carry_version(version: &str) -> bool {
    version.starts_with("0.")
}
