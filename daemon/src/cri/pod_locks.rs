//! One async read/write lock per pod sandbox: CreateContainer and
//! StartContainer hold it shared, StopPodSandbox and RemovePodSandbox
//! exclusively, so a container cannot be created or started in a pod
//! whose teardown has begun (it would outlive the pod).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// The per-pod locks, created on first use.
#[derive(Default)]
pub struct PodLocks {
    locks: Mutex<HashMap<String, Arc<RwLock<()>>>>,
}

impl PodLocks {
    fn lock_of(&self, sandbox_id: &str) -> Arc<RwLock<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(m.entry(sandbox_id.to_string()).or_default())
    }

    /// Shared hold: container work inside the pod.
    pub async fn shared(&self, sandbox_id: &str) -> OwnedRwLockReadGuard<()> {
        self.lock_of(sandbox_id).read_owned().await
    }

    /// Exclusive hold: the pod's teardown.
    pub async fn exclusive(&self, sandbox_id: &str) -> OwnedRwLockWriteGuard<()> {
        self.lock_of(sandbox_id).write_owned().await
    }

    /// Drops the lock of a removed pod.
    pub fn forget(&self, sandbox_id: &str) {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(sandbox_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn teardown_waits_for_container_work_and_blocks_new_work() {
        let locks = Arc::new(PodLocks::default());
        let create = locks.shared("sb").await;
        // Other pods are independent.
        drop(locks.exclusive("other").await);
        let l = Arc::clone(&locks);
        let teardown = tokio::spawn(async move { l.exclusive("sb").await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!teardown.is_finished(), "teardown must wait for a create");
        drop(create);
        let held = teardown.await.unwrap();
        let l = Arc::clone(&locks);
        let late = tokio::spawn(async move { drop(l.shared("sb").await) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!late.is_finished(), "a create waits for the teardown");
        drop(held);
        late.await.unwrap();
        locks.forget("sb");
    }
}
