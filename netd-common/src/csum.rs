// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Incremental Internet checksum updates (RFC 1624, eqn. 3):
//! `HC' = ~(~HC + ~m + m')`. Used where no kernel helper does it for us
//! (XDP); TC programs use `bpf_l3_csum_replace`/`bpf_l4_csum_replace`, which
//! also keep `skb->csum` right.
//!
//! All values are 16-bit words as they sit in the packet (big-endian bytes
//! read into a `u16` with `from_be_bytes`, or both sides consistently in
//! network order: the one's complement sum is byte-order independent).

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum after one 16-bit word of the covered data changed from
/// `old` to `new`.
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}

/// The checksum after a 32-bit value (an IPv4 address) changed.
#[inline(always)]
pub fn replace32(check: u16, old: u32, new: u32) -> u16 {
    let check = replace16(check, (old >> 16) as u16, (new >> 16) as u16);
    replace16(check, old as u16, new as u16)
}

/// A UDP checksum update: 0 means "no checksum" and stays 0; a computed 0
/// is sent as 0xffff (RFC 768).
#[inline(always)]
pub fn replace16_udp(check: u16, old: u16, new: u16) -> u16 {
    if check == 0 {
        return 0;
    }
    match replace16(check, old, new) {
        0 => 0xffff,
        sum => sum,
    }
}

/// [`replace32`] with UDP's zero rule.
#[inline(always)]
pub fn replace32_udp(check: u16, old: u32, new: u32) -> u16 {
    if check == 0 {
        return 0;
    }
    match replace32(check, old, new) {
        0 => 0xffff,
        sum => sum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A from-scratch checksum, the reference the incremental one must match.
    fn full(words: &[u16]) -> u16 {
        let sum: u32 = words.iter().map(|&w| u32::from(w)).sum();
        !fold(sum)
    }

    #[test]
    fn incremental_matches_full_recomputation() {
        let mut words = [
            0x4500u16, 0x0054, 0x1c46, 0x4000, 0x4001, 0, 0xac10, 0x0a63, 0xac10, 0x0a0c,
        ];
        let check = full(&words);
        // Change the destination address 172.16.10.12 -> 10.0.0.7.
        let old = (u32::from(words[8]) << 16) | u32::from(words[9]);
        let new = 0x0a00_0007;
        words[8] = (new >> 16) as u16;
        words[9] = new as u16;
        assert_eq!(replace32(check, old, new), full(&words));
        // And a port-sized word.
        let check = full(&words);
        let before = words[2];
        words[2] = 0xbeef;
        assert_eq!(replace16(check, before, 0xbeef), full(&words));
    }

    #[test]
    fn udp_zero_stays_zero_and_computed_zero_becomes_ffff() {
        assert_eq!(replace16_udp(0, 0x1234, 0x5678), 0);
        assert_eq!(replace32_udp(0, 1, 2), 0);
        // A change that makes the sum come out 0 is sent as 0xffff.
        let check = 0x0001u16;
        let new = replace16(check, 0x0000, 0x0001);
        assert_eq!(new, 0x0000);
        assert_eq!(replace16_udp(check, 0x0000, 0x0001), 0xffff);
    }
}
