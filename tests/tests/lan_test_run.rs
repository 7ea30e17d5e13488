// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `netd_lan_tc` through BPF_PROG_TEST_RUN: what a LAN endpoint (macvlan,
//! ipvlan) may send, frame by frame: its own MAC, address and ARP sender;
//! the network's internal and ICC policy; its counters. Nothing is ever
//! rewritten: a passed frame leaves as it came.

use std::net::Ipv4Addr;

use netd::datapath::Maps;
use netd_common::{
    drop,
    endpoint::{EndpointInfo, LAN_IFINDEX_BASE, NET_INTERNAL, NET_NO_ICC, NetworkInfo},
};
use netd_tests::{
    bpf::Bpf,
    fixture::{TC_ACT_OK, TC_ACT_SHOT, drops},
    netns::{NetNsGuard, Netns},
    pktgen::{ETH_P_ARP, Ipv4Packet, L4, ethernet},
    require_root,
};

const LAN_TC: &str = "netd_lan_tc";
const NETWORK: u16 = 5;
const DEVICE: u32 = LAN_IFINDEX_BASE;
const ME: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 3);
const MY_MAC: [u8; 6] = [0x02, 0x42, 192, 168, 77, 3];
const SIBLING: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 4);
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// A namespace holding a device with the endpoint's ifindex (a test run
/// on an interface needs one), entered until the guard drops.
fn device() -> (NetNsGuard, Netns) {
    let ns = Netns::new("lanrun");
    ns.ip(&format!(
        "link add lan9 index {DEVICE} type veth peer name lan10"
    ));
    // Left (the guard drops first) before the namespace goes.
    (ns.enter(), ns)
}

/// The datapath with one LAN network of `flags`, this endpoint's device
/// and a sibling endpoint on the same network.
fn lan(flags: u32) -> Bpf {
    let mut bpf = Bpf::load();
    let mut maps = Maps::new(bpf.ebpf_mut());
    maps.set_network_settings(
        NETWORK,
        &NetworkInfo {
            subnet_be: [192, 168, 77, 0],
            mask_be: [255, 255, 255, 0],
            gateway_be: ROUTER.octets(),
            flags,
            ..NetworkInfo::default()
        },
    )
    .expect("network");
    maps.set_veth(DEVICE, ME, MY_MAC, NETWORK).expect("device");
    maps.count_endpoint(DEVICE).expect("counters");
    for (ip, mac, ifindex) in [
        (ME, MY_MAC, DEVICE),
        (SIBLING, [2, 0x42, 192, 168, 77, 4], DEVICE + 1),
    ] {
        maps.set_endpoint(
            ip,
            EndpointInfo {
                ifindex,
                mac,
                network: NETWORK,
            },
        )
        .expect("endpoint");
    }
    bpf
}

fn arp(sha: [u8; 6], spa: Ipv4Addr, src_mac: [u8; 6]) -> Vec<u8> {
    let mut body = vec![0, 1, 8, 0, 6, 4, 0, 1];
    body.extend_from_slice(&sha);
    body.extend_from_slice(&spa.octets());
    body.extend_from_slice(&[0; 6]);
    body.extend_from_slice(&ROUTER.octets());
    ethernet([0xff; 6], src_mac, ETH_P_ARP, &body)
}

fn ping(src: Ipv4Addr, dst: Ipv4Addr, src_mac: [u8; 6]) -> Vec<u8> {
    Ipv4Packet::new(src, dst, L4::icmp_echo(true, 7, 1))
        .with_macs(ROUTER_MAC, src_mac)
        .build()
}

/// Runs the program on `frame` from the endpoint's device: the verdict,
/// and that a passed frame is untouched.
fn verdict(bpf: &mut Bpf, frame: &[u8]) -> i32 {
    let run = bpf.run_tc_on(LAN_TC, frame, DEVICE);
    if run.verdict == TC_ACT_OK {
        assert_eq!(
            run.data, frame,
            "a LAN endpoint's frames are never rewritten"
        );
    }
    run.verdict
}

#[test]
fn a_lan_endpoint_sends_only_from_its_own_mac_address_and_arp_sender() {
    require_root!();
    let (_inside, _ns) = device();
    let mut bpf = lan(0);
    let other_mac = [0x02, 0, 0, 0, 0, 0x99];
    let other_ip = Ipv4Addr::new(192, 168, 77, 99);
    for (frame, expected, what) in [
        (ping(ME, ROUTER, MY_MAC), TC_ACT_OK, "its own"),
        (
            ping(other_ip, ROUTER, MY_MAC),
            TC_ACT_SHOT,
            "another address",
        ),
        (ping(ME, ROUTER, other_mac), TC_ACT_SHOT, "another MAC"),
        (arp(MY_MAC, ME, MY_MAC), TC_ACT_OK, "ARP as itself"),
        (
            arp(MY_MAC, Ipv4Addr::UNSPECIFIED, MY_MAC),
            TC_ACT_OK,
            "an address probe",
        ),
        (
            arp(MY_MAC, ROUTER, MY_MAC),
            TC_ACT_SHOT,
            "ARP claiming the router",
        ),
        (
            arp(other_mac, ME, MY_MAC),
            TC_ACT_SHOT,
            "ARP with another sender MAC",
        ),
        (
            arp(MY_MAC, ME, other_mac),
            TC_ACT_SHOT,
            "ARP in a frame of another MAC",
        ),
        (
            ethernet(ROUTER_MAC, MY_MAC, 0x86dd, &[0; 40]),
            TC_ACT_OK,
            "IPv6: not checked yet",
        ),
        (
            ethernet(ROUTER_MAC, MY_MAC, 0x8100, &[0; 46]),
            TC_ACT_SHOT,
            "a VLAN tag of its own",
        ),
    ] {
        assert_eq!(verdict(&mut bpf, &frame), expected, "{what}");
    }
    assert_eq!(drops(&mut bpf, drop::SPOOFED), 6);
    let counted = Maps::new(bpf.ebpf_mut())
        .endpoint_stats(DEVICE)
        .expect("counters");
    assert_eq!((counted.packets, counted.dropped), (10, 6));
    assert!(counted.bytes > 10 * 42);
    // A device netd does not know (here `lo`) is not netd's to police.
    let run = bpf.run_tc_on(LAN_TC, &ping(other_ip, ROUTER, other_mac), 1);
    assert_eq!(run.verdict, TC_ACT_OK);
}

#[test]
fn a_lan_networks_policy_is_applied_per_endpoint() {
    require_root!();
    let (_inside, _ns) = device();
    // enable_icc=false: not to the network's other containers; the LAN's
    // other hosts are fine.
    let mut bpf = lan(NET_NO_ICC);
    assert_eq!(verdict(&mut bpf, &ping(ME, SIBLING, MY_MAC)), TC_ACT_SHOT);
    assert_eq!(verdict(&mut bpf, &ping(ME, ROUTER, MY_MAC)), TC_ACT_OK);
    assert_eq!(drops(&mut bpf, drop::ICC_DENIED), 1);
    // Internal: to the network's containers and the link's broadcast only.
    let mut bpf = lan(NET_INTERNAL);
    assert_eq!(verdict(&mut bpf, &ping(ME, SIBLING, MY_MAC)), TC_ACT_OK);
    assert_eq!(verdict(&mut bpf, &ping(ME, ROUTER, MY_MAC)), TC_ACT_SHOT);
    let outside = Ipv4Addr::new(8, 8, 8, 8);
    assert_eq!(verdict(&mut bpf, &ping(ME, outside, MY_MAC)), TC_ACT_SHOT);
    let broadcast = Ipv4Addr::new(255, 255, 255, 255);
    assert_eq!(verdict(&mut bpf, &ping(ME, broadcast, MY_MAC)), TC_ACT_OK);
    assert_eq!(drops(&mut bpf, drop::INTERNAL_NETWORK), 2);
}
