// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Empty library target: it lets `netd` declare a build-dependency on this
//! crate so cargo rebuilds netd when the programs change. The programs live in
//! the binary target (src/main.rs), built for bpfel-unknown-none by
//! `netd/build.rs`.
#![no_std]
