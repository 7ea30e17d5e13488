// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `BPF_MAP_LOOKUP_BATCH` and `BPF_MAP_DELETE_BATCH` on hash maps, which
//! aya does not offer: the conntrack table is walked thousands of entries
//! per system call instead of two calls per entry, so garbage collection
//! of a table of hundreds of thousands of flows costs milliseconds, not a
//! second of CPU.
//!
//! The per-CPU counters are read the same way: [`percpu_array_sums`] reads
//! 65,536 mapping counters in 16 calls where `get` would take 65,536.
//!
//! Batch operations exist since Linux 5.6; [`lookup_all`] returns `None`
//! where they do not, and the caller walks the map the slow way.

use std::{
    io,
    mem::{MaybeUninit, size_of},
    os::fd::{AsFd, AsRawFd as _},
};

use aya::Pod;

/// `enum bpf_cmd` (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// Entries asked for per call.
const CHUNK: usize = 4096;

/// The `batch` member of `union bpf_attr`. The kernel accepts an attr
/// shorter than the whole union and treats the rest as zero.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid `bpf_attr.batch` whose pointers the caller
    // made valid for `count` keys and values.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Every entry of the hash map `map`, or `None` if the kernel has no batch
/// operations. Concurrent updates may be seen or not, as with any walk.
pub fn lookup_all<K: Pod, V: Pod>(map: impl AsFd) -> io::Result<Option<Vec<(K, V)>>> {
    let mut out = Vec::new();
    let walked = walk::<K, V>(map, |keys, values| {
        out.extend(keys.iter().copied().zip(values.iter().copied()));
    })?;
    Ok(walked.then_some(out))
}

/// How many entries the hash map `map` holds, or `None` if the kernel has
/// no batch operations. One chunk of memory however large the map: what
/// `netd stats` needs, where [`lookup_all`] would copy the whole table.
pub fn count<K: Pod, V: Pod>(map: impl AsFd) -> io::Result<Option<usize>> {
    let mut count = 0;
    let walked = walk::<K, V>(map, |keys, _| count += keys.len())?;
    Ok(walked.then_some(count))
}

/// Where a batch walk stands: each call hands back a token (a bucket
/// index for hash maps, the next index for arrays) that the next call
/// passes in.
#[derive(Default)]
struct Cursor {
    token_in: u32,
    token_out: u32,
    started: bool,
}

/// What one lookup call returned: how many entries, and whether they were
/// the last.
struct Batch {
    count: usize,
    last: bool,
}

impl Cursor {
    /// One `BPF_MAP_LOOKUP_BATCH` of at most `room` entries into `keys` and
    /// `values`, which must have room for that many (times the CPU count
    /// for per-CPU values). `None` if the kernel has no batch operations.
    fn lookup(
        &mut self,
        fd: u32,
        keys: *mut u8,
        values: *mut u8,
        room: usize,
    ) -> io::Result<Option<Batch>> {
        let mut attr = BatchAttr {
            in_batch: if self.started {
                &raw const self.token_in as u64
            } else {
                0
            },
            out_batch: &raw mut self.token_out as u64,
            keys: keys as u64,
            values: values as u64,
            count: room as u32,
            map_fd: fd,
            ..BatchAttr::default()
        };
        let last = match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
            Ok(()) => false,
            // The last batch: `count` holds what it returned.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => true,
            Err(err) if !self.started && is_unsupported(&err) => return Ok(None),
            Err(err) => return Err(err),
        };
        self.token_in = self.token_out;
        self.started = true;
        Ok(Some(Batch {
            count: (attr.count as usize).min(room),
            last,
        }))
    }
}

/// Hands `visit` the hash map's entries a chunk at a time; `false` if the
/// kernel has no batch operations (nothing visited then).
fn walk<K: Pod, V: Pod>(map: impl AsFd, mut visit: impl FnMut(&[K], &[V])) -> io::Result<bool> {
    let fd = map.as_fd().as_raw_fd() as u32;
    let mut chunk = CHUNK;
    let mut keys: Vec<MaybeUninit<K>> = Vec::with_capacity(chunk);
    let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(chunk);
    let mut cursor = Cursor::default();
    loop {
        let keys_at = keys.as_mut_ptr().cast();
        let batch = match cursor.lookup(fd, keys_at, values.as_mut_ptr().cast(), chunk) {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok(false),
            // A bucket larger than the chunk: ask again with more room.
            Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => {
                chunk *= 2;
                keys = Vec::with_capacity(chunk);
                values = Vec::with_capacity(chunk);
                continue;
            }
            Err(err) => return Err(err),
        };
        // SAFETY: the kernel wrote `count` keys and values, and `K` and `V`
        // are plain data, so the initialised prefix may be read as a slice.
        let (k, v) = unsafe {
            (
                std::slice::from_raw_parts(keys.as_ptr().cast::<K>(), batch.count),
                std::slice::from_raw_parts(values.as_ptr().cast::<V>(), batch.count),
            )
        };
        visit(k, v);
        if batch.last {
            return Ok(true);
        }
    }
}

/// Every slot of the per-CPU array `map` (`entries` long, `cpus` possible
/// CPUs), each folded over its CPUs with `fold` from `V::default()`; `None`
/// if the kernel has no batch operations.
pub fn percpu_array_sums<V: Pod + Default>(
    map: impl AsFd,
    entries: u32,
    cpus: usize,
    fold: impl Fn(V, V) -> V,
) -> io::Result<Option<Vec<V>>> {
    // The kernel lays each CPU's value out at an 8-byte stride; netd's
    // per-CPU values are all made of u64s, so the stride is their size.
    const { assert!(size_of::<V>().is_multiple_of(8)) };
    let fd = map.as_fd().as_raw_fd() as u32;
    let chunk = CHUNK.min(entries as usize).max(1);
    let mut keys: Vec<MaybeUninit<u32>> = Vec::with_capacity(chunk);
    let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(chunk * cpus);
    let mut sums = Vec::with_capacity(entries as usize);
    let mut cursor = Cursor::default();
    loop {
        let keys_at = keys.as_mut_ptr().cast();
        let Some(batch) = cursor.lookup(fd, keys_at, values.as_mut_ptr().cast(), chunk)? else {
            return Ok(None);
        };
        // SAFETY: the kernel wrote `count` values for each of `cpus` CPUs,
        // and `V` is plain data.
        let got =
            unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<V>(), batch.count * cpus) };
        sums.extend(
            got.chunks_exact(cpus)
                .map(|per_cpu| per_cpu.iter().copied().fold(V::default(), &fold)),
        );
        if batch.last || sums.len() >= entries as usize {
            return Ok(Some(sums));
        }
    }
}

/// Deletes `keys` from the hash map `map`; keys already gone are fine.
/// Returns `false` if the kernel has no batch operations (nothing was
/// deleted then).
pub fn delete<K: Pod>(map: impl AsFd, keys: &[K]) -> io::Result<bool> {
    let fd = map.as_fd().as_raw_fd() as u32;
    let mut rest = keys;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(CHUNK)];
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: fd,
            ..BatchAttr::default()
        };
        let deleted = match bpf(BPF_MAP_DELETE_BATCH, &mut attr) {
            Ok(()) => chunk.len(),
            // The kernel stops at a missing key; `count` says how many went
            // before it. Skip it and go on.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => attr.count as usize + 1,
            Err(err) if rest.len() == keys.len() && is_unsupported(&err) => return Ok(false),
            Err(err) => return Err(err),
        };
        rest = &rest[deleted.min(rest.len())..];
    }
    Ok(true)
}

/// The kernel's own ENOTSUPP, which some BPF paths let out.
const KERNEL_ENOTSUPP: i32 = 524;

fn is_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | KERNEL_ENOTSUPP)
    )
}
