// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Builds `netd-ebpf` for the BPF target (nightly, `-Z build-std=core`, BTF
//! on) with aya-build; the object lands in OUT_DIR and `src/ebpf.rs` embeds it.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|package| package.name.as_str() == "netd-ebpf")
        .ok_or_else(|| anyhow!("netd-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
