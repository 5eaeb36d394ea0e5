//! The pod's containers' stdio: FIFOs under `<sandbox dir>/io/<container id>/`,
//! made at [`ContainerIo::prepare`] and handed (by path) to containerd's task,
//! each drained into its CRI log file by one thread.
//!
//! The helper opens the read sides itself, `O_RDONLY|O_NONBLOCK`, before
//! answering: neither the helper nor the shim blocks in `open`, and the shim
//! finds a reader, so the container's writes never meet EPIPE. The drain
//! stays non-blocking (one `poll` per round) so it sees end of file when the
//! last writer closes.

use super::drain::{drain_with_tap, Command, DrainConfig};
use super::format::{Stream, DEFAULT_MAX_LINE};
use super::sink::FileSink;
use super::tap::{Chunk, Tap};
use crid_common::protocol::{ContainerIoSpec, Response};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest a control request waits for a drain to answer a reopen (a drain
/// blocked on a very slow disk answers late rather than never).
const REOPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Stack of a drain thread (its buffers are on the heap).
const DRAIN_STACK: usize = 128 * 1024;

/// All containers' io of this pod.
pub struct ContainerIo {
    /// `<sandbox dir>/io`.
    dir: PathBuf,
    containers: Mutex<HashMap<String, Entry>>,
}

/// One container's io.
struct Entry {
    spec: ContainerIoSpec,
    paths: Paths,
    commands: Sender<Command>,
    /// Write end of the drain's wake pipe.
    wake: File,
    thread: Option<JoinHandle<()>>,
    /// The helper's write side of the stdin FIFO (held for attach; dropped
    /// after the first attach with `stdin_once`).
    stdin: Option<File>,
    /// Attach clients of the live output.
    tap: Arc<Tap>,
}

/// An attach client's view of a container's stdio; unsubscribes on drop.
pub struct Attached {
    /// Live output chunks; ends when the container's output ends.
    pub output: tokio::sync::mpsc::Receiver<Chunk>,
    /// A write handle on the stdin FIFO (the container has stdin).
    pub stdin: Option<File>,
    /// The container has a tty (one stream).
    pub tty: bool,
    /// The container's stdin closes after this attach (`stdin_once`).
    pub stdin_once: bool,
    id: u64,
    tap: Arc<Tap>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.tap.unsubscribe(self.id);
    }
}

#[derive(Debug, Clone)]
struct Paths {
    stdin: Option<PathBuf>,
    stdout: PathBuf,
    stderr: Option<PathBuf>,
}

impl Paths {
    fn response(&self) -> Response {
        Response::ContainerIo {
            stdin: self.stdin.clone(),
            stdout: self.stdout.clone(),
            stderr: self.stderr.clone(),
        }
    }
}

impl ContainerIo {
    /// No containers yet; FIFOs will live under `dir`.
    pub fn new(dir: PathBuf) -> ContainerIo {
        ContainerIo {
            dir,
            containers: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panicked holder cannot leave the map inconsistent (inserts and
        // removes are single calls), so a poisoned lock is still usable.
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the FIFOs, opens the log, starts the drain; answers with the
    /// paths. Asking again with the same spec returns the same paths (a retry).
    pub fn prepare(&self, spec: &ContainerIoSpec) -> Result<Response, String> {
        crid_common::ids::check_component("container id", &spec.container_id)
            .map_err(|e| e.to_string())?;
        if !spec.log_path.is_absolute() {
            return Err(format!(
                "log path {} is not absolute",
                spec.log_path.display()
            ));
        }
        let mut map = self.lock();
        if let Some(e) = map.get(&spec.container_id) {
            if e.spec == *spec {
                return Ok(e.paths.response());
            }
            return Err(format!(
                "io of container {} is already prepared differently",
                spec.container_id
            ));
        }
        let dir = self.dir.join(&spec.container_id);
        let made = self.make(spec, &dir, true);
        match made {
            Ok(entry) => {
                let r = entry.paths.response();
                map.insert(spec.container_id.clone(), entry);
                Ok(r)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Opens a container's FIFOs and log and starts its drain; `fresh`
    /// makes the dir, FIFOs and `io.json`, otherwise (adoption) they must exist.
    fn make(&self, spec: &ContainerIoSpec, dir: &Path, fresh: bool) -> Result<Entry, String> {
        let err = |what: &str, p: &Path, e: &dyn std::fmt::Display| {
            format!("{what} {}: {e}", p.display())
        };
        if fresh {
            // Leftovers of an earlier attempt (same id) are replaced.
            let _ = std::fs::remove_dir_all(dir);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| err("creating", dir, &e))?;
        }
        let mkfifo = |p: &Path| if fresh { mkfifo(p) } else { Ok(()) };
        let sink = FileSink::open(&spec.log_path)
            .map_err(|e| err("opening the container log", &spec.log_path, &e))?;
        let mut inputs = Vec::new();
        let stdout = dir.join("stdout");
        mkfifo(&stdout)?;
        inputs.push((Stream::Stdout, open_read_side(&stdout)?));
        let stderr = if spec.tty {
            None
        } else {
            let p = dir.join("stderr");
            mkfifo(&p)?;
            inputs.push((Stream::Stderr, open_read_side(&p)?));
            Some(p)
        };
        let (stdin, stdin_file) = if spec.stdin {
            let p = dir.join("stdin");
            mkfifo(&p)?;
            // O_RDWR never blocks and keeps the shim's reader from seeing
            // end of file until attach (later) closes it.
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(&p)
                .map_err(|e| err("opening", &p, &e))?;
            (Some(p), Some(f))
        } else {
            (None, None)
        };
        if fresh {
            write_spec(dir, spec)?;
        }
        let (wake_r, wake_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| format!("creating a wake pipe: {e}"))?;
        let (tx, rx) = mpsc::channel();
        let cfg = DrainConfig {
            max_line: spec.max_line_bytes.unwrap_or(DEFAULT_MAX_LINE),
            ..DrainConfig::default()
        };
        let id = spec.container_id.clone();
        let tap = Arc::new(Tap::default());
        let drain_tap = Arc::clone(&tap);
        let thread = std::thread::Builder::new()
            .name(format!("drain-{}", &id[..id.len().min(8)]))
            .stack_size(DRAIN_STACK)
            .spawn(move || {
                let mut sink = sink;
                let stats = drain_with_tap(
                    inputs,
                    File::from(wake_r),
                    rx,
                    &mut sink,
                    cfg,
                    Some(drain_tap),
                );
                crate::log(&format!(
                    "container {id}: output ended; {} entries logged, {} dropped",
                    stats.entries_written, stats.entries_dropped
                ));
            })
            .map_err(|e| format!("starting a log drain thread: {e}"))?;
        Ok(Entry {
            spec: spec.clone(),
            paths: Paths {
                stdin,
                stdout,
                stderr,
            },
            commands: tx,
            wake: File::from(wake_w),
            thread: Some(thread),
            stdin: stdin_file,
            tap,
        })
    }

    /// Attaches to a container's live stdio.
    pub fn attach(&self, container_id: &str) -> Result<Attached, String> {
        let map = self.lock();
        let e = map
            .get(container_id)
            .ok_or_else(|| format!("container {container_id} has no io in this pod"))?;
        let stdin = match &e.stdin {
            Some(f) => Some(f.try_clone().map_err(|e| format!("stdin: {e}"))?),
            None => None,
        };
        let (id, output) = e.tap.subscribe();
        Ok(Attached {
            output,
            stdin,
            tty: e.spec.tty,
            stdin_once: e.spec.stdin_once,
            id,
            tap: Arc::clone(&e.tap),
        })
    }

    /// Drops the helper's stdin write side (`stdin_once` after the first
    /// attach); crid then closes the shim's (Tasks.CloseIO).
    pub fn close_stdin(&self, container_id: &str) {
        if let Some(e) = self.lock().get_mut(container_id) {
            e.stdin = None;
        }
    }

    /// Reopens a container's log path; returns once the new file exists.
    pub fn reopen(&self, container_id: &str) -> Result<(), String> {
        let (reply_tx, reply_rx) = mpsc::channel();
        {
            let mut map = self.lock();
            let Some(e) = map.get_mut(container_id) else {
                return Err(format!("container {container_id} has no io in this pod"));
            };
            if e.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return Err(format!("container {container_id} is not running"));
            }
            e.send(Command::Reopen(reply_tx))
                .map_err(|_| format!("container {container_id} is not running"))?;
        }
        match reply_rx.recv_timeout(REOPEN_TIMEOUT) {
            Ok(r) => r.map_err(|e| format!("reopening the log of {container_id}: {e}")),
            // The drain ended (the container's output closed) before reopening.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(format!("container {container_id} is not running"))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
                "reopening the log of {container_id}: no answer within {REOPEN_TIMEOUT:?}"
            )),
        }
    }

    /// Stops a container's drain (writing what it holds) and removes its
    /// FIFOs. Unknown ids succeed (idempotent).
    pub fn release(&self, container_id: &str) -> Result<(), String> {
        let entry = self.lock().remove(container_id);
        if let Some(mut e) = entry {
            let _ = e.send(Command::Stop);
            if let Some(t) = e.thread.take() {
                let _ = t.join();
            }
        }
        let dir = self.dir.join(container_id);
        if crid_common::ids::check_component("container id", container_id).is_ok() {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("removing {}: {e}", dir.display())),
            }
        }
        Ok(())
    }

    /// Takes over the containers a dead predecessor served (from each
    /// `io/<id>/io.json`): reopens their FIFOs and logs and drains on. What
    /// the predecessor had read but not written is lost; nothing else.
    pub fn adopt(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let Ok(dirs) = std::fs::read_dir(&self.dir) else {
            return notes;
        };
        for d in dirs.flatten() {
            let dir = d.path();
            let spec = match std::fs::read(dir.join(SPEC_FILE))
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<ContainerIoSpec>(&b).map_err(|e| e.to_string())
                }) {
                Ok(s) => s,
                Err(e) => {
                    notes.push(format!("not adopting {}: {e}", dir.display()));
                    continue;
                }
            };
            if d.file_name().to_str() != Some(spec.container_id.as_str()) {
                notes.push(format!("not adopting {}: id mismatch", dir.display()));
                continue;
            }
            match self.make(&spec, &dir, false) {
                Ok(entry) => {
                    notes.push(format!("adopted the io of container {}", spec.container_id));
                    self.lock().insert(spec.container_id.clone(), entry);
                }
                Err(e) => notes.push(format!(
                    "cannot adopt the io of container {}: {e}",
                    spec.container_id
                )),
            }
        }
        notes
    }

    /// Stops a drain without removing its files, as a killed helper would
    /// leave them (tests of adoption).
    #[cfg(test)]
    pub fn abandon(&self, container_id: &str) {
        if let Some(mut e) = self.lock().remove(container_id) {
            let _ = e.send(Command::Stop);
            if let Some(t) = e.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Stops every drain, writing what they hold (before the helper exits).
    pub fn release_all(&self) {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        for id in ids {
            if let Err(e) = self.release(&id) {
                crate::log(&e);
            }
        }
    }
}

impl Entry {
    fn send(&mut self, cmd: Command) -> Result<(), ()> {
        self.commands.send(cmd).map_err(|_| ())?;
        // The pipe is non-blocking: if it is full, the drain is already due
        // to wake up.
        let _ = self.wake.write(&[1]);
        Ok(())
    }
}

/// The request a container's io was made from, kept for a restarted helper.
const SPEC_FILE: &str = "io.json";

/// Writes `io.json` atomically (temp file, fsync, rename).
fn write_spec(dir: &Path, spec: &ContainerIoSpec) -> Result<(), String> {
    let tmp = dir.join(".io.json.tmp");
    let body = serde_json::to_vec(spec).map_err(|e| e.to_string())?;
    let r = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(SPEC_FILE))
    })();
    r.map_err(|e| format!("writing {}: {e}", dir.join(SPEC_FILE).display()))
}

fn mkfifo(p: &Path) -> Result<(), String> {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| format!("mkfifo {}: {e}", p.display()))
}

/// The helper's read side of an output FIFO: non-blocking, so `open` does not
/// wait for the writer and the drain sees end of file when it closes.
fn open_read_side(p: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(p)
        .map_err(|e| format!("opening {}: {e}", p.display()))
}
