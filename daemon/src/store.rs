//! The state store: one JSON file per object under a directory, each
//! `{"version":N, ...record}`, written only through [`Store::put`] (write a
//! temp file, fsync it, rename it over the record, fsync the directory), so a
//! crash leaves either the old or the new record, never a torn one.
//! [`write_atomic`] is that write, also used for other files crid must
//! find whole after a crash. A record that is torn anyway (disk damage, a
//! hand edit) is reported by [`Store::load_all`] and skipped; temp files of
//! writes cut by a crash are removed at [`Store::open`].

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Temp files of [`write_atomic`] start with this (and `.`).
const TMP_MARK: &str = ".tmp-";

/// Writes `body` to `path` so that a crash at any point leaves either the
/// old file or the new one, whole: a unique temp file beside it, fsync,
/// rename over `path`, fsync of the directory. Concurrent writers of one
/// path each rename a whole file (the last one wins).
pub fn write_atomic(path: &Path, body: &[u8]) -> Result<(), StoreError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| StoreError::Io { path: p, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        "{TMP_MARK}{}-{}-{name}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(path)(e));
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Removes the temp files of writes a crash cut short in `dir`.
fn remove_stale_temps(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        // `.<id>.json.tmp` is the name older builds used.
        if name.starts_with(TMP_MARK) || (name.starts_with('.') && name.ends_with(".json.tmp")) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::info!(file = %e.path().display(), "removed the temp file of an interrupted write")
                }
                Err(err) => {
                    tracing::warn!(file = %e.path().display(), error = %err, "cannot remove a stale temp file")
                }
            }
        }
    }
}

impl<T: Serialize + DeserializeOwned> Store<T> {
    /// Opens (creating) the store dir; `version` is the record format version
    /// written, and the newest one read. Removes temp files left by a crash
    /// (call before any [`Store::put`]).
    pub fn open(dir: &Path, version: u32) -> Result<Store<T>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        remove_stale_temps(dir);
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
        let body = serde_json::to_vec_pretty(&EnvelopeRef {
            version: self.version,
            record,
        })
        .map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &body)
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
        // Every kind of damage a record can have: empty (cut before its
        // data reached the disk), binary garbage, invalid UTF-8, a JSON
        // value of the wrong shape, a directory in its place.
        std::fs::write(d.path().join("empty.json"), "").unwrap();
        std::fs::write(d.path().join("zeros.json"), [0u8; 4096]).unwrap();
        std::fs::write(
            d.path().join("utf8.json"),
            b"{\"version\":1,\"id\":\"\xff\xfe\",\"n\":1}",
        )
        .unwrap();
        std::fs::write(d.path().join("shape.json"), "[1,2,3]").unwrap();
        std::fs::create_dir(d.path().join("dir.json")).unwrap();
        let (ok, bad) = s.load_all().unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(bad.len(), 7, "{bad:?}");
        // Every damaged record is named in its report.
        for name in ["torn", "new", "empty", "zeros", "utf8", "shape", "dir"] {
            assert!(
                bad.iter()
                    .any(|e| e.to_string().contains(&format!("{name}.json"))),
                "{name}.json not reported"
            );
        }
    }

    #[test]
    fn temps_of_cut_writes_are_removed_at_open_and_records_kept() {
        let d = tempfile::tempdir().unwrap();
        {
            let s: Store<Rec> = Store::open(d.path(), 1).unwrap();
            s.put(
                "a",
                &Rec {
                    id: "a".into(),
                    n: 1,
                },
            )
            .unwrap();
        }
        std::fs::write(d.path().join(".tmp-1-2-a.json"), "{\"ver").unwrap();
        std::fs::write(d.path().join(".a.json.tmp"), "junk").unwrap();
        let s: Store<Rec> = Store::open(d.path(), 1).unwrap();
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a.json".to_string()]);
        assert_eq!(
            s.load_all().unwrap().0,
            vec![Rec {
                id: "a".into(),
                n: 1
            }]
        );
    }

    #[test]
    fn concurrent_puts_of_one_record_leave_a_whole_one() {
        let d = tempfile::tempdir().unwrap();
        let s: std::sync::Arc<Store<Rec>> = std::sync::Arc::new(Store::open(d.path(), 1).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = std::sync::Arc::clone(&s);
                std::thread::spawn(move || {
                    for i in 0..50 {
                        s.put(
                            "x",
                            &Rec {
                                id: "x".repeat(1 + t * 100),
                                n: i,
                            },
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (ok, bad) = s.load_all().unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].n, 49);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }
}
