//! Per-file serialization of writes and edits, so two concurrent
//! read-modify-write edits of one file never lose an update. Keyed by the real
//! workspace-relative path (what a symlink resolves to), so two names for one
//! file share a lock. Entries are dropped once nobody holds them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Debug, Default)]
pub struct FileLocks {
    locks: Mutex<HashMap<String, Weak<AsyncMutex<()>>>>,
}

impl FileLocks {
    /// Wait for exclusive use of `rel_path` (a real, workspace-relative path).
    pub async fn lock(&self, rel_path: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.locks.lock().expect("file lock table poisoned");
            if map.len() > 1024 {
                map.retain(|_, weak| weak.strong_count() > 0);
            }
            match map.get(rel_path).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(AsyncMutex::new(()));
                    map.insert(rel_path.to_string(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_path_is_exclusive_other_paths_are_not() {
        let locks = FileLocks::default();
        let a = locks.lock("a").await;
        let _b = locks.lock("b").await;
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("a")).await;
        assert!(waiting.is_err(), "second lock on `a` must wait");
        drop(a);
        let _a2 = locks.lock("a").await;
    }
}
