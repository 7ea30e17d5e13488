// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The CNI specification's data (1.1, and the 0.3.x/0.4.0/1.0.0 versions
//! runtimes still send): what a runtime gives a plugin (environment and
//! network configuration) and what the plugin answers (a result, a version
//! list or an error).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::PathBuf,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{DEFAULT_NETWORK, NetworkCreateRequest};

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
    /// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
    pub args: Vec<(String, String)>,
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
            args: var("CNI_ARGS").map(|a| parse_args(&a)).unwrap_or_default(),
        }
    }

    /// The value of `key` in `CNI_ARGS`.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The pod's name as Kubernetes writes it, `NAMESPACE/NAME`, when the
    /// runtime is a CRI runtime serving a kubelet (containerd and CRI-O
    /// pass `K8S_POD_NAMESPACE` and `K8S_POD_NAME` in `CNI_ARGS`).
    pub fn pod_name(&self) -> Option<String> {
        Some(format!(
            "{}/{}",
            self.arg("K8S_POD_NAMESPACE")?,
            self.arg("K8S_POD_NAME")?
        ))
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

/// `CNI_ARGS`' pairs; an item without `=` (which the specification does
/// not allow) is skipped, as libcni's parser would refuse it and DEL must
/// not fail on it.
fn parse_args(text: &str) -> Vec<(String, String)> {
    text.split(';')
        .filter_map(|item| item.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// A network configuration, as the runtime hands it on stdin; fields netd
/// does not know are ignored (and kept in the raw bytes for the IPAM plugin
/// it may delegate to). Decode it with [`NetConf::decode`].
///
/// The parts only some commands read (`runtimeConfig`, `prevResult`, the
/// valid attachments) stay JSON until a command asks for them, so that a
/// broken `runtimeConfig` fails the ADD that needs it and never the DEL that
/// does not: a pod must always be removable.
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
    /// The netd network to attach to [default: the agent's default one].
    #[serde(default)]
    pub network: Option<String>,
    /// The network's settings: it is created with them when it does not
    /// exist, and checked against them when it does (a contradiction is
    /// an invalid configuration). Docker's bridge driver options.
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    /// `bridge` (the default), `macvlan` or `ipvlan` (with `parent` and the
    /// mode among `options`, Docker's names).
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default, rename = "ipRange")]
    pub ip_range: Option<String>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default, rename = "runtimeConfig")]
    runtime_config: Option<Value>,
    #[serde(default, rename = "prevResult")]
    pub prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Value>,
}

/// One key the plugin reads, and the keys it reads in the object under it
/// (or in each object of the array under it).
struct Key {
    name: &'static str,
    under: &'static [Self],
}

const fn key(name: &'static str) -> Key {
    Key { name, under: &[] }
}

/// Every key the plugin reads, where it reads it.
const CONF_KEYS: &[Key] = &[
    key("cniVersion"),
    key("name"),
    key("type"),
    key("socket"),
    Key {
        name: "ipam",
        under: &[key("type")],
    },
    key("dns"),
    key("network"),
    key("subnet"),
    key("gateway"),
    key("driver"),
    key("ipRange"),
    key("internal"),
    // Their keys are Docker's option names, matched exactly.
    key("options"),
    Key {
        name: "runtimeConfig",
        under: &[Key {
            name: "portMappings",
            under: &[
                key("hostPort"),
                key("containerPort"),
                key("protocol"),
                key("hostIP"),
            ],
        }],
    },
    Key {
        name: "prevResult",
        under: &[Key {
            name: "ips",
            under: &[key("address")],
        }],
    },
    Key {
        name: "cni.dev/valid-attachments",
        under: &[key("containerID"), key("ifname")],
    },
];

/// Renames the keys of `value` that match `keys` but for ASCII case to the
/// spelling netd reads, as Go's encoding/json (which the reference plugins
/// and libcni use) matches a key to a field: an exact match first, else any
/// key equal but for case. containerd's go-cni sends `portMappings` from a
/// Go struct without JSON tags, so its entries arrive as `HostPort`,
/// `ContainerPort`, `Protocol` and `HostIP`.
fn fold_keys(value: &mut Value, keys: &[Key]) {
    match value {
        Value::Object(map) => {
            for key in keys {
                if !map.contains_key(key.name)
                    && let Some(spelled) = map
                        .keys()
                        .find(|k| k.eq_ignore_ascii_case(key.name))
                        .cloned()
                {
                    let v = map.remove(&spelled).expect("found above");
                    map.insert(key.name.to_owned(), v);
                }
                if !key.under.is_empty()
                    && let Some(child) = map.get_mut(key.name)
                {
                    fold_keys(child, key.under);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                fold_keys(item, keys);
            }
        }
        _ => {}
    }
}

impl NetConf {
    /// The netd network this configuration attaches to.
    pub fn network_name(&self) -> &str {
        self.network.as_deref().unwrap_or(DEFAULT_NETWORK)
    }

    /// When the configuration names a network or gives its settings: the
    /// request that makes sure of it (created if missing, checked if not).
    pub fn network_request(&self) -> Option<NetworkCreateRequest> {
        let given = self.network.is_some()
            || self.driver.is_some()
            || self.subnet.is_some()
            || self.gateway.is_some()
            || self.internal
            || !self.options.is_empty();
        given.then(|| NetworkCreateRequest {
            name: self.network_name().to_owned(),
            subnet: self.subnet.clone(),
            gateway: self.gateway.clone(),
            driver: self.driver.clone().unwrap_or_else(|| "bridge".to_owned()),
            ip_range: self.ip_range.clone(),
            aux_addresses: Vec::new(),
            internal: self.internal,
            options: self
                .options
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect(),
            // Only a network this request creates gets it: who made it.
            labels: vec![format!("netd.cni.conflist={}", self.name)],
            exist_ok: true,
        })
    }

    /// Decodes the configuration as the Go plugins do: keys matched
    /// case-insensitively, unknown keys ignored.
    pub fn decode(bytes: &[u8]) -> Result<Self, CniError> {
        let invalid = |e: serde_json::Error| {
            CniError::new(Code::Decode, "the network configuration is not valid")
                .details(e.to_string())
        };
        let mut value: Value = serde_json::from_slice(bytes).map_err(invalid)?;
        fold_keys(&mut value, CONF_KEYS);
        serde_json::from_value(value).map_err(invalid)
    }

    /// `runtimeConfig.portMappings`, the `portMappings` capability (none
    /// when absent or null).
    pub fn port_mappings(&self) -> Result<Vec<PortMapping>, CniError> {
        Ok(self.runtime_config()?.port_mappings.unwrap_or_default())
    }

    /// `runtimeConfig.aliases`, the `aliases` capability: the names the
    /// runtime gives the container on this configuration's network
    /// (Podman 4.3's: the container's short ID and its `--network-alias`es),
    /// keyed by the configuration's name.
    pub fn aliases(&self) -> Result<Vec<String>, CniError> {
        Ok(self
            .runtime_config()?
            .aliases
            .and_then(|mut by_network| by_network.remove(&self.name))
            .unwrap_or_default())
    }

    fn runtime_config(&self) -> Result<RuntimeConfig, CniError> {
        let Some(config) = self.runtime_config.as_ref().filter(|v| !v.is_null()) else {
            return Ok(RuntimeConfig::default());
        };
        RuntimeConfig::deserialize(config).map_err(|e| {
            CniError::new(Code::Decode, "runtimeConfig is not valid").details(e.to_string())
        })
    }

    /// `cni.dev/valid-attachments`, GC's list of what to keep.
    pub fn valid_attachments(&self) -> Result<Vec<Attachment>, CniError> {
        let Some(list) = self.valid_attachments.as_ref().filter(|v| !v.is_null()) else {
            return Ok(Vec::new());
        };
        Vec::<Attachment>::deserialize(list).map_err(|e| {
            CniError::new(Code::Decode, "cni.dev/valid-attachments is not valid")
                .details(e.to_string())
        })
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Ipam {
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(default, rename = "portMappings")]
    port_mappings: Option<Vec<PortMapping>>,
    #[serde(default)]
    aliases: Option<BTreeMap<String, Vec<String>>>,
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
    /// Empty means every address, as in Go's zero value.
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decode(conf: &Value) -> NetConf {
        NetConf::decode(conf.to_string().as_bytes()).expect("decodes")
    }

    #[test]
    fn a_configuration_names_its_network_and_settings() {
        let base = json!({"cniVersion": "1.0.0", "name": "front-conf", "type": "netd"});
        let plain = decode(&base);
        assert_eq!(plain.network_name(), DEFAULT_NETWORK);
        assert!(plain.network_request().is_none(), "nothing to make sure of");

        let mut named = base.clone();
        named["Network"] = json!("front");
        named["SUBNET"] = json!("10.91.0.0/24");
        named["options"] = json!({"com.docker.network.bridge.enable_icc": "false"});
        let conf = decode(&named);
        assert_eq!(conf.network_name(), "front");
        let request = conf.network_request().expect("a request");
        assert_eq!(request.name, "front");
        assert_eq!(request.subnet.as_deref(), Some("10.91.0.0/24"));
        assert!(request.exist_ok);
        assert_eq!(
            request.options,
            ["com.docker.network.bridge.enable_icc=false"]
        );
        assert_eq!(request.labels, ["netd.cni.conflist=front-conf"]);

        // Settings alone check the default network.
        let mut settings = base;
        settings["gateway"] = json!("172.30.0.1");
        let request = decode(&settings).network_request().expect("a request");
        assert_eq!(request.name, DEFAULT_NETWORK);
    }

    /// What containerd 1.6's CRI plugin (go-cni) hands a plugin for a pod
    /// with a hostPort, byte for byte but the socket: `portMappings` from a
    /// Go struct without JSON tags.
    const CONTAINERD: &str = r#"{"capabilities":{"portMappings":true},"cniVersion":"1.0.0","name":"netd","socket":"/run/netd/netd.sock","type":"netd","runtimeConfig":{"portMappings":[{"HostPort":8080,"ContainerPort":80,"Protocol":"tcp","HostIP":""},{"HostPort":9000,"ContainerPort":9000,"Protocol":"udp","HostIP":"127.0.0.1"}]}}"#;

    #[test]
    fn containerd_capitalised_port_mappings_decode() {
        let conf = NetConf::decode(CONTAINERD.as_bytes()).expect("decodes");
        let specs: Vec<String> = conf
            .port_mappings()
            .expect("mappings")
            .iter()
            .map(|m| m.spec().expect("spec"))
            .collect();
        // An empty HostIP is every address: no address in the spec.
        assert_eq!(specs, ["8080:80/tcp", "127.0.0.1:9000:9000/udp"]);
    }

    #[test]
    fn every_key_matches_whatever_its_case() {
        for fold in [str::to_owned, str::to_lowercase, str::to_uppercase] {
            let k = |name: &str| fold(name);
            let mut mapping = serde_json::Map::new();
            mapping.insert(k("hostPort"), json!(8080));
            mapping.insert(k("containerPort"), json!(80));
            mapping.insert(k("protocol"), json!("UDP"));
            mapping.insert(k("hostIP"), json!("10.0.0.1"));
            let mut attachment = serde_json::Map::new();
            attachment.insert(k("containerID"), json!("abc"));
            attachment.insert(k("ifname"), json!("eth0"));
            let mut conf = serde_json::Map::new();
            conf.insert(k("cniVersion"), json!("1.1.0"));
            conf.insert(k("name"), json!("net"));
            conf.insert(k("type"), json!("netd"));
            conf.insert(k("socket"), json!("/tmp/s.sock"));
            conf.insert(k("ipam"), json!({ k("type"): "host-local" }));
            conf.insert(k("dns"), json!({"nameservers": ["10.0.0.53"]}));
            conf.insert(
                k("runtimeConfig"),
                json!({ k("portMappings"): [Value::Object(mapping)] }),
            );
            conf.insert(
                k("prevResult"),
                json!({ k("ips"): [{ k("address"): "10.1.0.2/16" }] }),
            );
            conf.insert(
                k("cni.dev/valid-attachments"),
                json!([Value::Object(attachment)]),
            );
            conf.insert("someUnknownKey".into(), json!({"anything": [1, 2]}));
            let conf = decode(&Value::Object(conf));
            assert_eq!(conf.cni_version, "1.1.0");
            assert_eq!(conf.name, "net");
            assert_eq!(conf.kind, "netd");
            assert_eq!(conf.socket, Some(PathBuf::from("/tmp/s.sock")));
            assert_eq!(
                conf.ipam.as_ref().and_then(|i| i.kind.as_deref()),
                Some("host-local")
            );
            assert!(conf.dns.is_some());
            let mappings = conf.port_mappings().expect("mappings");
            assert_eq!(mappings[0].spec().expect("spec"), "10.0.0.1:8080:80/udp");
            assert_eq!(
                conf.prev_result.as_ref().expect("prevResult")["ips"][0]["address"],
                "10.1.0.2/16"
            );
            assert_eq!(
                conf.valid_attachments().expect("list"),
                [Attachment {
                    container_id: "abc".into(),
                    ifname: "eth0".into()
                }]
            );
        }
    }

    #[test]
    fn an_exact_key_wins_over_another_spelling() {
        let conf = decode(&json!({
            "cniVersion": "1.0.0", "name": "n", "type": "netd",
            "runtimeConfig": {"portMappings": [
                {"HostPort": 1, "hostPort": 8080, "containerPort": 80}
            ]},
        }));
        assert_eq!(conf.port_mappings().expect("mappings")[0].host_port, 8080);
    }

    #[test]
    fn a_broken_runtime_config_fails_only_who_reads_it() {
        for broken in [
            json!("not an object"),
            json!({"portMappings": "eighty"}),
            json!({"portMappings": [{"HostPort": "x"}]}),
            json!({"portMappings": [{"hostPort": 70000, "containerPort": 80}]}),
        ] {
            let conf = decode(&json!({
                "cniVersion": "1.0.0", "name": "n", "type": "netd",
                "runtimeConfig": broken,
            }));
            let err = conf.port_mappings().expect_err("ADD's reading fails");
            assert_eq!(err.code, Code::Decode as u32);
        }
        for absent in [json!(null), json!({}), json!({"portMappings": null})] {
            let conf = decode(&json!({
                "cniVersion": "1.0.0", "name": "n", "type": "netd",
                "runtimeConfig": absent,
            }));
            assert!(conf.port_mappings().expect("none").is_empty());
        }
    }

    #[test]
    fn cni_args_name_kubernetes_pods() {
        let env = Environment {
            args: parse_args(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u",
            ),
            ..Environment::default()
        };
        assert_eq!(env.pod_name().as_deref(), Some("shop/web-0"));
        let podman = Environment {
            args: parse_args("IgnoreUnknown=1;junk"),
            ..Environment::default()
        };
        assert_eq!(podman.pod_name(), None);
        assert_eq!(Environment::default().pod_name(), None);
    }
}
