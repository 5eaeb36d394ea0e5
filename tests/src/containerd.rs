//! A private containerd for one test: its own root, state, socket and config,
//! with containerd's own CRI plugin disabled. Never the system containerd.

use crate::{unmount_all_under, wait_for, BoxError};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running private containerd; stopped and cleaned up on drop.
pub struct PrivateContainerd {
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateContainerd {
    /// The config it runs with: everything below `dir`.
    pub fn config_toml(dir: &Path) -> String {
        let d = dir.display();
        format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
        )
    }

    /// Where this containerd listens (or will listen) for `dir`.
    pub fn socket_for(dir: &Path) -> PathBuf {
        dir.join("containerd.sock")
    }

    /// Starts containerd with everything under `dir` and waits until it answers.
    pub async fn start(dir: &Path) -> Result<PrivateContainerd, BoxError> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("config.toml");
        std::fs::write(&config, Self::config_toml(dir))?;
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting containerd (is the package installed?): {e}"))?;
        let me = PrivateContainerd {
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        let socket = me.socket();
        let up = wait_for(Duration::from_secs(20), || {
            let socket = socket.clone();
            async move { version(&socket).await.ok() }
        })
        .await;
        if up.is_none() {
            let log = std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default();
            return Err(
                format!("private containerd did not answer within 20s; log:\n{log}").into(),
            );
        }
        Ok(me)
    }

    /// The gRPC socket.
    pub fn socket(&self) -> PathBuf {
        Self::socket_for(&self.dir)
    }

    /// containerd's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops containerd (SIGTERM, then SIGKILL after 5 s) and detaches its mounts.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::crid::terminate(&mut child, Duration::from_secs(5));
        }
        unmount_all_under(&self.dir);
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// containerd's version over its socket: the readiness probe.
pub async fn version(socket: &Path) -> Result<String, BoxError> {
    let channel = crid_proto::containerd::connect(socket).await?;
    let mut client =
        crid_proto::containerd::services::v1::version_client::VersionClient::new(channel);
    let v = client.version(()).await?.into_inner();
    Ok(v.version)
}
