//! The FIFOs of one exec process, under `<sandbox dir>/io/exec/<exec id>/`,
//! removed with the value. Opened so that nobody blocks in `open` and end of
//! file arrives when it should:
//! - stdout/stderr: our read side `O_RDONLY|O_NONBLOCK`, plus a *keeper*
//!   write side held until the process has started (the shim then holds its
//!   own), so a read before the shim opens its end does not see end of file;
//! - stdin: `O_RDWR|O_NONBLOCK` (a FIFO opened read-write never blocks);
//!   dropping it is the process's end of input.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// One output FIFO.
pub struct OutFifo {
    /// Its path (handed to containerd).
    pub path: PathBuf,
    /// Our read side.
    pub read: File,
    keeper: Option<File>,
}

/// The exec's FIFOs.
pub struct ExecFifos {
    dir: PathBuf,
    /// stdin: path and our read-write side.
    pub stdin: Option<(PathBuf, File)>,
    /// stdout.
    pub stdout: Option<OutFifo>,
    /// stderr.
    pub stderr: Option<OutFifo>,
}

fn mkfifo(p: &Path) -> Result<(), String> {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| format!("mkfifo {}: {e}", p.display()))
}

fn open(p: &Path, read: bool, write: bool) -> Result<File, String> {
    OpenOptions::new()
        .read(read)
        .write(write)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(p)
        .map_err(|e| format!("opening {}: {e}", p.display()))
}

fn out(dir: &Path, name: &str) -> Result<OutFifo, String> {
    let path = dir.join(name);
    mkfifo(&path)?;
    let read = open(&path, true, false)?;
    let keeper = Some(open(&path, false, true)?);
    Ok(OutFifo { path, read, keeper })
}

impl ExecFifos {
    /// Makes the FIFOs asked for under `root/<exec_id>`.
    pub fn make(
        root: &Path,
        exec_id: &str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> Result<ExecFifos, String> {
        crid_common::ids::check_component("exec id", exec_id).map_err(|e| e.to_string())?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| format!("creating {}: {e}", root.display()))?;
        let dir = root.join(exec_id);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // From here on, Drop removes the dir.
        let mut f = ExecFifos {
            dir,
            stdin: None,
            stdout: None,
            stderr: None,
        };
        if stdin {
            let p = f.dir.join("stdin");
            mkfifo(&p)?;
            let file = open(&p, true, true)?;
            f.stdin = Some((p, file));
        }
        if stdout {
            f.stdout = Some(out(&f.dir, "stdout")?);
        }
        if stderr {
            f.stderr = Some(out(&f.dir, "stderr")?);
        }
        Ok(f)
    }

    /// The paths, in the order stdin, stdout, stderr.
    pub fn paths(&self) -> (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>) {
        (
            self.stdin.as_ref().map(|(p, _)| p.clone()),
            self.stdout.as_ref().map(|o| o.path.clone()),
            self.stderr.as_ref().map(|o| o.path.clone()),
        )
    }

    /// The process runs (or will never): stop holding the output write
    /// sides, so end of file comes when the process's side closes.
    pub fn drop_keepers(&mut self) {
        for o in [self.stdout.as_mut(), self.stderr.as_mut()]
            .into_iter()
            .flatten()
        {
            o.keeper = None;
        }
    }
}

impl Drop for ExecFifos {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn fifos_are_made_read_to_eof_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("exec");
        let mut f = ExecFifos::make(&root, "e1", true, true, false).unwrap();
        let (i, o, e) = f.paths();
        assert!(i.is_some() && o.is_some() && e.is_none());
        // A writer (the "shim") opens, writes, closes.
        let mut w = OpenOptions::new().write(true).open(o.unwrap()).unwrap();
        w.write_all(b"out").unwrap();
        drop(w);
        let mut buf = [0u8; 8];
        let out = f.stdout.as_mut().unwrap();
        assert_eq!(out.read.read(&mut buf).unwrap(), 3);
        // The keeper holds the write side: no end of file yet.
        assert_eq!(
            out.read.read(&mut buf).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        f.drop_keepers();
        assert_eq!(f.stdout.as_mut().unwrap().read.read(&mut buf).unwrap(), 0);
        assert!(ExecFifos::make(&root, "../x", false, true, false).is_err());
        drop(f);
        assert!(!root.join("e1").exists());
    }
}
