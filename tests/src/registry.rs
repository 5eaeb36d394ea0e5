//! A private distribution registry (Debian's `docker-registry`) for one test,
//! on 127.0.0.1 only, with optional htpasswd auth. Stopped on drop.

use crate::{test_dir, BoxError};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to run the registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Require basic auth with this user and password (bcrypt htpasswd file).
    pub htpasswd: Option<(String, String)>,
}

/// A running registry.
pub struct Registry {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    auth: Option<(String, String)>,
}

impl Registry {
    /// Starts a registry on a free loopback port and waits until `/v2/` answers.
    pub fn start(opts: RegistryOptions) -> Result<Registry, BoxError> {
        let dir = test_dir();
        let port = free_port()?;
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage)?;
        let mut auth_yaml = String::new();
        if let Some((user, pass)) = &opts.htpasswd {
            let file = dir.path().join("htpasswd");
            write_htpasswd(&file, user, pass)?;
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: crid-test\n    path: {}\n",
                file.display()
            );
        }
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
                storage.display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting docker-registry (is the package installed?): {e}"))?;
        let mut reg = Registry {
            child: Some(child),
            port,
            dir,
            auth: opts.htpasswd,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // 200 without auth, 401 with: either way it is serving.
            match ureq::get(&format!("http://{}/v2/", reg.host())).call() {
                Ok(_) | Err(ureq::Error::Status(401, _)) => break,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => {
                    reg.stop();
                    return Err(
                        format!("registry did not come up: {e}; log:\n{}", reg.log()).into(),
                    );
                }
            }
        }
        Ok(reg)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Credentials it requires, if any.
    pub fn auth(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Where it stores blobs (for corruption tests).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Stops it; idempotent.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::crid::terminate(&mut c, Duration::from_secs(5));
        }
    }

    /// A target to push to: this registry with its credentials.
    pub fn target(&self) -> crate::images::PushTarget {
        crate::images::PushTarget {
            host: self.host(),
            auth: self.auth.clone(),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, BoxError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Writes a bcrypt htpasswd file (the only hash distribution accepts).
fn write_htpasswd(file: &Path, user: &str, pass: &str) -> Result<(), BoxError> {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, pass])
        .output()
        .map_err(|e| format!("running htpasswd (package apache2-utils): {e}"))?;
    if !out.status.success() {
        return Err(format!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    std::fs::write(file, out.stdout)?;
    Ok(())
}
