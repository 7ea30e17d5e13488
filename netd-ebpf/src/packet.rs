// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Bounds-checked access to packet bytes, the same for TC and XDP.

use aya_ebpf::programs::{TcContext, XdpContext};

/// A packet whose bytes lie between two addresses, as the verifier sees
/// them: every access must be proven below `end()` first.
pub trait Frame {
    fn start(&self) -> usize;
    fn end(&self) -> usize;

    /// Length of the whole packet, including bytes beyond the linear area.
    fn len(&self) -> u32;

    /// Makes the first `len` bytes directly accessible, if the hook can
    /// (TC: `bpf_skb_pull_data`). Invalidates earlier pointers.
    fn pull(&self, _len: u32) -> bool {
        false
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn len(&self) -> u32 {
        Self::len(self)
    }
    #[inline(always)]
    fn pull(&self, len: u32) -> bool {
        self.pull_data(len).is_ok()
    }
}

impl Frame for XdpContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn len(&self) -> u32 {
        (self.data_end() - self.data()) as u32
    }
}

/// The furthest offset netd reads at: past every header it parses.
const MAX_OFFSET: usize = 256;

/// A pointer to a `T` at `offset` bytes into the packet, or `None` if the
/// packet is too short. `T` must be a header type of alignment 1.
#[inline(always)]
pub fn ptr_at<T, F: Frame>(frame: &F, offset: usize) -> Option<*mut T> {
    // The verifier follows a packet pointer only if it can bound the offset
    // added to it; the comparison below then proves the access in range.
    if offset > MAX_OFFSET {
        return None;
    }
    let ptr = frame.start() + offset;
    if ptr + size_of::<T>() > frame.end() {
        return None;
    }
    Some(ptr as *mut T)
}

/// Reads a `T` at `offset`, or `None` if the packet is too short.
#[inline(always)]
pub fn read<T: Copy, F: Frame>(frame: &F, offset: usize) -> Option<T> {
    // SAFETY: in bounds (checked by ptr_at); unaligned reads are fine.
    ptr_at::<T, F>(frame, offset).map(|p| unsafe { p.read_unaligned() })
}

/// Writes `value` at `offset`; false if the packet is too short.
#[inline(always)]
pub fn write<T: Copy, F: Frame>(frame: &F, offset: usize, value: T) -> bool {
    match ptr_at::<T, F>(frame, offset) {
        // SAFETY: in bounds (checked by ptr_at); unaligned writes are fine.
        Some(p) => {
            unsafe { p.write_unaligned(value) };
            true
        }
        None => false,
    }
}
