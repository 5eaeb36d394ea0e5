//! The state store: one JSON file per object under a directory, each
//! `{"version":N, ...record}`, written only through [`Store::put`] (write a
//! temp file, fsync it, rename it over the record, fsync the directory), so a
//! crash leaves either the old or the new record, never a torn one.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A failed store operation.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Reading or writing a record failed.
    #[error("state store {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A record is not the JSON expected.
    #[error("state record {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl From<StoreError> for crate::error::Error {
    fn from(e: StoreError) -> Self {
        crate::error::Error::Internal(e.to_string())
    }
}

#[derive(Serialize)]
struct EnvelopeRef<'a, T> {
    version: u32,
    #[serde(flatten)]
    record: &'a T,
}

#[derive(Deserialize)]
struct Envelope<T> {
    version: u32,
    #[serde(flatten)]
    record: T,
}

/// Records of one kind (e.g. sandboxes) in one directory, keyed by id.
#[derive(Debug)]
pub struct Store<T> {
    dir: PathBuf,
    version: u32,
    _kind: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Store<T> {
    /// Opens (creating) the store dir; `version` is the record format version
    /// written, and the newest one read.
    pub fn open(dir: &Path, version: u32) -> Result<Store<T>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Store {
            dir: dir.to_path_buf(),
            version,
            _kind: PhantomData,
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The one atomic update: replaces (or creates) the record of `id`.
    /// `id` must already be checked as a path component.
    pub fn put(&self, id: &str, record: &T) -> Result<(), StoreError> {
        let path = self.path(id);
        let tmp = self.dir.join(format!(".{id}.json.tmp"));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StoreError::Io { path: p, source }
        };
        let body = serde_json::to_vec_pretty(&EnvelopeRef {
            version: self.version,
            record,
        })
        .map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&body).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }

    /// Deletes the record of `id`; a missing record is fine.
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        let path = self.path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(StoreError::Io { path, source }),
        }
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| StoreError::Io {
                path: self.dir.clone(),
                source,
            })
    }

    /// Every record, with the unreadable ones reported separately (crid logs
    /// them and carries on rather than refusing to start).
    pub fn load_all(&self) -> Result<(Vec<T>, Vec<StoreError>), StoreError> {
        let rd = std::fs::read_dir(&self.dir).map_err(|source| StoreError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for entry in rd.filter_map(Result::ok) {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            match self.read(&path) {
                Ok(r) => ok.push(r),
                Err(e) => bad.push(e),
            }
        }
        Ok((ok, bad))
    }

    fn read(&self, path: &Path) -> Result<T, StoreError> {
        let bytes = std::fs::read(path).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let env: Envelope<T> = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if env.version > self.version {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: format!(
                    "record version {} is newer than this build's {}",
                    env.version, self.version
                ),
            });
        }
        Ok(env.record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        id: String,
        n: u32,
    }

    #[test]
    fn put_load_replace_delete() {
        let d = tempfile::tempdir().unwrap();
        let s: Store<Rec> = Store::open(&d.path().join("recs"), 1).unwrap();
        s.put(
            "a",
            &Rec {
                id: "a".into(),
                n: 1,
            },
        )
        .unwrap();
        s.put(
            "a",
            &Rec {
                id: "a".into(),
                n: 2,
            },
        )
        .unwrap();
        s.put(
            "b",
            &Rec {
                id: "b".into(),
                n: 3,
            },
        )
        .unwrap();
        let raw = std::fs::read_to_string(d.path().join("recs/a.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["n"], 2);
        let (mut all, bad) = s.load_all().unwrap();
        all.sort_by(|x, y| x.id.cmp(&y.id));
        assert!(bad.is_empty());
        assert_eq!(
            all,
            vec![
                Rec {
                    id: "a".into(),
                    n: 2
                },
                Rec {
                    id: "b".into(),
                    n: 3
                }
            ]
        );
        s.delete("a").unwrap();
        s.delete("a").unwrap();
        assert_eq!(s.load_all().unwrap().0.len(), 1);
        let leftovers: Vec<_> = std::fs::read_dir(d.path().join("recs"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temp files left: {leftovers:?}");
    }

    #[test]
    fn corrupt_and_future_records_are_reported_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        let s: Store<Rec> = Store::open(d.path(), 1).unwrap();
        s.put(
            "ok",
            &Rec {
                id: "ok".into(),
                n: 1,
            },
        )
        .unwrap();
        std::fs::write(d.path().join("torn.json"), "{\"vers").unwrap();
        std::fs::write(d.path().join("new.json"), r#"{"version":9,"id":"x","n":1}"#).unwrap();
        std::fs::write(d.path().join(".x.json.tmp"), "junk").unwrap();
        let (ok, bad) = s.load_all().unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(bad.len(), 2);
    }
}
