// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Loading netd's eBPF programs, attaching them, and reading their maps.

pub mod observe;
