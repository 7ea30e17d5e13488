// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Many clients at once: the agent serializes what must be serialized and
//! ends in the state the operations describe, with nothing leaked in the
//! kernel (links, addresses, map entries).

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    thread,
};

use netd::{
    api::{AttachRequest, DetachRequest, Endpoint, Port, PortsRequest, PortsResponse},
    client::Client,
};
use netd_common::map_names;
use netd_tests::{agent::Agent, netns::Netns, require_root};

const CLIENTS: usize = 10;
const OPERATIONS: usize = 1000;
const NAMESPACES_PER_CLIENT: usize = 3;
/// Host ports of client `c`: `PORT_BASE + c * PORTS_PER_CLIENT` and up.
const PORT_BASE: u16 = 20_000;
const PORTS_PER_CLIENT: u16 = 8;

/// What a client believes it made: per namespace, whether it is attached
/// and which host ports it publishes.
#[derive(Default)]
struct Model {
    attached: BTreeMap<String, BTreeSet<u16>>,
}

/// splitmix64: each client's fixed sequence of choices.
struct Random(u64);

impl Random {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

/// Runs client `c`'s operations on its own namespaces; returns its model.
async fn client_run(client: &Client, c: usize, namespaces: &[String]) -> Model {
    let mut model = Model::default();
    let mut random = Random(c as u64 + 1);
    let ports: Vec<u16> = (0..PORTS_PER_CLIENT)
        .map(|i| PORT_BASE + c as u16 * PORTS_PER_CLIENT + i)
        .collect();
    for op in 0..OPERATIONS {
        let detached: Vec<&String> = namespaces
            .iter()
            .filter(|ns| !model.attached.contains_key(*ns))
            .collect();
        let attached: Vec<String> = model.attached.keys().cloned().collect();
        let published: Vec<(String, u16)> = model
            .attached
            .iter()
            .flat_map(|(ns, ports)| ports.iter().map(|p| (ns.clone(), *p)))
            .collect();
        let free: Vec<u16> = ports
            .iter()
            .copied()
            .filter(|p| !published.iter().any(|(_, q)| q == p))
            .collect();
        let what = |error| format!("client {c} operation {op}: {error}");
        match random.below(10) {
            0 | 1 if !detached.is_empty() => {
                let ns = (*random.pick(&detached).expect("some")).clone();
                let request = AttachRequest {
                    netns: ns.clone(),
                    ..AttachRequest::default()
                };
                let _: Endpoint = client
                    .post("/v1/endpoints", &request)
                    .await
                    .unwrap_or_else(|e| panic!("{}", what(format!("attach {ns}: {e}"))));
                model.attached.insert(ns, BTreeSet::new());
            }
            2 if !attached.is_empty() => {
                let ns = random.pick(&attached).expect("some").clone();
                let _: serde_json::Value = client
                    .post(
                        "/v1/detach",
                        &DetachRequest {
                            netns: ns.clone(),
                            network: None,
                        },
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{}", what(format!("detach {ns}: {e}"))));
                model.attached.remove(&ns);
            }
            3..=5 if !attached.is_empty() && !free.is_empty() => {
                let ns = random.pick(&attached).expect("some").clone();
                let port = *random.pick(&free).expect("some");
                let request = PortsRequest {
                    target: ns.clone(),
                    specs: vec![format!("{port}:80")],
                    network: None,
                };
                let _: PortsResponse = client
                    .post("/v1/ports", &request)
                    .await
                    .unwrap_or_else(|e| panic!("{}", what(format!("publish {port} {ns}: {e}"))));
                model.attached.get_mut(&ns).expect("attached").insert(port);
            }
            6 | 7 if !published.is_empty() => {
                let (ns, port) = random.pick(&published).expect("some").clone();
                let request = PortsRequest {
                    target: ns.clone(),
                    specs: vec![format!("{port}:80")],
                    network: None,
                };
                let _: PortsResponse = client
                    .post("/v1/ports/unpublish", &request)
                    .await
                    .unwrap_or_else(|e| panic!("{}", what(format!("unpublish {port} {ns}: {e}"))));
                model.attached.get_mut(&ns).expect("attached").remove(&port);
            }
            _ => {
                // Inspect: what this client made is what the agent lists,
                // whatever the other clients are doing meanwhile.
                let ports: Vec<Port> = client
                    .get("/v1/ports")
                    .await
                    .unwrap_or_else(|e| panic!("{}", what(format!("ports: {e}"))));
                for ns in namespaces {
                    let listed: BTreeSet<u16> = ports
                        .iter()
                        .filter(|p| &p.endpoint == ns)
                        .map(|p| p.host_port)
                        .collect();
                    let expected = model.attached.get(ns).cloned().unwrap_or_default();
                    assert_eq!(listed, expected, "{}", what(format!("ports of {ns}")));
                }
            }
        }
    }
    model
}

/// Entries in the pinned map `name` (hash-like maps: only live entries).
fn map_entries(agent: &Agent, name: &str) -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(agent.bpffs().join(name))
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    dump.as_array().map_or(0, Vec::len)
}

/// Issue 8's concurrency promise: 10 clients × 1,000 operations (attach,
/// publish, unpublish, detach, inspect) at once: no error, the final state
/// is what the operations describe, and the kernel holds exactly that.
#[test]
fn ten_clients_a_thousand_operations_each() {
    require_root!();
    let host = Netns::new("h");
    let agent = Agent::start(&host, &["--subnet", "10.93.0.0/24"]);
    let namespaces: Vec<Vec<Netns>> = (0..CLIENTS)
        .map(|c| {
            (0..NAMESPACES_PER_CLIENT)
                .map(|i| Netns::new(&format!("c{c}n{i}")))
                .collect()
        })
        .collect();
    let socket = agent.socket();
    let models: Vec<Model> = thread::scope(|scope| {
        let handles: Vec<_> = namespaces
            .iter()
            .enumerate()
            .map(|(c, mine)| {
                let names: Vec<String> = mine.iter().map(|ns| ns.name().to_owned()).collect();
                let client = Client::new(&socket);
                scope.spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime")
                        .block_on(client_run(&client, c, &names))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });

    let expected_endpoints: BTreeSet<String> = models
        .iter()
        .flat_map(|m| m.attached.keys().cloned())
        .collect();
    let expected_ports: BTreeSet<(String, u16)> = models
        .iter()
        .flat_map(|m| {
            m.attached
                .iter()
                .flat_map(|(ns, ports)| ports.iter().map(move |p| (ns.clone(), *p)))
        })
        .collect();
    let ps = agent.json(&["ps"]);
    let endpoints = ps.as_array().expect("ps");
    let listed: BTreeSet<String> = endpoints
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(listed, expected_endpoints);
    let ips: BTreeSet<&str> = endpoints
        .iter()
        .map(|e| e["ip"].as_str().expect("ip"))
        .collect();
    assert_eq!(ips.len(), endpoints.len(), "unique addresses");
    let ports = agent.json(&["ports"]);
    let listed: BTreeSet<(String, u16)> = ports
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["endpoint"].as_str().expect("endpoint").to_owned(),
                p["host_port"].as_u64().expect("port") as u16,
            )
        })
        .collect();
    assert_eq!(listed, expected_ports);

    // The kernel holds exactly that: one veth per endpoint, eth0 only in
    // attached namespaces, one port entry per mapping, one endpoint entry
    // per endpoint.
    let veths = host
        .ip("-o link show")
        .lines()
        .filter(|l| l.contains(": veth"))
        .count();
    assert_eq!(veths, expected_endpoints.len(), "no leaked veth");
    for ns in namespaces.iter().flatten() {
        let has_eth0 = ns.ip("-o link show").contains(": eth0");
        assert_eq!(
            has_eth0,
            expected_endpoints.contains(ns.name()),
            "{}",
            ns.name()
        );
    }
    assert_eq!(map_entries(&agent, map_names::PORTS), expected_ports.len());
    assert_eq!(
        map_entries(&agent, map_names::ENDPOINTS),
        expected_endpoints.len()
    );
    let addresses = host.ip("-o -4 addr show");
    assert_eq!(
        addresses.lines().filter(|l| l.contains("10.93.0.")).count(),
        1,
        "only the gateway's address on the host: {addresses}"
    );
    eprintln!(
        "{} operations: {} endpoints and {} ports at the end",
        CLIENTS * OPERATIONS,
        expected_endpoints.len(),
        expected_ports.len()
    );
}
