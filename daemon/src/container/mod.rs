//! Containers: records, name reservation within a pod, and crid's containerd
//! calls for them (`ctrd.rs`). The CRI translation (what CreateContainer
//! does step by step) is in `cri/container.rs`.

pub mod ctrd;
pub mod exec;
pub mod exit;
pub mod image_volume;
pub mod record;
pub mod rootfs;
pub mod spec_ctrd;
pub mod task;
pub mod update;

use crate::error::{Error, Result};
use crate::store::Store;
use crid_common::config::Config;
use record::{ContainerRecord, RECORD_VERSION};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// (sandbox id, name, attempt): what a container name is unique by.
pub type NameKey = (String, String, u32);

/// All containers: the records in memory, persisted through the store.
pub struct Containers {
    /// Node facts for spec generation, read once at start.
    pub host: crate::spec::HostFacts,
    store: Store<ContainerRecord>,
    inner: Mutex<Inner>,
    /// One async lock per container serialising start, exit handling and
    /// removal (held across containerd calls, hence tokio's mutex).
    ops: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, ContainerRecord>,
    names: HashMap<NameKey, String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock must not wedge every later call.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The key a record reserves.
pub fn name_key(r: &ContainerRecord) -> NameKey {
    (r.sandbox_id.clone(), r.name.clone(), r.attempt)
}

impl Containers {
    /// Opens the store under `<state_dir>/containers` and loads the records.
    pub fn open(config: &Config) -> Result<Containers> {
        let store = Store::open(&config.state_dir.join("containers"), RECORD_VERSION)?;
        let (records, bad) = store.load_all()?;
        for e in bad {
            tracing::error!(error = %e, "skipping unreadable container record");
        }
        let mut inner = Inner::default();
        for r in records {
            inner.names.insert(name_key(&r), r.id.clone());
            inner.by_id.insert(r.id.clone(), r);
        }
        let host = crate::spec::host::read_host_facts().map_err(|e| {
            Error::Internal(format!(
                "reading the node's cgroup and capability facts: {e}"
            ))
        })?;
        Ok(Containers {
            host,
            store,
            inner: Mutex::new(inner),
            ops: Mutex::new(HashMap::new()),
        })
    }

    /// Reserves `key` for `id`; AlreadyExists naming the holder otherwise.
    pub fn reserve(&self, key: NameKey, id: &str) -> Result<()> {
        let mut inner = lock(&self.inner);
        if let Some(holder) = inner.names.get(&key) {
            return Err(Error::AlreadyExists(format!(
                "container name {:?} (attempt {}) in pod sandbox {} is reserved by container {holder}",
                key.1, key.2, key.0
            )));
        }
        inner.names.insert(key, id.to_string());
        Ok(())
    }

    /// Frees a reservation made by `id` (no-op if someone else holds it).
    pub fn release(&self, key: &NameKey, id: &str) {
        let mut inner = lock(&self.inner);
        if inner.names.get(key).map(String::as_str) == Some(id) {
            inner.names.remove(key);
        }
    }

    /// Persists `rec` (the one atomic update) and makes it visible.
    pub fn put(&self, rec: ContainerRecord) -> Result<()> {
        self.store.put(&rec.id, &rec)?;
        lock(&self.inner).by_id.insert(rec.id.clone(), rec);
        Ok(())
    }

    /// Applies `f` to the record of `id` and persists the result through
    /// the one atomic write; `None` if there is no such record.
    pub fn update(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerRecord),
    ) -> Result<Option<ContainerRecord>> {
        let mut inner = lock(&self.inner);
        let Some(cur) = inner.by_id.get(id) else {
            return Ok(None);
        };
        let mut next = cur.clone();
        f(&mut next);
        // Persist before publishing: a failed write leaves memory unchanged.
        self.store.put(id, &next)?;
        inner.by_id.insert(id.to_string(), next.clone());
        Ok(Some(next))
    }

    /// The lock serialising lifecycle operations on container `id`.
    pub fn op_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(lock(&self.ops).entry(id.to_string()).or_default())
    }

    /// Deletes the record of `id` and frees its name.
    pub fn delete(&self, id: &str) -> Result<()> {
        lock(&self.ops).remove(id);
        self.store.delete(id)?;
        let mut inner = lock(&self.inner);
        if let Some(r) = inner.by_id.remove(id) {
            let key = name_key(&r);
            if inner.names.get(&key).map(String::as_str) == Some(id) {
                inner.names.remove(&key);
            }
        }
        Ok(())
    }

    /// The record of `id` or of the one id `id` is a unique prefix of;
    /// `Ok(None)` if there is none, an error for an empty or ambiguous id.
    pub fn get(&self, id: &str) -> Result<Option<ContainerRecord>> {
        let inner = lock(&self.inner);
        let full = crid_common::ids::resolve_prefix(
            "container id",
            id,
            inner.by_id.keys().map(String::as_str),
        )?;
        Ok(full.and_then(|f| inner.by_id.get(f).cloned()))
    }

    /// Copies of all records.
    pub fn all(&self) -> Vec<ContainerRecord> {
        lock(&self.inner).by_id.values().cloned().collect()
    }

    /// Copies of the records of one pod sandbox.
    pub fn of_sandbox(&self, sandbox_id: &str) -> Vec<ContainerRecord> {
        lock(&self.inner)
            .by_id
            .values()
            .filter(|r| r.sandbox_id == sandbox_id)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, sb: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            name: name.into(),
            ..ContainerRecord::sample(id, sb)
        }
    }

    /// A config whose state dir is a fresh temp dir (kept alive by the caller).
    fn state_dir() -> (tempfile::TempDir, Config) {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config {
            state_dir: d.path().to_path_buf(),
            ..Default::default()
        };
        (d, cfg)
    }

    #[test]
    fn names_are_reserved_persisted_and_reloaded() {
        let (d, cfg) = state_dir();
        let _keep = d;
        let c = Containers::open(&cfg).unwrap();
        let key: NameKey = ("sb".into(), "web".into(), 0);
        c.reserve(key.clone(), "c1").unwrap();
        let err = c.reserve(key.clone(), "c2").unwrap_err();
        assert!(matches!(err, Error::AlreadyExists(m) if m.contains("c1")));
        c.put(rec("c1", "sb", "web")).unwrap();
        c.put(rec("c3", "other", "web")).unwrap();
        // A restarted crid knows the records and their names.
        let again = Containers::open(&cfg).unwrap();
        assert_eq!(again.get("c1").unwrap().unwrap().name, "web");
        assert!(again.reserve(key.clone(), "c2").is_err());
        assert_eq!(again.of_sandbox("sb").len(), 1);
        again.delete("c1").unwrap();
        assert!(again.get("c1").unwrap().is_none());
        again.reserve(key, "c2").unwrap();
        assert_eq!(Containers::open(&cfg).unwrap().all().len(), 1);
    }

    #[test]
    fn release_frees_only_its_own_reservation() {
        let (d, cfg) = state_dir();
        let _keep = d;
        let c = Containers::open(&cfg).unwrap();
        let key: NameKey = ("sb".into(), "web".into(), 0);
        c.reserve(key.clone(), "c1").unwrap();
        c.release(&key, "c2");
        assert!(c.reserve(key.clone(), "c2").is_err());
        c.release(&key, "c1");
        c.reserve(key, "c2").unwrap();
    }
}
