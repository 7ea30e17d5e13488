#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR GPL-2.0-only
"""Scapy's rendering of the translations netd's datapath makes: the
reference tests/tests/malformed.rs compares netd's output with, byte for
byte.

stdin: a JSON array of requests, each

    {"name": "tcp_syn_new_flow",            # for error messages
     "frame": "<hex>",                      # the Ethernet frame netd was given
     "eth_dst": "02:42:ac:1e:00:02", "eth_src": "02:00:00:00:00:fe",
     "ttl": 63,                             # the outer IPv4 TTL after translation
     "outer": {"src": "172.30.0.2", "dst": ..., "sport": 80, "dport": ...,
               "echo_id": 7},
     "quoted": {...}}                       # the same, for what an ICMP error quotes

where every field of "outer" and "quoted" may be left out (unchanged);
"sport"/"dport" name TCP or UDP ports and "echo_id" an ICMP echo identifier.

stdout: a JSON array of hex strings, the translated frames, in request order.

Every field is set on Scapy's dissection of the frame, and every checksum
(and the outer IPv4 and UDP lengths) deleted so that Scapy rebuilds them
from scratch. Three rules of NAT apply on top, as netfilter and every
incremental (RFC 1624) translator have them:

- a UDP checksum of 0 ("none", RFC 768) stays 0;
- a checksum that was wrong before the translation is exactly as wrong
  after it: NAT adjusts checksums, it neither validates nor repairs them.
  The error is measured against Scapy's own checksum of the frame as it
  came, and added to Scapy's checksum of the translation;
- an ICMP error's quote is rebuilt by Scapy and cut back to the quote's
  length, as the node that sent the error cut it. A quoted transport
  checksum whose datagram the quote does not hold whole cannot be
  recomputed (the bytes it covers are missing): it is adjusted for the
  fields that changed (RFC 1624).

Any frame Scapy does not rebuild exactly as it came is refused, so that
Scapy's dissection is known to be faithful before it is trusted.
"""

import ipaddress
import json
import sys

from scapy.layers.inet import (
    ICMP,
    IP,
    TCP,
    UDP,
    ICMPerror,
    IPerror,
    TCPerror,
    UDPerror,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

# Offsets of the checksum field in each transport header.
CHECKSUM_OFFSET = {TCPerror: 16, UDPerror: 6, ICMPerror: 2}


class Refused(Exception):
    """A request Scapy cannot answer faithfully."""


def ones_add(a, b):
    """One's complement addition of two 16-bit words."""
    total = a + b
    return (total & 0xFFFF) + (total >> 16)


def carry_error(stored, correct_before, correct_after):
    """The checksum after a translation that adjusted `stored`, a checksum
    Scapy would have computed as `correct_before`, to a packet whose
    checksum Scapy computes as `correct_after`: the same one's complement
    error on top (none when `stored` was right)."""
    if stored == correct_before:
        return correct_after
    # A translation adds the same amount to the complemented sums of the
    # stored and the correct checksum, so their difference, the error,
    # stays: ~stored - ~correct_before, in one's complement.
    error = ones_add(~stored & 0xFFFF, correct_before)
    return ~ones_add(~correct_after & 0xFFFF, error) & 0xFFFF


def adjusted(check, old_words, new_words):
    """RFC 1624 eqn. 3 for each 16-bit word that changed."""
    for old, new in zip(old_words, new_words):
        check = ~ones_add(ones_add(~check & 0xFFFF, ~old & 0xFFFF), new) & 0xFFFF
    return check


def words(data):
    """`data` as big-endian 16-bit words."""
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def layers(packet):
    """Each layer of `packet` by its exact class, the outermost of each
    (IPerror is an IP too: isinstance would not tell them apart)."""
    found = {}
    layer = packet
    while layer:
        found.setdefault(type(layer), layer)
        layer = layer.payload
    return found


def scapy_checksum(data, parse, layer_class):
    """The checksum Scapy computes for the `layer_class` layer of `data`
    (dissected with `parse`), every other field as it is."""
    packet = parse(data)
    del layers(packet)[layer_class].chksum
    return layers(parse(bytes(packet)))[layer_class].chksum


def set_fields(ip, transport, fields):
    """Applies a request's "outer" or "quoted" fields to `ip` and its
    `transport` layer."""
    if "src" in fields:
        ip.src = fields["src"]
    if "dst" in fields:
        ip.dst = fields["dst"]
    if "sport" in fields:
        transport.sport = fields["sport"]
    if "dport" in fields:
        transport.dport = fields["dport"]
    if "echo_id" in fields:
        transport.id = fields["echo_id"]


def udp_nonzero(check):
    """RFC 768: a computed UDP checksum of 0 is sent as all ones."""
    return 0xFFFF if check == 0 else check


def translate_quote(quote, fields):
    """The quote of an ICMP error (an IPv4 packet, possibly cut short) with
    `fields` applied, at its own length."""
    before = IPerror(quote)
    if bytes(before) != quote:
        raise Refused("Scapy does not rebuild the quote as it came")
    found = layers(before)
    transport_class = next((c for c in CHECKSUM_OFFSET if c in found), None)
    if transport_class is None:
        raise Refused("the quote has no TCP, UDP or ICMP header Scapy knows")
    ihl = before.ihl * 4
    whole = len(quote) >= before.len
    check_at = ihl + CHECKSUM_OFFSET[transport_class]
    holds_check = len(quote) >= check_at + 2
    stored_check = int.from_bytes(quote[check_at : check_at + 2], "big") if holds_check else None
    ip_before = scapy_checksum(quote, IPerror, IPerror)
    check_before = scapy_checksum(quote, IPerror, transport_class) if whole else None

    after = IPerror(quote)
    set_fields(after, layers(after)[transport_class], fields)
    del after.chksum
    if whole:
        del layers(after)[transport_class].chksum
    # Scapy fills in what a short quote lacks: cut back to what the sender
    # of the error quoted.
    rebuilt = bytearray(bytes(after))
    if whole and len(rebuilt) != len(quote):
        raise Refused("Scapy rebuilt a whole quote to another length")
    rebuilt = rebuilt[: len(quote)]
    ip_check = carry_error(before.chksum, ip_before, int.from_bytes(rebuilt[10:12], "big"))
    rebuilt[10:12] = ip_check.to_bytes(2, "big")

    if holds_check:
        if transport_class is UDPerror and stored_check == 0:
            new_check = 0
        elif whole:
            check_after = int.from_bytes(rebuilt[check_at : check_at + 2], "big")
            new_check = carry_error(stored_check, check_before, check_after)
        else:
            # The quote lacks bytes the checksum covers: adjust it for the
            # words that changed, the addresses of the pseudo-header
            # included (TCP and UDP).
            def covered(data):
                head = data[ihl : ihl + 8]
                if transport_class is ICMPerror:
                    return words(head[4:6])
                return words(data[12:20]) + words(head[0:4])

            new_check = adjusted(stored_check, covered(quote), covered(rebuilt))
        if transport_class is UDPerror and stored_check != 0:
            new_check = udp_nonzero(new_check)
        rebuilt[check_at : check_at + 2] = new_check.to_bytes(2, "big")
    return bytes(rebuilt)


def translate(request):
    frame = bytes.fromhex(request["frame"])
    packet = Ether(frame)
    if bytes(packet) != frame:
        raise Refused("Scapy does not rebuild this frame as it came")
    found = layers(packet)
    if IP not in found:
        raise Refused("not an IPv4 frame")
    ip = found[IP]
    transport_class = next((c for c in (TCP, UDP, ICMP) if c in found), None)
    if transport_class is None:
        raise Refused("no TCP, UDP or ICMP header")
    transport = found[transport_class]
    outer = request.get("outer", {})
    quoted = request.get("quoted", {})

    stored_ip_check = ip.chksum
    stored_l4_check = transport.chksum
    ip_before = scapy_checksum(frame, Ether, IP)
    l4_before = scapy_checksum(frame, Ether, transport_class)

    packet.dst = request["eth_dst"]
    packet.src = request["eth_src"]
    ip.ttl = request["ttl"]
    set_fields(ip, transport, outer)
    if transport_class is ICMP and IPerror in found:
        quote = bytes(transport.payload)
        transport.remove_payload()
        transport.add_payload(Raw(translate_quote(quote, quoted)))
    elif quoted:
        raise Refused("quoted fields for a frame that quotes nothing")
    del ip.len
    del ip.chksum
    del transport.chksum
    if transport_class is UDP:
        del transport.len

    # Scapy's checksums of the translation, with the errors the frame came
    # with carried over.
    rebuilt = Ether(bytes(packet))
    rebuilt_layers = layers(rebuilt)
    rebuilt_transport = rebuilt_layers[transport_class]
    if transport_class is UDP and stored_l4_check == 0:
        rebuilt_transport.chksum = 0
    else:
        check = carry_error(stored_l4_check, l4_before, rebuilt_transport.chksum)
        rebuilt_transport.chksum = udp_nonzero(check) if transport_class is UDP else check
    rebuilt_layers[IP].chksum = carry_error(stored_ip_check, ip_before, rebuilt_layers[IP].chksum)
    out = bytes(rebuilt)
    if len(out) != len(frame):
        raise Refused(f"the translation is {len(out)} bytes, the frame {len(frame)}")
    return out


def main():
    requests = json.load(sys.stdin)
    answers = []
    for index, request in enumerate(requests):
        try:
            # Addresses must be well formed before Scapy sees them (it
            # would resolve a name).
            for part in ("outer", "quoted"):
                for field in ("src", "dst"):
                    if field in request.get(part, {}):
                        ipaddress.IPv4Address(request[part][field])
            answers.append(translate(request).hex())
        except (Refused, ValueError, KeyError, IndexError) as error:
            name = request.get("name", index)
            print(f"translate.py: request {name}: {error}", file=sys.stderr)
            return 1
    json.dump(answers, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
