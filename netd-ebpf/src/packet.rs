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

/// A pointer to a `T` at `offset` bytes into the packet, or `None` if the
/// packet is too short. `T` must be a header type of alignment 1.
#[inline(always)]
pub fn ptr_at<T, F: Frame>(frame: &F, offset: usize) -> Option<*const T> {
    let start = frame.start();
    if start + offset + size_of::<T>() > frame.end() {
        return None;
    }
    Some((start + offset) as *const T)
}
