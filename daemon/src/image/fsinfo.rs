//! ImageFsInfo: the snapshotter's root (from containerd's Introspection
//! service, plugin export `root`) and the usage of the filesystem it lives on.

use super::session::{cerr, Session};
use crate::containerd::Containerd;
use crate::error::Error;
use crid_proto::containerd::services::v1::introspection_client::IntrospectionClient;
use crid_proto::containerd::services::v1::PluginsRequest;
use std::path::PathBuf;

/// Usage of one filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    /// The snapshotter root.
    pub mountpoint: PathBuf,
    /// Bytes in use on its filesystem.
    pub used_bytes: u64,
    /// Inodes in use on its filesystem.
    pub inodes_used: u64,
}

/// The root directory of `snapshotter` as containerd reports it.
pub async fn snapshotter_root(ctrd: &Containerd, snapshotter: &str) -> Result<PathBuf, Error> {
    let s = Session::plain(ctrd);
    let plugins = IntrospectionClient::new(s.ctrd.channel())
        .plugins(s.req(PluginsRequest {
            filters: vec![format!(
                "type==io.containerd.snapshotter.v1,id=={snapshotter}"
            )],
        }))
        .await
        .map_err(cerr("introspection.plugins"))?
        .into_inner()
        .plugins;
    plugins
        .iter()
        .find_map(|p| p.exports.get("root"))
        .map(PathBuf::from)
        .ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "containerd has no snapshotter {snapshotter:?} exporting its root"
            ))
        })
}

/// Used bytes and inodes of the filesystem holding `path`.
pub fn usage(path: PathBuf) -> Result<FsUsage, Error> {
    let st = nix::sys::statvfs::statvfs(&path)
        .map_err(|e| Error::Internal(format!("statvfs {}: {e}", path.display())))?;
    let frsize = st.fragment_size() as u64;
    let used_blocks = (st.blocks() as u64).saturating_sub(st.blocks_free() as u64);
    let inodes_used = (st.files() as u64).saturating_sub(st.files_free() as u64);
    Ok(FsUsage {
        mountpoint: path,
        used_bytes: used_blocks.saturating_mul(frsize),
        inodes_used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let u = usage(dir.path().to_path_buf()).unwrap();
        assert!(u.used_bytes > 0);
        assert!(u.inodes_used > 0);
        assert!(usage(dir.path().join("missing")).is_err());
    }
}
