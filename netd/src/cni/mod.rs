// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! netd as a CNI plugin (specification 1.1): the `netd` binary run by a
//! runtime (Podman, containerd, CRI-O, the kubelet's runtime) with
//! `CNI_COMMAND` set. It holds no state: each command is a request to the
//! running agent, which attaches the namespace to its bridge, publishes the
//! `portMappings` it is given, and owns the addresses (unless the
//! configuration names an IPAM plugin, which netd then delegates to).
//!
//! Install it by copying (or linking) the `netd` binary as `netd` into the
//! runtime's plugin directory (`/opt/cni/bin` usually) and naming
//! `"type": "netd"` in the network configuration.

mod ipam;
pub mod spec;

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use serde_json::Value;

use self::spec::{
    AddResult, CniError, Code, Command, Environment, Interface, IpConfig, NetConf, RouteConfig,
};
use crate::{
    api::{AttachRequest, Endpoint, NetworkSummary, Status},
    client::{Client, ClientError},
};

/// The owner netd records on the endpoints the plugin attaches: GC only
/// ever removes those.
pub const OWNER: &str = "cni";

/// Plugin-specific error codes (the specification leaves 100 and up to
/// plugins).
const CODE_BROKEN: u32 = 100;
const CODE_CONFLICT: u32 = 101;
const CODE_EXHAUSTED: u32 = 102;

/// Whether a runtime started this process as a CNI plugin.
pub fn invoked_as_plugin() -> bool {
    std::env::var_os("CNI_COMMAND").is_some()
}

/// Runs one CNI command: reads the configuration on stdin, prints the
/// result (ADD, VERSION) or the error on stdout, as the specification says.
pub fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    // Errors are answered in the configuration's version when it has one.
    let version = serde_json::from_slice::<Value>(&stdin)
        .ok()
        .and_then(|conf| conf["cniVersion"].as_str().map(str::to_owned))
        .unwrap_or_else(|| spec::LATEST.to_owned());
    let outcome = read
        .map_err(|e| {
            CniError::new(Code::Io, "reading the configuration from stdin").details(e.to_string())
        })
        .and_then(|_| run(&stdin));
    match outcome {
        Ok(Some(answer)) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(err) => {
            println!("{}", err.to_json(&version));
            eprintln!("netd (CNI): {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let text = std::env::var("CNI_COMMAND").unwrap_or_default();
    let command = Command::parse(&text).ok_or_else(|| {
        CniError::new(
            Code::InvalidEnvironment,
            format!(
                "unknown CNI_COMMAND {text:?}: expected ADD, DEL, CHECK, GC, STATUS or VERSION"
            ),
        )
    })?;
    if command == Command::Version {
        return Ok(Some(version_answer(stdin)));
    }
    let conf = NetConf::decode(stdin)?;
    if !spec::SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            format!(
                "CNI version {} is not supported: netd speaks {}",
                conf.cni_version,
                spec::SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let env = Environment::from_env();
    let socket = conf
        .socket
        .clone()
        .or_else(|| std::env::var_os("NETD_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(crate::paths::SOCKET));
    let plugin = Plugin {
        client: Client::new(&socket),
        socket,
        conf,
        raw: stdin,
        env,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(Code::Io, "starting the runtime").details(e.to_string()))?;
    runtime.block_on(async {
        match command {
            Command::Add => plugin.add().await.map(Some),
            Command::Del => plugin.del().await.map(|()| None),
            Command::Check => plugin.check().await.map(|()| None),
            Command::Gc => plugin.gc().await.map(|()| None),
            Command::Status => plugin.status().await.map(|()| None),
            Command::Version => unreachable!("answered above"),
        }
    })
}

/// VERSION's answer: every version netd speaks.
fn version_answer(stdin: &[u8]) -> Value {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|conf| conf["cniVersion"].as_str().map(str::to_owned))
        .unwrap_or_else(|| spec::LATEST.to_owned());
    serde_json::json!({
        "cniVersion": asked,
        "supportedVersions": spec::SUPPORTED_VERSIONS,
    })
}

struct Plugin<'a> {
    client: Client,
    socket: PathBuf,
    conf: NetConf,
    /// The configuration as given, for the IPAM plugin.
    raw: &'a [u8],
    env: Environment,
}

impl Plugin<'_> {
    fn ipam(&self) -> Option<&str> {
        self.conf.ipam.as_ref().and_then(|i| i.kind.as_deref())
    }

    /// What an agent error means in the specification's terms.
    fn agent_error(&self, err: ClientError) -> CniError {
        match err {
            ClientError::Unreachable { cause, .. } => CniError::new(
                Code::TryAgainLater,
                format!(
                    "the netd agent is not running at {} (start it with `netd agent`)",
                    self.socket.display()
                ),
            )
            .details(cause.to_string()),
            ClientError::Api { kind, message, .. } => {
                let code = match kind.as_str() {
                    "not_found" => Code::UnknownContainer as u32,
                    "invalid_argument" => Code::InvalidConfig as u32,
                    "conflict" => CODE_CONFLICT,
                    "exhausted" => CODE_EXHAUSTED,
                    _ => Code::Io as u32,
                };
                CniError::with_code(code, message)
            }
            ClientError::Protocol { detail, .. } => {
                CniError::new(Code::Io, "talking to the netd agent").details(detail)
            }
        }
    }

    async fn add(&self) -> Result<Value, CniError> {
        let container =
            self.env
                .require(&self.env.container_id, "CNI_CONTAINERID", Command::Add)?;
        let netns = self
            .env
            .require(&self.env.netns, "CNI_NETNS", Command::Add)?;
        let ifname = self
            .env
            .require(&self.env.ifname, "CNI_IFNAME", Command::Add)?;
        let aliases = self.conf.aliases()?;
        let ports = self
            .conf
            .port_mappings()?
            .iter()
            .map(spec::PortMapping::spec)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(request) = self.conf.network_request() {
            self.client
                .post::<NetworkSummary>("/v1/networks", &request)
                .await
                .map_err(|e| self.agent_error(e))?;
        }
        let ip = match self.ipam() {
            Some(kind) => Some(ipam::add(kind, &self.env, self.raw)?),
            None => None,
        };
        let request = AttachRequest {
            netns: netns.to_owned(),
            ip: ip.map(|ip| ip.to_string()),
            ifname: Some(ifname.to_owned()),
            // Pods by their Kubernetes name; other containers by their ID.
            name: Some(self.env.pod_name().unwrap_or_else(|| container.to_owned())),
            container_id: Some(container.to_owned()),
            ports,
            owner: Some(OWNER.to_owned()),
            network: self.conf.network.clone(),
            aliases,
            ..AttachRequest::default()
        };
        let endpoint: Endpoint = match self.client.post("/v1/endpoints", &request).await {
            Ok(endpoint) => endpoint,
            Err(err) => {
                // Give back the address the IPAM plugin reserved.
                if let Some(kind) = self.ipam() {
                    let _ = ipam::run(kind, "DEL", &self.env, self.raw);
                }
                return Err(self.agent_error(err));
            }
        };
        let version = self.conf.cni_version.as_str();
        // A LAN endpoint (macvlan, ipvlan) has no host side to report.
        let mut interfaces = Vec::new();
        if !endpoint.host_ifname.is_empty() {
            interfaces.push(Interface {
                name: endpoint.host_ifname.clone(),
                mac: None,
                sandbox: None,
            });
        }
        interfaces.push(Interface {
            name: endpoint.ifname.clone(),
            mac: Some(endpoint.mac.to_string()),
            sandbox: Some(netns.to_owned()),
        });
        let result = AddResult {
            cni_version: version.to_owned(),
            ips: vec![IpConfig {
                version: spec::ips_carry_version(version).then_some("4"),
                address: format!("{}/{}", endpoint.ip, endpoint.prefix_len),
                gateway: endpoint.gateway.to_string(),
                interface: interfaces.len() - 1,
            }],
            interfaces,
            routes: vec![RouteConfig {
                dst: "0.0.0.0/0".to_owned(),
                gw: endpoint.gateway.to_string(),
            }],
            // The configuration's own `dns` wins; else the agent's server
            // on the network, which Podman writes into resolv.conf.
            dns: self.conf.dns.clone().or_else(|| {
                endpoint
                    .dns
                    .as_ref()
                    .map(|dns| serde_json::to_value(dns).expect("the agent's DNS serializes"))
            }),
        };
        Ok(serde_json::to_value(result).expect("results serialize"))
    }

    /// The endpoints this plugin attached on this configuration's network:
    /// a runtime runs DEL, CHECK and GC per network, and GC's valid
    /// attachments are that network's only.
    async fn owned(&self) -> Result<Vec<Endpoint>, CniError> {
        let all: Vec<Endpoint> = self
            .client
            .get("/v1/endpoints")
            .await
            .map_err(|e| self.agent_error(e))?;
        Ok(all
            .into_iter()
            .filter(|ep| {
                ep.owner.as_deref() == Some(OWNER) && ep.network == self.conf.network_name()
            })
            .collect())
    }

    async fn detach(&self, endpoint: &Endpoint) -> Result<(), CniError> {
        match self
            .client
            .delete::<Endpoint>(&format!("/v1/endpoints/{}", endpoint.id))
            .await
        {
            // Gone meanwhile: what DEL wants.
            Ok(_) | Err(ClientError::Api { status: 404, .. }) => Ok(()),
            Err(err) => Err(self.agent_error(err)),
        }
    }

    /// DEL succeeds when there is nothing to delete: the namespace may be
    /// gone, and runtimes repeat DELs.
    async fn del(&self) -> Result<(), CniError> {
        let container =
            self.env
                .require(&self.env.container_id, "CNI_CONTAINERID", Command::Del)?;
        let ifname = self.env.ifname.as_deref();
        for endpoint in self.owned().await? {
            if container_of(&endpoint) == container && ifname.is_none_or(|i| i == endpoint.ifname) {
                self.detach(&endpoint).await?;
            }
        }
        if let Some(kind) = self.ipam() {
            ipam::run(kind, "DEL", &self.env, self.raw)?;
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), CniError> {
        let container =
            self.env
                .require(&self.env.container_id, "CNI_CONTAINERID", Command::Check)?;
        let netns = self
            .env
            .require(&self.env.netns, "CNI_NETNS", Command::Check)?;
        let ifname = self
            .env
            .require(&self.env.ifname, "CNI_IFNAME", Command::Check)?;
        let known = self
            .owned()
            .await?
            .into_iter()
            .find(|ep| container_of(ep) == container && ep.ifname == ifname)
            .ok_or_else(|| {
                CniError::new(
                    Code::UnknownContainer,
                    format!("netd has no endpoint for container {container} interface {ifname}"),
                )
            })?;
        // The agent checks the kernel side: veth, datapath, namespace.
        let endpoint: Endpoint = self
            .client
            .get(&format!("/v1/endpoints/{}", known.id))
            .await
            .map_err(|err| match err {
                ClientError::Api { message, .. } => CniError::with_code(CODE_BROKEN, message),
                other => self.agent_error(other),
            })?;
        if !same_namespace(netns, &endpoint.netns) {
            return Err(CniError::with_code(
                CODE_BROKEN,
                format!(
                    "endpoint {container} is attached to {}, not to {netns}",
                    endpoint.netns
                ),
            ));
        }
        let address = format!("{}/{}", endpoint.ip, endpoint.prefix_len);
        if let Some(prev) = &self.conf.prev_result {
            let listed = prev["ips"]
                .as_array()
                .is_some_and(|ips| ips.iter().any(|ip| ip["address"] == address.as_str()));
            if !listed {
                return Err(CniError::with_code(
                    CODE_BROKEN,
                    format!("endpoint {container} has {address}, which prevResult does not list"),
                ));
            }
        }
        for mapping in &self.conf.port_mappings()? {
            if !endpoint
                .ports
                .iter()
                .any(|form| mapping.is_published_as(form))
            {
                return Err(CniError::with_code(
                    CODE_BROKEN,
                    format!(
                        "port mapping {}:{} of container {container} is not published",
                        mapping.host_port, mapping.container_port
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Detaches every endpoint of this plugin that the runtime no longer
    /// lists, then lets the IPAM plugin do the same with its addresses.
    async fn gc(&self) -> Result<(), CniError> {
        let valid = spec::attachment_set(&self.conf.valid_attachments()?);
        for endpoint in self.owned().await? {
            if !valid.contains(&(container_of(&endpoint).to_owned(), endpoint.ifname.clone())) {
                self.detach(&endpoint).await?;
            }
        }
        if let Some(kind) = self.ipam() {
            // IPAM plugins older than CNI 1.1 do not know GC: their
            // addresses stay, which is what they did before GC existed.
            if let Err(err) = ipam::run(kind, "GC", &self.env, self.raw) {
                eprintln!("netd (CNI): IPAM plugin {kind} GC: {err}");
            }
        }
        Ok(())
    }

    /// Ready when the agent answers.
    async fn status(&self) -> Result<(), CniError> {
        match self.client.get::<Status>("/v1/status").await {
            Ok(_) => Ok(()),
            Err(ClientError::Unreachable { cause, .. }) => Err(CniError::new(
                Code::NotAvailable,
                format!(
                    "the netd agent is not running at {} (start it with `netd agent`)",
                    self.socket.display()
                ),
            )
            .details(cause.to_string())),
            Err(err) => Err(self.agent_error(err)),
        }
    }
}

/// The runtime's container ID of an endpoint the plugin attached.
/// Endpoints attached before netd recorded IDs apart were named by it.
fn container_of(endpoint: &Endpoint) -> &str {
    endpoint.container_id.as_deref().unwrap_or(&endpoint.name)
}

/// Whether two namespace paths name the same namespace.
fn same_namespace(a: &str, b: &str) -> bool {
    let ident = |path: &str| crate::netns::Netns::open(path).ok().map(|ns| ns.ident());
    a == b || Path::new(a) == Path::new(b) || ident(a).is_some_and(|i| Some(i) == ident(b))
}
