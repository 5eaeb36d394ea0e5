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
        let mut me = PrivateContainerd {
            dir: dir.to_path_buf(),
            child: None,
        };
        me.spawn().await?;
        Ok(me)
    }

    /// SIGKILLs containerd and reaps it (a crash: its shims, containers and
    /// mounts stay).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts containerd again on the same dirs (after [`Self::kill`]).
    pub async fn restart(&mut self) -> Result<(), BoxError> {
        self.kill();
        self.spawn().await
    }

    async fn spawn(&mut self) -> Result<(), BoxError> {
        let dir = self.dir.clone();
        let dir = dir.as_path();
        std::fs::create_dir_all(dir)?;
        let config = dir.join("config.toml");
        std::fs::write(&config, Self::config_toml(dir))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting containerd (is the package installed?): {e}"))?;
        self.child = Some(child);
        let socket = self.socket();
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
        Ok(())
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
