// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Bad input through the CLI and the API (issue 8, §3): every invalid
//! request is refused with one specific error (CLI: one line on stderr and a
//! non-zero exit; API: a 4xx status and a JSON `message`), and changes
//! nothing: links, addresses and routes of every namespace involved, the
//! agent's state file and journal, what `netd ps` and `netd ports` say,
//! every pinned map's contents (dumped by bpftool; the two 65,536-slot
//! arrays read slot by slot), the pinned links and the programs attached in
//! the host namespace are compared before and after each request. Only the
//! per-hook and drop counters are left out: the kernel's own packets move
//! them. A valid request at the end must show in the same snapshot.
//!
//! # Every bad-input case, and where it lives
//!
//! 98 cases in all, each refused with a specific error and a non-zero exit
//! or a 4xx status. Those before this file check that nothing changed each
//! in its own way (the state, `ps`, links and addresses, or the
//! `NETD_PORTS` dump); this file's check everything above:
//!
//! | # | request | where |
//! |---|---|---|
//! | 1-16 | attach: unknown namespace name; a file that is not a namespace; another kind of namespace (`/proc/self/ns/mnt`); a namespace attached already; `--ip` outside the subnet, the gateway, taken, broadcast, not an address; `--mac` not a MAC, multicast; `--ifname` over 15 bytes; `--name` taken, invalid; `detach --name` unknown; an interface name taken inside the namespace (kernel refusal, rolled back) | agent.rs `bad_attach_requests_change_nothing` |
//! | 17 | attach to a full subnet | agent.rs `full_subnet_is_a_clear_error` |
//! | 18 | attach to a full bridge (1023 ports) | agent.rs `bridge_port_limit_is_a_clear_error` |
//! | 19-25 | agent flags: subnet overlapping an address, MTU 20, MTU 70000, bridge name over 15 bytes, a bridge name naming a non-bridge, unknown uplink, gateway outside the subnet | agent.rs `bad_agent_flags_change_nothing` |
//! | 26 | an agent flag contradicting the saved network | agent.rs `saved_network_wins_and_contradicting_flags_are_refused` |
//! | 27-32 | API: JSON cut short, unknown field, unknown namespace (404), unknown path (404), DELETE of an unknown endpoint (404), a body over 1 MiB (413) | agent.rs `api_speaks_http_and_json_on_a_root_only_socket` |
//! | 33-45 | publish: host port -1, 65536, a range past 65535, ranges of different lengths, a backwards range, `/sctp`, an invalid host IP, a host IP not the host's, a port published already, one taken spec among several (all or none), a port a host socket listens on, an unknown endpoint; unpublish to an unknown endpoint | publish.rs `bad_publish_requests_change_nothing` |
//! | 46 | publish on an internal network | outbound.rs `internal_network_has_no_outside` |
//!
//! In this file (`cli_requests`, `api_requests`, `requests_to_a_dead_endpoint`):
//!
//! | # | request | refused with |
//! |---|---|---|
//! | 47 | publish `9000:0` (container port 0) | container port 0 |
//! | 48 | publish `9000:65536` | not a port number |
//! | 49 | publish `9000-9001:65535-65536` (container range past 65535) | not a port number |
//! | 50 | publish `9000:80-81` (one host port, two container ports) | different lengths |
//! | 51 | publish `9000:80/icmp` | unsupported protocol |
//! | 52 | publish `1.2.3:9000:80` | not an IP address |
//! | 53 | publish `[::1]:9000:80` (IPv6 host address) | is an IPv6 address |
//! | 54 | publish `9000:80:80:80` | "9000:80" is not an IP address |
//! | 55 | unpublish `-- -1:80` | "-1" is not a port number |
//! | 56 | publish `9000:80 9000:80` (the same mapping twice in one request) | already published by (this request) |
//! | 57 | publish `9000-9005:80 9003:81` (overlapping in one request) | already published by (this request) |
//! | 58 | publish `8075-8085:80` over a published 8080 | already published by endpoint |
//! | 59 | publish `10.250.0.1:8080:80` over a published 0.0.0.0:8080 | already published by endpoint |
//! | 60 | publish `5301:53/udp`, a host UDP socket's port | in use on the host |
//! | 61 | publish `8086:80`, a port a host socket listens on at 127.0.0.1 | in use on the host |
//! | 62 | publish `8084-8087:80`, a range over a host listener | in use on the host |
//! | 63 | publish `8088:80`, a port a host socket listens on at [::] | in use on the host |
//! | 64 | publish to a namespace created then deleted | no endpoint for |
//! | 65 | publish to `/proc/self/ns/net` (a namespace, not attached) | no endpoint for |
//! | 66 | attach a namespace created then deleted, by name | does not exist |
//! | 67 | the same by path | does not exist |
//! | 68 | attach `-p 8080:80` (taken): the attach goes too | already published |
//! | 69 | attach `-p 8080:80/tcp/udp` | one protocol per spec |
//! | 70 | `detach --name` an unknown 64-digit ID | no endpoint named |
//! | 71 | `network inspect ghost` (an unknown network) | exit 1: no such network |
//! | 72 | `publish 8080:80` without a target | exit 2: 2 values required |
//! | 72a | `network create netd` (the default network's name) | already exists |
//! | 72b | `network create -x` | exit 2: unexpected argument |
//! | 72c | `network create a/b` | invalid network name |
//! | 72d | `network create --subnet` overlapping the default network | overlaps |
//! | 72e | `network create --gateway` outside its subnet | not a host address of the subnet |
//! | 72f | `network create -o` an option Docker does not have | unsupported network option |
//! | 72g | `network rm netd` | is the default network |
//! | 72h | `network rm` an unknown network | no such network |
//! | 72i | `attach --network` an unknown network | no such network |
//! | 72j | `publish --network` an unknown network | no such network |
//! | 73 | API: malformed JSON (`{"target":`) | 400 invalid request body |
//! | 74 | API: `specs` a string, not a list | 400 invalid type |
//! | 75 | API: `specs` missing | 400 missing field |
//! | 76 | API: an unknown field | 400 unknown field |
//! | 77 | API: a body that is not UTF-8 | 400 invalid request body |
//! | 78 | API: JSON followed by garbage | 400 trailing characters |
//! | 79 | API: an empty body | 400 EOF while parsing |
//! | 80 | API: `netns` a number | 400 invalid type |
//! | 81 | API: valid JSON over 1 MiB | 413 |
//! | 82 | API: a chunked body over 1 MiB (no length given) | 413 |
//! | 83 | API: a Content-Length over 1 MiB, the body never sent, the client waiting | 413 at once |
//! | 84 | API: cut off mid-body (Content-Length larger than sent, then shutdown) | 400 reading the request body |
//! | 85 | API: cut off mid-chunk (chunked, then shutdown) | 400 reading the request body |
//! | 86 | API: cut off mid-headers, then shutdown | no answer, nothing done |
//! | 87 | API: cut off mid-body, then the socket closed | nothing done, the next request served |
//! | 88 | API: not HTTP at all | 400 |
//! | 89 | API: unknown path `/v2/status` | 404 no such API path |
//! | 90 | API: unknown path `/v1/ports/nope` | 404 no such API path |
//! | 91 | API: unknown method `PUT /v1/ports` | 405 method not allowed |
//! | 92 | API: unknown method `PATCH /v1/status` | 405 method not allowed |
//! | 93 | API: GET (inspect) an unknown endpoint | 404 no endpoint named |
//! | 94 | API: DELETE an endpoint named `../../etc` | 404 no endpoint named |
//! | 95 | API: attach with `"ports": ["65536:80"]` | 400 not a port number |
//! | 96 | API: publish to a deleted namespace's path | 404 no endpoint for |
//! | 97 | publish to an endpoint whose namespace was deleted | is broken: its host veth is missing |
//! | 98 | the same through the API | 409 is broken |

use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    net::Shutdown,
    os::unix::net::UnixStream,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData, PerCpuArray};
use netd_common::{
    map_names,
    ports::{Mapping, MappingStats},
};
use netd_tests::{
    agent::Agent,
    netns::{Netns, Process},
    require_root,
    topology::{Scratch, Topology, wait_listening},
};
use serde_json::Value;

/// Maps whose contents move on their own: per-hook and drop counters count
/// whatever the kernel itself sends (IGMP reports, IPv6 neighbour
/// discovery), requests or not. Every other pinned map is compared.
const COUNTER_MAPS: [&str; 2] = [map_names::PROTO_STATS, map_names::DROPS];

/// The 65,536-slot arrays, read here slot by slot instead: bpftool takes
/// seconds to print them whole (tens of MB of JSON, nearly all empty
/// slots), and their slots in use are what matters.
const SLOT_ARRAYS: [&str; 2] = [map_names::MAPPINGS, map_names::MAPPING_STATS];

/// Other dumps larger than this are compared by digest.
const DIGEST_ABOVE: u64 = 64 << 10;

/// The slots in use (not all zero) of the pinned array `NETD_MAPPINGS` or
/// per-CPU array `NETD_MAPPING_STATS` under `bpffs`, one line each.
fn slots_in_use(bpffs: &Path, name: &str) -> String {
    let path = bpffs.join(name);
    let data = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = Vec::new();
    if name == map_names::MAPPINGS {
        let array = Array::<_, Mapping>::try_from(Map::Array(data)).expect("an array");
        for (slot, value) in array.iter().enumerate() {
            let value = value.expect("a slot");
            if value != Mapping::default() {
                lines.push(format!("{slot}: {value:?}"));
            }
        }
    } else {
        let array =
            PerCpuArray::<_, MappingStats>::try_from(Map::PerCpuArray(data)).expect("an array");
        for (slot, values) in array.iter().enumerate() {
            let values = values.expect("a slot");
            if values.iter().any(|v| *v != MappingStats::default()) {
                lines.push(format!("{slot}: {:?}", values.iter().collect::<Vec<_>>()));
            }
        }
    }
    lines.join("\n")
}

/// A namespace's links (name, index, MAC, MTU, bridge), IPv4 addresses and
/// routes. Not operational states or IPv6 link-local addresses: those
/// change on their own while links settle.
fn network_of(ns: &Netns) -> String {
    let links: Vec<Value> = serde_json::from_str(&ns.ip("-j link show")).expect("ip -j link");
    let mut lines: Vec<String> = links
        .iter()
        .map(|l| {
            format!(
                "link {} #{} {} mtu {} master {}",
                l["ifname"], l["ifindex"], l["address"], l["mtu"], l["master"]
            )
        })
        .collect();
    let addrs: Vec<Value> = serde_json::from_str(&ns.ip("-4 -j addr show")).expect("ip -j addr");
    for link in &addrs {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            lines.push(format!(
                "addr {} {}/{}",
                link["ifname"], a["local"], a["prefixlen"]
            ));
        }
    }
    lines.extend(
        ns.ip("-4 route show table all")
            .lines()
            .map(|r| format!("route {r}")),
    );
    lines.join("\n")
}

/// Everything a bad request must leave as it was, by part.
struct Snapshot(BTreeMap<String, String>);

impl Snapshot {
    fn take(t: &Topology, namespaces: &[&Netns], scratch: &Scratch) -> Self {
        let mut parts = BTreeMap::new();
        let agent = &t.agent;
        parts.insert("state.json".to_owned(), format!("{:?}", agent.state()));
        parts.insert(
            "state.journal".to_owned(),
            format!(
                "{:?}",
                fs::read_to_string(agent.state_dir().join("state.journal")).ok()
            ),
        );
        parts.insert("netd ps".to_owned(), agent.ok(&["ps", "--json"]));
        parts.insert("netd ports".to_owned(), agent.ok(&["ports", "--json"]));
        for ns in std::iter::once(&t.host).chain(namespaces.iter().copied()) {
            parts.insert(format!("namespace {}", ns.name()), network_of(ns));
        }
        parts.insert(
            "attached programs".to_owned(),
            t.host.sh("bpftool -j net show"),
        );
        parts.extend(pinned_objects(&agent.bpffs(), scratch));
        for name in SLOT_ARRAYS {
            parts.insert(
                format!("pinned {name} (slots in use)"),
                slots_in_use(&agent.bpffs(), name),
            );
        }
        Self(parts)
    }

    /// Panics naming the first part that differs from `before`, and its
    /// first differing line (snapshots are too large to print whole).
    fn assert_same_as(&self, before: &Self, what: &str) {
        for (part, old) in &before.0 {
            let new = self.0.get(part).map_or("(gone)", String::as_str);
            if old != new {
                let diff = old
                    .lines()
                    .zip(new.lines())
                    .find(|(a, b)| a != b)
                    .map_or_else(
                        || "(lengths differ)".to_owned(),
                        |(a, b)| format!("{a}\n  became\n{b}"),
                    );
                panic!("{what} changed {part}:\n{diff}");
            }
        }
        let added: Vec<&String> = self
            .0
            .keys()
            .filter(|k| !before.0.contains_key(*k))
            .collect();
        assert!(added.is_empty(), "{what} added {added:?}");
    }
}

/// Every other pinned map's contents (small ones as bpftool prints them,
/// large ones as their size and SHA-256) and every pinned link's program,
/// dumped in parallel.
fn pinned_objects(bpffs: &Path, scratch: &Scratch) -> Vec<(String, String)> {
    let skip = COUNTER_MAPS
        .iter()
        .chain(&SLOT_ARRAYS)
        .copied()
        .collect::<Vec<_>>()
        .join("|");
    let script = format!(
        "cd {dir} && rm -f ./*.dump && \
         for m in {bpffs}/*; do \
           [ -f \"$m\" ] || continue; n=${{m##*/}}; \
           case $n in {skip}) continue;; esac; \
           bpftool -j map dump pinned \"$m\" > \"$n.dump\" 2>&1 & \
         done; \
         for l in {bpffs}/links/*; do \
           [ -e \"$l\" ] || continue; \
           bpftool -j link show pinned \"$l\" > \"link-${{l##*/}}.dump\" 2>&1 & \
         done; wait; \
         for f in *.dump; do \
           size=$(stat -c %s \"$f\"); echo \"== $f\"; \
           if [ \"$size\" -gt {DIGEST_ABOVE} ]; then echo \"$size bytes, sha256 $(sha256sum < \"$f\")\"; \
           else cat \"$f\"; echo; fi; \
         done",
        dir = scratch.0.display(),
        bpffs = bpffs.display(),
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("dumping pinned objects");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let parts: Vec<(String, String)> = text
        .split("== ")
        .filter(|s| !s.is_empty())
        .map(|section| {
            let (name, body) = section.split_once('\n').unwrap_or((section, ""));
            (format!("pinned {name}"), body.to_owned())
        })
        .collect();
    assert!(
        parts.iter().any(|(n, _)| n.contains(map_names::PORTS))
            && parts.iter().any(|(n, _)| n.contains("link-")),
        "no pinned maps or links found under {}",
        bpffs.display()
    );
    parts
}

/// How a bad request must be refused.
enum Refusal {
    /// The CLI exits with this code and says this (first line of stderr;
    /// the only line for failed operations).
    Exit(i32, String),
    /// The API answers this status, with this in its JSON `message`.
    Status(u16, String),
    /// The API answers this status from its HTTP layer, before any JSON.
    Bare(u16),
    /// There is no answer (the request never became one): the connection
    /// is closed.
    Closed,
}

/// How a raw API request ends.
#[derive(Clone, Copy)]
enum Ending {
    /// The client shuts down its writing half and reads the answer: how a
    /// request cut off mid-stream ends.
    HalfClose,
    /// The client waits for the answer with the connection open.
    Wait,
    /// The client closes the connection without reading.
    Close,
}

/// A bad request.
enum Request {
    Cli(Vec<String>),
    Api(Vec<u8>, Ending),
}

struct Case {
    what: String,
    request: Request,
    refusal: Refusal,
}

fn cli(args: &[&str], code: i32, message: &str) -> Case {
    Case {
        what: format!("netd {}", args.join(" ")),
        request: Request::Cli(args.iter().map(|a| (*a).to_owned()).collect()),
        refusal: Refusal::Exit(code, message.to_owned()),
    }
}

/// An HTTP/1.1 request with a Content-Length that fits its body.
fn http(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "{method} {path} HTTP/1.1\r\nHost: netd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn api(what: &str, bytes: Vec<u8>, ending: Ending, refusal: Refusal) -> Case {
    Case {
        what: format!("API: {what}"),
        request: Request::Api(bytes, ending),
        refusal,
    }
}

fn status(code: u16, message: &str) -> Refusal {
    Refusal::Status(code, message.to_owned())
}

/// What the API answered: the status and body, or `None` if the
/// connection closed (or stayed silent for five seconds) without one.
fn exchange(socket: &Path, bytes: &[u8], ending: Ending) -> Option<(u16, String)> {
    let mut stream = UnixStream::connect(socket).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // The agent may answer (413) and close before reading all of a large
    // request: its answer is still there to read.
    if let Err(err) = stream.write_all(bytes) {
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "writing the request: {err}"
        );
    }
    match ending {
        Ending::HalfClose => stream.shutdown(Shutdown::Write).expect("shutdown"),
        Ending::Wait => {}
        Ending::Close => return None,
    }
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        // Stop at the end of one whole answer: the server may keep the
        // connection open after it.
        if let Some((head, body)) = split_answer(&answer)
            && content_length(head).is_some_and(|len| body.len() >= len)
        {
            break;
        }
    }
    let (head, body) = split_answer(&answer)?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, String::from_utf8_lossy(body).into_owned()))
}

fn split_answer(answer: &[u8]) -> Option<(&str, &[u8])> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    Some((head, &answer[end + 4..]))
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// Runs `case` against the agent and asserts it is refused as it must be.
fn refused(agent: &Agent, case: &Case) {
    let what = &case.what;
    match (&case.request, &case.refusal) {
        (Request::Cli(args), Refusal::Exit(code, message)) => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = agent.cli(&args);
            assert_eq!(run.code, *code, "{what}: exit code ({run:?})");
            let first = run.stderr.lines().next().unwrap_or_default();
            assert!(
                first.contains(message.as_str()),
                "{what}: expected {message:?} in {:?}",
                run.stderr
            );
            if *code == 1 {
                assert_eq!(
                    run.stderr.trim().lines().count(),
                    1,
                    "{what}: one line: {}",
                    run.stderr
                );
            }
        }
        (Request::Api(bytes, ending), refusal) => {
            let answer = exchange(&agent.socket(), bytes, *ending);
            match refusal {
                Refusal::Status(code, message) => {
                    let (got, body) = answer.unwrap_or_else(|| panic!("{what}: no answer"));
                    assert_eq!(got, *code, "{what}: status ({body})");
                    let json: Value = serde_json::from_str(&body)
                        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body:?}"));
                    let said = json["message"].as_str().unwrap_or_default();
                    assert!(
                        said.contains(message.as_str()),
                        "{what}: expected {message:?} in {body}"
                    );
                    assert!(json["kind"].is_string(), "{what}: {body}");
                }
                Refusal::Bare(code) => {
                    let (got, body) = answer.unwrap_or_else(|| panic!("{what}: no answer"));
                    assert_eq!(got, *code, "{what}: status ({body})");
                }
                Refusal::Closed => {
                    assert_eq!(answer, None, "{what}: answered");
                }
                Refusal::Exit(..) => unreachable!("an API request exits nothing"),
            }
        }
        (Request::Cli(_), _) => unreachable!("a CLI request is refused with an exit"),
    }
}

/// Runs every case with a snapshot of `namespaces` (and the host) before
/// and after each. Then, as a control, makes the valid request `valid`
/// and checks that the snapshot sees it: in the state, in `netd ports`, and
/// in the maps a publish writes (so "unchanged" above meant something).
fn run(t: &Topology, namespaces: &[&Netns], cases: &[Case], valid: impl FnOnce()) {
    let scratch = Scratch::new();
    let mut before = Snapshot::take(t, namespaces, &scratch);
    for case in cases {
        refused(&t.agent, case);
        let after = Snapshot::take(t, namespaces, &scratch);
        after.assert_same_as(&before, &case.what);
        before = after;
    }
    valid();
    let after = Snapshot::take(t, namespaces, &scratch);
    let changed = |part: &str| before.0.get(part) != after.0.get(part);
    assert!(
        changed("state.json") || changed("state.journal"),
        "the control publish is not in the state"
    );
    for part in [
        "netd ports",
        "pinned NETD_PORTS.dump",
        "pinned NETD_MAPPINGS (slots in use)",
    ] {
        assert!(changed(part), "the control publish did not change {part}");
    }
}

/// A process in `ns` holding `port` the way `how` says (`tcp4`, `tcp6`,
/// `udp4`) on `addr`.
fn listener(ns: &Netns, how: &str, addr: &str, port: u16) -> Process {
    let (family, kind) = match how {
        "tcp4" => ("AF_INET", "SOCK_STREAM"),
        "tcp6" => ("AF_INET6", "SOCK_STREAM"),
        _ => ("AF_INET", "SOCK_DGRAM"),
    };
    let listen = if kind == "SOCK_STREAM" {
        "s.listen(8)\n"
    } else {
        ""
    };
    let process = ns.spawn(&format!(
        "python3 -c \"import socket,time\ns=socket.socket(socket.{family},socket.{kind})\ns.bind(('{addr}',{port}))\n{listen}time.sleep(3600)\n\""
    ));
    wait_listening(ns, port, kind == "SOCK_DGRAM");
    process
}

#[test]
fn cli_requests() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "8080:80"]);
    let c2 = t.container("c2", &[]);
    let fresh = Netns::new("new");
    let gone = Netns::new("gone");
    let gone_name = gone.name().to_owned();
    let gone_path = gone.path().display().to_string();
    drop(gone);
    let _udp = listener(&t.host, "udp4", "0.0.0.0", 5301);
    let _lo = listener(&t.host, "tcp4", "127.0.0.1", 8086);
    let _v6 = listener(&t.host, "tcp6", "::", 8088);
    let (c1n, c2n, new) = (c1.name(), c2.name(), fresh.name());
    let held_by_c1 = format!("is already published by endpoint {c1n}");
    let unknown_id = "f".repeat(64);

    let cases = vec![
        cli(
            &["publish", "9000:0", c2n],
            1,
            "container port 0: a container port is 1-65535",
        ),
        cli(
            &["publish", "9000:65536", c2n],
            1,
            "\"65536\" is not a port number",
        ),
        cli(
            &["publish", "9000-9001:65535-65536", c2n],
            1,
            "\"65535-65536\" is not a port number",
        ),
        cli(
            &["publish", "9000:80-81", c2n],
            1,
            "the host range 9000 and the container range 80-81 have different lengths",
        ),
        cli(
            &["publish", "9000:80/icmp", c2n],
            1,
            "unsupported protocol \"icmp\"",
        ),
        cli(
            &["publish", "1.2.3:9000:80", c2n],
            1,
            "\"1.2.3\" is not an IP address",
        ),
        cli(
            &["publish", "[::1]:9000:80", c2n],
            1,
            "::1 is an IPv6 address: netd publishes on IPv4 host addresses only",
        ),
        cli(
            &["publish", "9000:80:80:80", c2n],
            1,
            "invalid port spec \"9000:80:80:80\": \"9000:80\" is not an IP address",
        ),
        cli(
            &["unpublish", "--", "-1:80", c1n],
            1,
            "\"-1\" is not a port number",
        ),
        cli(
            &["publish", "9000:80", "9000:80", c2n],
            1,
            "9000/tcp on 0.0.0.0 is already published by endpoint (this request)",
        ),
        cli(
            &["publish", "9000-9005:80", "9003:81", c2n],
            1,
            "9003/tcp on 0.0.0.0 is already published by endpoint (this request)",
        ),
        cli(&["publish", "8075-8085:80", c2n], 1, &held_by_c1),
        cli(&["publish", "10.250.0.1:8080:80", c2n], 1, &held_by_c1),
        cli(
            &["publish", "5301:53/udp", c2n],
            1,
            "5301/udp on 0.0.0.0 is in use on the host: a process has 0.0.0.0:5301/udp bound",
        ),
        cli(
            &["publish", "8086:80", c2n],
            1,
            "8086/tcp on 0.0.0.0 is in use on the host: a process has 127.0.0.1:8086/tcp bound",
        ),
        cli(
            &["publish", "8084-8087:80", c2n],
            1,
            "8086/tcp on 0.0.0.0 is in use on the host",
        ),
        cli(
            &["publish", "8088:80", c2n],
            1,
            "8088/tcp on 0.0.0.0 is in use on the host: a process has [::]:8088/tcp bound",
        ),
        cli(
            &["publish", "9000:80", &gone_name],
            1,
            &format!("no endpoint for {gone_name}"),
        ),
        cli(
            &["publish", "9000:80", "/proc/self/ns/net"],
            1,
            "no endpoint for /proc/self/ns/net",
        ),
        cli(
            &["attach", &gone_name],
            1,
            &format!("network namespace {gone_name} does not exist"),
        ),
        cli(
            &["attach", &gone_path],
            1,
            &format!("network namespace {gone_path} does not exist"),
        ),
        cli(&["attach", new, "-p", "8080:80"], 1, &held_by_c1),
        cli(
            &["attach", new, "-p", "8080:80/tcp/udp"],
            1,
            "one protocol per spec, not \"tcp/udp\"",
        ),
        cli(
            &["detach", "--name", &unknown_id],
            1,
            &format!("no endpoint named {unknown_id}"),
        ),
        cli(
            &["network", "inspect", "ghost"],
            1,
            "no such network: ghost",
        ),
        cli(
            &["publish", "8080:80"],
            2,
            "error: 2 values required by '<SPEC... TARGET>",
        ),
        cli(
            &["network", "create", "netd"],
            1,
            "network with name netd already exists",
        ),
        cli(&["network", "create", "-x"], 2, "unexpected argument '-x'"),
        cli(
            &["network", "create", "a/b"],
            1,
            "invalid network name \"a/b\"",
        ),
        cli(
            &["network", "create", "x", "--subnet", "172.30.128.0/17"],
            1,
            "overlaps 172.30.0.0/16",
        ),
        cli(
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.99.0.0/24",
                "--gateway",
                "10.98.0.1",
            ],
            1,
            "is not a host address of the subnet",
        ),
        cli(
            &["network", "create", "x", "-o", "enable_icc=false"],
            1,
            "unsupported network option",
        ),
        cli(&["network", "rm", "netd"], 1, "is the default network"),
        cli(&["network", "rm", "ghost"], 1, "no such network: ghost"),
        cli(
            &["attach", new, "--network", "ghost"],
            1,
            "no such network: ghost",
        ),
        cli(
            &["publish", "9001:80", c2n, "--network", "ghost"],
            1,
            "no such network: ghost",
        ),
    ];
    run(&t, &[&c1, &c2, &fresh], &cases, || {
        t.agent.ok(&["publish", "9000:80", c2n]);
    });
}

#[test]
fn api_requests() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "8080:80"]);
    let fresh = Netns::new("new");
    let gone = Netns::new("gone");
    let gone_path = gone.path().display().to_string();
    drop(gone);
    let c1n = c1.name();
    let ports = |body: &str| http("POST", "/v1/ports", body.as_bytes());
    // Valid JSON over 1 MiB: a publish of 120,000 specs.
    let huge = serde_json::json!({
        "target": c1n,
        "specs": vec!["9000:80"; 120_000],
    })
    .to_string();
    assert!(huge.len() > 1 << 20);
    let chunked_huge = {
        let mut bytes =
            b"POST /v1/ports HTTP/1.1\r\nHost: netd\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..40 {
            bytes.extend_from_slice(format!("{:x}\r\n", 32 << 10).as_bytes());
            bytes.extend_from_slice(&[b' '; 32 << 10]);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
        bytes
    };
    let publish_body = format!("{{\"target\":\"{c1n}\",\"specs\":[\"9000:80\"]}}");
    let mut cut_body = format!(
        "POST /v1/ports HTTP/1.1\r\nHost: netd\r\nContent-Length: {}\r\n\r\n",
        publish_body.len() + 50
    )
    .into_bytes();
    cut_body.extend_from_slice(&publish_body.as_bytes()[..20]);
    let mut cut_chunk =
        b"POST /v1/ports HTTP/1.1\r\nHost: netd\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    cut_chunk.extend_from_slice(format!("{:x}\r\n", publish_body.len()).as_bytes());
    cut_chunk.extend_from_slice(&publish_body.as_bytes()[..20]);
    let too_long_declared =
        b"POST /v1/ports HTTP/1.1\r\nHost: netd\r\nContent-Length: 5000000\r\n\r\n{".to_vec();
    let invalid_ports = format!(
        "{{\"netns\":\"{}\",\"ports\":[\"65536:80\"]}}",
        fresh.name()
    );
    let to_gone = format!("{{\"target\":\"{gone_path}\",\"specs\":[\"9000:80\"]}}");

    let cases = vec![
        api(
            "malformed JSON",
            ports("{\"target\":"),
            Ending::Wait,
            status(400, "invalid request body: EOF while parsing"),
        ),
        api(
            "specs a string",
            ports(&format!("{{\"target\":\"{c1n}\",\"specs\":\"9000:80\"}}")),
            Ending::Wait,
            status(400, "invalid request body: invalid type: string"),
        ),
        api(
            "specs missing",
            ports(&format!("{{\"target\":\"{c1n}\"}}")),
            Ending::Wait,
            status(400, "missing field `specs`"),
        ),
        api(
            "an unknown field",
            ports(&format!(
                "{{\"target\":\"{c1n}\",\"specs\":[\"9000:80\"],\"force\":true}}"
            )),
            Ending::Wait,
            status(400, "unknown field `force`"),
        ),
        api(
            "a body that is not UTF-8",
            http("POST", "/v1/ports", b"\xff\xfe\xfd"),
            Ending::Wait,
            status(400, "invalid request body"),
        ),
        api(
            "JSON followed by garbage",
            ports(&format!("{publish_body}garbage")),
            Ending::Wait,
            status(400, "trailing characters"),
        ),
        api(
            "an empty body",
            http("POST", "/v1/detach", b""),
            Ending::Wait,
            status(400, "EOF while parsing"),
        ),
        api(
            "netns a number",
            http("POST", "/v1/detach", b"{\"netns\":5}"),
            Ending::Wait,
            status(400, "invalid type: integer `5`, expected a string"),
        ),
        api(
            "valid JSON over 1 MiB",
            ports(&huge),
            Ending::Wait,
            status(413, "request body larger than 1048576 bytes"),
        ),
        api(
            "a chunked body over 1 MiB",
            chunked_huge,
            Ending::Wait,
            status(413, "request body larger than 1048576 bytes"),
        ),
        api(
            "a Content-Length over 1 MiB, the body never sent",
            too_long_declared,
            Ending::Wait,
            status(413, "request body larger than 1048576 bytes"),
        ),
        api(
            "cut off mid-body",
            cut_body.clone(),
            Ending::HalfClose,
            status(400, "reading the request body"),
        ),
        api(
            "cut off mid-chunk",
            cut_chunk,
            Ending::HalfClose,
            status(400, "reading the request body"),
        ),
        api(
            "cut off mid-headers",
            b"POST /v1/ports HTTP/1.1\r\nHost: ne".to_vec(),
            Ending::HalfClose,
            Refusal::Closed,
        ),
        api(
            "cut off mid-body, then closed",
            cut_body,
            Ending::Close,
            Refusal::Closed,
        ),
        api(
            "not HTTP",
            b"hello, netd\r\n\r\n".to_vec(),
            Ending::Wait,
            Refusal::Bare(400),
        ),
        api(
            "GET /v2/status",
            http("GET", "/v2/status", b""),
            Ending::Wait,
            status(404, "no such API path"),
        ),
        api(
            "POST /v1/ports/nope",
            http("POST", "/v1/ports/nope", b"{}"),
            Ending::Wait,
            status(404, "no such API path"),
        ),
        api(
            "PUT /v1/ports",
            http("PUT", "/v1/ports", publish_body.as_bytes()),
            Ending::Wait,
            status(405, "method PUT is not allowed on /v1/ports"),
        ),
        api(
            "PATCH /v1/status",
            http("PATCH", "/v1/status", b"{}"),
            Ending::Wait,
            status(405, "method PATCH is not allowed on /v1/status"),
        ),
        api(
            "GET an unknown endpoint",
            http("GET", "/v1/endpoints/ghost", b""),
            Ending::Wait,
            status(404, "no endpoint named ghost"),
        ),
        api(
            "DELETE an endpoint named ../../etc",
            http("DELETE", "/v1/endpoints/..%2F..%2Fetc", b""),
            Ending::Wait,
            status(404, "no endpoint named ../../etc"),
        ),
        api(
            "attach with an invalid port",
            http("POST", "/v1/endpoints", invalid_ports.as_bytes()),
            Ending::Wait,
            status(400, "\"65536\" is not a port number"),
        ),
        api(
            "publish to a deleted namespace's path",
            ports(&to_gone),
            Ending::Wait,
            status(404, &format!("no endpoint for {gone_path}")),
        ),
    ];
    run(&t, &[&c1, &fresh], &cases, || {
        let answer = exchange(&t.agent.socket(), &ports(&publish_body), Ending::Wait);
        assert_eq!(answer.map(|(code, _)| code), Some(201), "a valid publish");
    });
}

#[test]
fn requests_to_a_dead_endpoint() {
    require_root!();
    let t = Topology::new(&[]);
    let c1 = t.container("c1", &["-p", "8080:80"]);
    // An endpoint whose namespace is deleted under it: its veth goes with
    // the namespace, the agent still lists it until it is detached.
    let dead = t.container("dead", &[]);
    let name = dead.name().to_owned();
    let veth = t
        .agent
        .json(&["ps"])
        .as_array()
        .and_then(|eps| eps.iter().find(|ep| ep["name"] == name.as_str()))
        .and_then(|ep| ep["host_ifname"].as_str())
        .expect("the endpoint's host veth")
        .to_owned();
    drop(dead);
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.host.ip("-j link show").contains(&veth) {
        assert!(Instant::now() < deadline, "{veth} outlived its namespace");
        thread::sleep(Duration::from_millis(50));
    }
    let broken = format!("endpoint {name} is broken: its host veth {veth} is missing");
    let body = format!("{{\"target\":\"{name}\",\"specs\":[\"9000:80\"]}}");
    let cases = vec![
        cli(&["publish", "9000:80", &name], 1, &broken),
        api(
            "publish to an endpoint whose namespace was deleted",
            http("POST", "/v1/ports", body.as_bytes()),
            Ending::Wait,
            status(409, &broken),
        ),
    ];
    run(&t, &[&c1], &cases, || {
        t.agent.ok(&["publish", "9000:80", c1.name()]);
    });
    // Detaching it is what works, and frees its port and address.
    t.agent.ok(&["detach", &name]);
    assert_eq!(t.agent.json(&["ps"]).as_array().map(Vec::len), Some(1));
}
