//! crid started as a separate process on a temporary socket, and CRI clients.

use crate::{wait_for, workspace_bin, BoxError};
use crid_common::config::Config;
use crid_proto::cri::image_service_client::ImageServiceClient;
use crid_proto::cri::runtime_service_client::RuntimeServiceClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// Both CRI clients on one channel.
#[derive(Clone)]
pub struct CriClients {
    /// `runtime.v1.RuntimeService`.
    pub runtime: RuntimeServiceClient<Channel>,
    /// `runtime.v1.ImageService`.
    pub image: ImageServiceClient<Channel>,
}

impl CriClients {
    /// The cgroup driver `RuntimeConfig` reports (a `cri::CgroupDriver`).
    pub async fn cgroup_driver(&mut self) -> Result<i32, BoxError> {
        let rc = self
            .runtime
            .runtime_config(crid_proto::cri::RuntimeConfigRequest {})
            .await?
            .into_inner();
        Ok(rc.linux.ok_or("RuntimeConfig without linux")?.cgroup_driver)
    }
}

/// Connects CRI clients to a unix socket.
pub async fn connect(socket: &Path) -> Result<CriClients, BoxError> {
    let channel = channel(socket).await?;
    Ok(CriClients {
        runtime: RuntimeServiceClient::new(channel.clone()),
        image: ImageServiceClient::new(channel),
    })
}

/// A gRPC channel to a CRI unix socket (for calls the generated clients cannot make).
pub async fn channel(socket: &Path) -> Result<Channel, BoxError> {
    let path = socket.to_path_buf();
    Ok(Endpoint::from_static("http://crid")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await?)
}

/// A crid process; SIGTERMed on drop.
pub struct CridProcess {
    child: Option<Child>,
    /// The config it was started with.
    pub config: Config,
    /// Its log (stderr and stdout).
    pub log_path: PathBuf,
}

impl CridProcess {
    /// A config with every path below `dir`, talking to `containerd_socket`.
    pub fn test_config(dir: &Path, containerd_socket: &Path) -> Config {
        let mut c = Config {
            socket: dir.join("crid.sock"),
            state_dir: dir.join("state"),
            runtime_dir: dir.join("run"),
            ..Config::default()
        };
        c.containerd.address = containerd_socket.to_path_buf();
        c.cni.conf_dir = dir.join("cni/net.d");
        c.log.level = "debug,h2=info,tower=info,hyper=info".into();
        // The default `runc` handler is the pod helper as shim
        // (`io.containerd.crid.v1`); CRID_TEST_RUNC_RUNTIME_TYPE=io.containerd.runc.v2
        // runs the suites with containerd's runc shim behind it instead.
        if let Ok(t) = std::env::var("CRID_TEST_RUNC_RUNTIME_TYPE") {
            if let Some(h) = c.runtimes.get_mut("runc") {
                h.runtime_type = t;
            }
        }
        c
    }

    /// Writes `config` next to the socket and starts crid with it; returns once
    /// the socket answers `Version`.
    pub async fn start(config: Config) -> Result<CridProcess, BoxError> {
        let dir = config
            .socket
            .parent()
            .ok_or("socket has no parent dir")?
            .to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("crid.toml");
        std::fs::write(&config_path, toml::to_string(&config)?)?;
        let log_path = dir.join("crid.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new(workspace_bin("crid"))
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut me = CridProcess {
            child: Some(child),
            config,
            log_path,
        };
        let socket = me.config.socket.clone();
        let ready = wait_for(Duration::from_secs(20), || {
            let socket = socket.clone();
            async move {
                let mut c = connect(&socket).await.ok()?;
                c.runtime
                    .version(crid_proto::cri::VersionRequest::default())
                    .await
                    .ok()
            }
        })
        .await;
        if ready.is_none() {
            let exited = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            return Err(format!(
                "crid did not answer on {} within 20s (exit: {exited:?}); log:\n{}",
                me.config.socket.display(),
                me.log()
            )
            .into());
        }
        Ok(me)
    }

    /// CRI clients on crid's socket.
    pub async fn clients(&self) -> Result<CriClients, BoxError> {
        connect(&self.config.socket).await
    }

    /// What crid has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// crid's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL and reap (a crash: nothing is cleaned up, helpers stay).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        terminate(&mut child, Duration::from_secs(10))
    }
}

impl Drop for CridProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGTERM `child`, wait up to `grace`, then SIGKILL; reaps it.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}
