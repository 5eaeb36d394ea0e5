//! Fakes of the spec module's OS traits, for unit tests.

use super::devices::DeviceNode;
use super::mounts::Propagation;
use super::user::RootfsFiles;
use super::HostView;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An image rootfs with optional /etc/passwd and /etc/group.
pub struct FakeRootfs {
    files: HashMap<String, String>,
}

impl FakeRootfs {
    /// A rootfs with these files (None: absent).
    pub fn new(passwd: Option<&str>, group: Option<&str>) -> FakeRootfs {
        let mut files = HashMap::new();
        if let Some(p) = passwd {
            files.insert("passwd".to_string(), p.to_string());
        }
        if let Some(g) = group {
            files.insert("group".to_string(), g.to_string());
        }
        FakeRootfs { files }
    }
}

impl RootfsFiles for FakeRootfs {
    fn etc_file(&self, name: &str) -> io::Result<Option<String>> {
        Ok(self.files.get(name).cloned())
    }
}

/// A host: every path is on a private mount and is its own real path unless told.
#[derive(Default)]
pub struct FakeHost {
    propagation: Vec<(PathBuf, Propagation)>,
    real: HashMap<PathBuf, PathBuf>,
    devices: HashMap<PathBuf, Vec<(PathBuf, DeviceNode)>>,
    host_devices: Vec<DeviceNode>,
    profiles: HashMap<PathBuf, Vec<u8>>,
    apparmor_loaded: Mutex<Vec<String>>,
    apparmor_loads: Mutex<usize>,
    apparmor_load_fails: bool,
}

impl FakeHost {
    /// Paths under `prefix` are on a mount with this propagation.
    pub fn with_propagation(mut self, prefix: &str, p: Propagation) -> Self {
        self.propagation.push((prefix.into(), p));
        self
    }

    /// `path` resolves to `real`.
    pub fn with_real_path(mut self, path: &str, real: &str) -> Self {
        self.real.insert(path.into(), real.into());
        self
    }

    /// A device node at `path`.
    pub fn with_device(mut self, path: &str, node: DeviceNode) -> Self {
        self.devices
            .insert(path.into(), vec![(PathBuf::new(), node)]);
        self
    }

    /// A directory of device nodes (relative path, node).
    pub fn with_device_dir(mut self, path: &str, nodes: Vec<(&str, DeviceNode)>) -> Self {
        self.devices.insert(
            path.into(),
            nodes.into_iter().map(|(r, n)| (r.into(), n)).collect(),
        );
        self
    }

    /// The host's /dev.
    pub fn with_host_devices(mut self, nodes: Vec<DeviceNode>) -> Self {
        self.host_devices = nodes;
        self
    }

    /// A profile file at `path`.
    pub fn with_profile(mut self, path: &str, text: &str) -> Self {
        self.profiles.insert(path.into(), text.as_bytes().to_vec());
        self
    }

    /// An AppArmor profile loaded in the kernel.
    pub fn with_apparmor_profile(self, name: &str) -> Self {
        if let Ok(mut l) = self.apparmor_loaded.lock() {
            l.push(name.to_string());
        }
        self
    }

    /// Loading crid's default AppArmor profile fails.
    pub fn with_failing_apparmor_load(mut self) -> Self {
        self.apparmor_load_fails = true;
        self
    }

    /// How often crid's default AppArmor profile was loaded.
    pub fn apparmor_loads(&self) -> usize {
        self.apparmor_loads.lock().map_or(0, |n| *n)
    }
}

impl HostView for FakeHost {
    fn mount_propagation(&self, path: &Path) -> io::Result<Propagation> {
        Ok(self
            .propagation
            .iter()
            .filter(|(p, _)| path.starts_with(p))
            .max_by_key(|(p, _)| p.components().count())
            .map_or(Propagation::Private, |(_, prop)| *prop))
    }

    fn real_path(&self, path: &Path) -> io::Result<PathBuf> {
        Ok(self
            .real
            .get(path)
            .cloned()
            .unwrap_or_else(|| path.to_path_buf()))
    }

    fn device_nodes(&self, path: &Path) -> io::Result<Vec<(PathBuf, DeviceNode)>> {
        self.devices
            .get(path)
            .cloned()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn host_devices(&self) -> io::Result<Vec<DeviceNode>> {
        Ok(self.host_devices.clone())
    }

    fn read_profile(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.profiles
            .get(path)
            .cloned()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn apparmor_profile_loaded(&self, name: &str) -> io::Result<bool> {
        let l = self
            .apparmor_loaded
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        Ok(l.iter().any(|n| n == name))
    }

    fn load_default_apparmor_profile(&self) -> io::Result<()> {
        if self.apparmor_load_fails {
            return Err(io::Error::other("apparmor_parser: exit status 1"));
        }
        *self
            .apparmor_loads
            .lock()
            .map_err(|_| io::Error::other("poisoned"))? += 1;
        self.apparmor_loaded
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .push(super::apparmor::DEFAULT_PROFILE.to_string());
        Ok(())
    }
}
