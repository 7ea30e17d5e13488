// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Rebuild when bpf-linker changes. Building this crate depends on the
//! `bpf-linker` binary, which cargo cannot express as a dependency: key the
//! build on its mtime instead (as aya-template does).
use which::which;

fn main() {
    // Only the BPF build links with bpf-linker; a host build (clippy, the
    // build-dependency of `netd`) must not require it.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("bpf") {
        return;
    }
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => panic!("bpf-linker not found ({err}): run `cargo xtask setup`"),
    }
}
