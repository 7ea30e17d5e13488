// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Network namespaces given by runtimes: a name under /run/netns or a path
//! (/proc/PID/ns/net, a bind mount). Code runs inside one only on a thread
//! made for the purpose, never on an async worker: a thread's namespace is
//! its own, and a tokio worker moved to another namespace would take every
//! task it runs there.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use nix::sched::{CloneFlags, setns};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::paths::NETNS_DIR;

/// `NS_GET_NSTYPE` from linux/nsfs.h: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;

#[derive(Debug, Error)]
pub enum NetnsError {
    #[error("network namespace {given} does not exist ({path})")]
    NotFound { given: String, path: PathBuf },
    #[error("{path} is not a network namespace")]
    NotNetns { path: PathBuf },
    #[error("opening network namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("entering network namespace {path}")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// What identifies a namespace whatever path names it: the device and inode
/// of its nsfs file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsIdent {
    pub dev: u64,
    pub ino: u64,
}

/// The path a runtime's namespace argument names: a bare name is an
/// `ip netns` name under /run/netns; anything with a slash is a path.
pub fn resolve(given: &str) -> PathBuf {
    if given.contains('/') {
        PathBuf::from(given)
    } else {
        Path::new(NETNS_DIR).join(given)
    }
}

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
    ident: NsIdent,
}

impl Netns {
    /// Opens the namespace `given` names, checking that it is a network
    /// namespace.
    pub fn open(given: &str) -> Result<Self, NetnsError> {
        let path = resolve(given);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(NetnsError::NotFound {
                    given: given.to_owned(),
                    path,
                });
            }
            Err(source) => return Err(NetnsError::Open { path, source }),
        };
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
        let ns_type = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
        if ns_type != libc::CLONE_NEWNET {
            return Err(NetnsError::NotNetns { path });
        }
        let meta = file.metadata().map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?;
        let ident = NsIdent {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        Ok(Self { file, path, ident })
    }

    /// The identity of the namespace this process's current thread is in.
    pub fn current_ident() -> io::Result<NsIdent> {
        let meta = std::fs::metadata("/proc/thread-self/ns/net")?;
        Ok(NsIdent {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn ident(&self) -> NsIdent {
        self.ident
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns
    /// its result. The thread ends with `f`, so nothing else ever runs in the
    /// namespace by mistake.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|source| {
                        NetnsError::Enter {
                            path: self.path.clone(),
                            source,
                        }
                    })?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}
