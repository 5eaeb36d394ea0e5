//! Where formatted log entries go: the container's CRI log file, behind
//! [`LogSink`] so the drain's error handling (a full disk) is tested with a fake.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of a log file the helper creates (the kubelet's log readers are root
/// or in the file's group).
pub const LOG_FILE_MODE: u32 = 0o640;

/// Receives whole log entries.
pub trait LogSink: Send {
    /// Appends `buf` (whole entries). On error nothing of `buf` may remain,
    /// so a dropped batch never leaves a torn entry in front of later ones.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Reopens the log path (the old file was renamed away); creates the new file.
    fn reopen(&mut self) -> io::Result<()>;
}

/// The CRI log file at a path, appended to.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    file: Option<File>,
}

impl FileSink {
    /// Opens (creating it and its parent dir if missing) the log file at `path`.
    pub fn open(path: &Path) -> io::Result<FileSink> {
        Ok(FileSink {
            path: path.to_path_buf(),
            file: Some(open_log(path)?),
        })
    }
}

/// Opens `path` for appending; a new file gets [`LOG_FILE_MODE`] whatever the umask.
fn open_log(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(LOG_FILE_MODE)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => {
            f.set_permissions(std::fs::Permissions::from_mode(LOG_FILE_MODE))?;
            Ok(f)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path),
        Err(e) => Err(e),
    }
}

impl LogSink for FileSink {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            // A reopen failed earlier (e.g. no space for the new inode): retry.
            self.file = Some(open_log(&self.path)?);
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("log file not open"));
        };
        let before = file.metadata()?.len();
        match file.write_all(buf) {
            Ok(()) => Ok(()),
            Err(e) => {
                // Cut a partly written batch back off (ENOSPC mid-write).
                if file.metadata().is_ok_and(|m| m.len() > before) {
                    let _ = file.set_len(before);
                }
                Err(e)
            }
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        self.file = Some(open_log(&self.path)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_dir_and_file_with_mode_0640_and_appends() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("pods/ns_name_uid/c/0.log");
        let mut s = FileSink::open(&path).unwrap();
        s.append(b"a\n").unwrap();
        s.append(b"b\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"a\nb\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, LOG_FILE_MODE);
        // An existing file is appended to, not truncated.
        let mut again = FileSink::open(&path).unwrap();
        again.append(b"c\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"a\nb\nc\n");
    }

    #[test]
    fn reopen_after_rename_writes_a_new_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("0.log");
        let mut s = FileSink::open(&path).unwrap();
        s.append(b"old\n").unwrap();
        let rotated = d.path().join("0.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        s.reopen().unwrap();
        assert!(path.exists(), "the new file exists once reopen returns");
        s.append(b"new\n").unwrap();
        assert_eq!(std::fs::read(&rotated).unwrap(), b"old\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
    }
}
