//! Types shared by the crid daemon and the per-pod helper.

pub mod cgroup_io;
pub mod cni_config;
pub mod cni_exec;
pub mod config;
pub mod fd_pass;
pub mod ids;
pub mod protocol;
