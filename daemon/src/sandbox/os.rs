//! The OS operations of a sandbox's teardown, behind [`TeardownOs`] so that
//! the teardown's order, idempotency and error handling are unit-tested with
//! a recording fake.

use crate::helper_client;
use crid_common::cni_exec::{CniInvocation, HostRunner};
use serde_json::Value;
use std::path::Path;

/// What tearing a sandbox down does to the host.
pub trait TeardownOs: Send + Sync {
    /// Ends the helper (Shutdown, then SIGKILL) and the pod's reaper.
    fn end_helper(
        &self,
        socket: &Path,
        helper: Option<u32>,
        reaper: Option<u32>,
    ) -> Result<(), String>;
    /// CNI DEL from the host netns with the cached result.
    fn cni_del(&self, inv: &CniInvocation, prev: Option<&Value>) -> Result<(), String>;
    /// Unmounts `p`; not mounted or missing is fine.
    fn unmount(&self, p: &Path) -> std::io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, p: &Path) -> std::io::Result<()>;
}

/// The real host.
pub struct RealOs;

impl TeardownOs for RealOs {
    fn end_helper(
        &self,
        socket: &Path,
        helper: Option<u32>,
        reaper: Option<u32>,
    ) -> Result<(), String> {
        helper_client::end(socket, helper, reaper)
    }
    fn cni_del(&self, inv: &CniInvocation, prev: Option<&Value>) -> Result<(), String> {
        inv.del(&HostRunner, prev).map_err(|e| e.to_string())
    }
    fn unmount(&self, p: &Path) -> std::io::Result<()> {
        super::files::unmount(p)
    }
    fn remove_file(&self, p: &Path) -> std::io::Result<()> {
        std::fs::remove_file(p)
    }
}
