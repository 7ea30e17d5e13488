// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! A container image without a registry: a root filesystem of
//! busybox-static (a shell and an HTTP server) and one web page, as a tar
//! that `podman import` and `docker import` take; and the cgroup a
//! runtime's containers go under.

use std::{fs, os::unix::fs::symlink, path::Path, process::Command};

use crate::netns::{check, unique_name};

/// The image's web server, in the foreground on port 80, serving /www:
/// the command to run a container of [`busybox_tar`]'s image with.
pub const HTTPD: &[&str] = &["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"];

/// Where Debian's busybox-static puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Writes `tar` holding `/bin/busybox` (with `sh` and `httpd` links to it)
/// and `/www/index.html` containing `page`; `work` is scratch space.
pub fn busybox_tar(work: &Path, tar: &Path, page: &str) {
    let root = work.join("rootfs");
    fs::create_dir_all(root.join("bin")).expect("rootfs/bin");
    fs::create_dir_all(root.join("www")).expect("rootfs/www");
    fs::create_dir_all(root.join("tmp")).expect("rootfs/tmp");
    fs::copy(BUSYBOX, root.join("bin/busybox"))
        .unwrap_or_else(|e| panic!("{BUSYBOX} (Debian's busybox-static): {e}"));
    for applet in ["sh", "httpd"] {
        symlink("busybox", root.join("bin").join(applet)).expect("applet link");
    }
    fs::write(root.join("www/index.html"), page).expect("page");
    check(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(tar)
            .arg("."),
    );
}

/// The cgroup (in every hierarchy of the machine) a runtime puts the test's
/// containers under; removed with whatever the runtime left in it.
pub struct CgroupParent(String);

impl CgroupParent {
    pub fn new(tag: &str) -> Self {
        Self(unique_name(tag))
    }

    /// The cgroup's path, as runtimes take it (`/NAME`).
    pub fn parent(&self) -> String {
        format!("/{}", self.0)
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        fn remove(dir: &Path) {
            for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                if entry.path().is_dir() {
                    remove(&entry.path());
                }
            }
            let _ = fs::remove_dir(dir);
        }
        let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for hierarchy in hierarchies.flatten() {
            let ours = hierarchy.path().join(&self.0);
            if ours.is_dir() {
                remove(&ours);
            }
        }
        let unified = Path::new("/sys/fs/cgroup").join(&self.0);
        if unified.is_dir() {
            remove(&unified);
        }
    }
}
