//! The pod's tasks as the helper-shim keeps them: containerd's task API
//! (create, start, exec, kill, wait, delete, …) over the OCI runtime, with
//! exits from the helper's reaper. Pure bookkeeping plus [`Runtime`] calls,
//! so it is tested with a recording fake runtime.

use super::events::{make, Publish};
use super::reaper::{Exit, Reaper};
use super::runc::{ProcIo, RuncError, Runtime};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use thiserror::Error;

/// Why a task call failed; mapped to a ttrpc code in `service.rs`.
#[derive(Debug, Error)]
pub enum TaskError {
    /// No such container or exec process, or it has already exited.
    #[error("{0}")]
    NotFound(String),
    /// Already there.
    #[error("{0}")]
    AlreadyExists(String),
    /// Not in a state that allows the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A bad request.
    #[error("{0}")]
    InvalidArgument(String),
    /// Not supported by this shim.
    #[error("{0}")]
    Unimplemented(String),
    /// The OCI runtime or the OS failed.
    #[error("{0}")]
    Internal(String),
}

impl From<RuncError> for TaskError {
    fn from(e: RuncError) -> Self {
        TaskError::Internal(e.to_string())
    }
}

/// A process's state, as containerd names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Paused (the container's init only).
    Paused,
    /// Exited.
    Stopped,
}

/// The stdio paths containerd gave for a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoPaths {
    /// stdin FIFO (empty: none).
    pub stdin: String,
    /// stdout FIFO.
    pub stdout: String,
    /// stderr FIFO.
    pub stderr: String,
    /// A terminal was asked for.
    pub terminal: bool,
}

/// One process (a container's init or an exec).
#[derive(Debug)]
pub struct Proc {
    /// Host pid (0 before it exists).
    pub pid: u32,
    /// Its state.
    pub status: Status,
    /// Its end.
    pub exit: Option<Exit>,
    /// Its stdio.
    pub io: IoPaths,
    /// An exec's process spec (JSON), until started.
    spec: Option<Vec<u8>>,
    /// The terminal's master side, kept for resizes.
    pub console: Option<Arc<File>>,
}

impl Proc {
    fn new(io: IoPaths) -> Proc {
        Proc {
            pid: 0,
            status: Status::Created,
            exit: None,
            io,
            spec: None,
            console: None,
        }
    }
}

/// One container.
pub struct Container {
    /// Its bundle dir.
    pub bundle: PathBuf,
    runtime: Arc<dyn Runtime>,
    /// Its init process.
    pub init: Proc,
    /// Its exec processes by id.
    pub execs: HashMap<String, Proc>,
    rootfs_mounted: bool,
    /// Its cgroup's `memory.oom_control` and the OOM kills it counted when
    /// the container was created.
    oom: Option<(PathBuf, u64)>,
}

/// What Create needs beyond the ids.
pub struct CreateArgs {
    /// Bundle dir.
    pub bundle: PathBuf,
    /// Stdio paths.
    pub io: IoPaths,
    /// The runtime to use (from the task options).
    pub runtime: Arc<dyn Runtime>,
    /// Rootfs mounted at `<bundle>/rootfs` (by the caller).
    pub rootfs_mounted: bool,
}

/// How a process's stdio is opened and its terminal obtained: the OS side,
/// apart so the bookkeeping is testable.
pub trait ProcOs: Send + Sync {
    /// Opens the stdio (and a console socket when a terminal is asked).
    fn open_io(&self, io: &IoPaths) -> Result<(ProcIo, Option<Console>), TaskError>;
    /// After the runtime has sent the terminal: starts copying; returns the
    /// master for resizes.
    fn finish_console(
        &self,
        console: Console,
        io: &IoPaths,
    ) -> Result<Option<Arc<File>>, TaskError>;
    /// Unmounts `<bundle>/rootfs`.
    fn unmount_rootfs(&self, bundle: &Path);
    /// The `memory.oom_control` file of process `pid`'s cgroup (None: no
    /// cgroup v1 memory controller).
    fn oom_control(&self, pid: u32) -> Option<PathBuf>;
    /// OOM kills so far, from an `oom_control` file.
    fn oom_kills(&self, oom_control: &Path) -> Option<u64>;
}

/// A console socket waiting for the runtime's terminal.
pub struct Console {
    /// Its path (given to the runtime).
    pub path: PathBuf,
    /// The listener.
    pub listener: std::os::unix::net::UnixListener,
}

/// Told the exit of a process run by [`Tasks::exec_detached`].
pub type DirectExit = Box<dyn FnOnce(Exit) + Send>;

/// All tasks of the pod.
pub struct Tasks {
    state: Mutex<HashMap<String, Container>>,
    /// Processes started by [`Tasks::exec_detached`] (pid → who waits for
    /// its exit): not containerd's, so not in any exec table.
    direct: Mutex<HashMap<u32, DirectExit>>,
    exited: Condvar,
    reaper: Arc<Reaper>,
    events: Arc<dyn Publish>,
    os: Arc<dyn ProcOs>,
    /// Starts [`Tasks::exec_detached`]'s processes natively (None: always
    /// the runtime's `exec`).
    native: Option<super::nativeexec::NativeExec>,
}

fn not_found(id: &str) -> TaskError {
    TaskError::NotFound(format!("container {id} not found"))
}

impl Tasks {
    /// No tasks yet.
    pub fn new(reaper: Arc<Reaper>, events: Arc<dyn Publish>, os: Arc<dyn ProcOs>) -> Tasks {
        Tasks {
            state: Mutex::new(HashMap::new()),
            direct: Mutex::new(HashMap::new()),
            exited: Condvar::new(),
            reaper,
            events,
            os,
            native: None,
        }
    }

    /// Starts detached execs with crid-exec where it applies.
    pub fn with_native(mut self, native: super::nativeexec::NativeExec) -> Tasks {
        self.native = Some(native);
        self
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Container>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn proc_mut<'a>(
        map: &'a mut HashMap<String, Container>,
        id: &str,
        exec_id: &str,
    ) -> Result<&'a mut Proc, TaskError> {
        let c = map.get_mut(id).ok_or_else(|| not_found(id))?;
        if exec_id.is_empty() {
            Ok(&mut c.init)
        } else {
            c.execs
                .get_mut(exec_id)
                .ok_or_else(|| TaskError::NotFound(format!("exec {exec_id} of {id} not found")))
        }
    }

    /// Marks the claimed process `pid` exited (the reaper's callback).
    pub fn on_exit(&self, pid: i32, exit: Exit) {
        let waiter = self
            .direct
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(pid as u32));
        if let Some(tell) = waiter {
            tell(exit);
            return;
        }
        let mut map = self.lock();
        for (id, c) in map.iter_mut() {
            if c.init.pid == pid as u32 && exit.code == 128 + libc::SIGKILL as u32 {
                // Told before the exit, while the cgroup still exists: once
                // the exit is out the task is deleted and the cgroup gone.
                if let Some((file, before)) = &c.oom {
                    if self.os.oom_kills(file).is_some_and(|now| now > *before) {
                        self.events.publish(make::oom(id));
                    }
                }
            }
            let procs = std::iter::once((String::new(), &mut c.init))
                .chain(c.execs.iter_mut().map(|(e, p)| (e.clone(), p)));
            for (exec_id, p) in procs {
                if p.pid == pid as u32 && p.status != Status::Stopped {
                    p.status = Status::Stopped;
                    p.exit = Some(exit);
                    self.events
                        .publish(make::exit(id, &exec_id, p.pid, exit.code, exit.at));
                    self.exited.notify_all();
                    return;
                }
            }
        }
    }

    /// Records a new pid: claims it from the reaper (under the tasks' lock,
    /// so its exit cannot be missed) and marks it exited if it already has.
    fn started(&self, map: &mut HashMap<String, Container>, id: &str, exec_id: &str, pid: u32) {
        let early = self.reaper.claim(pid as i32);
        if let Ok(p) = Self::proc_mut(map, id, exec_id) {
            p.pid = pid;
            p.status = Status::Running;
            if let Some(exit) = early {
                p.status = Status::Stopped;
                p.exit = Some(exit);
                self.events
                    .publish(make::exit(id, exec_id, pid, exit.code, exit.at));
                self.exited.notify_all();
            }
        }
    }

    /// Create: `runtime create`; returns the init's pid.
    pub fn create(&self, id: &str, args: CreateArgs) -> Result<u32, TaskError> {
        if self.lock().contains_key(id) {
            return Err(TaskError::AlreadyExists(format!("container {id} exists")));
        }
        let undo = |e: TaskError| {
            if args.rootfs_mounted {
                self.os.unmount_rootfs(&args.bundle);
            }
            e
        };
        let (io, console) = self.os.open_io(&args.io).map_err(undo)?;
        let pid = args
            .runtime
            .create(
                id,
                &args.bundle,
                io,
                console.as_ref().map(|c| c.path.as_path()),
            )
            .map_err(|e| undo(e.into()))?;
        let master = match console {
            Some(c) => match self.os.finish_console(c, &args.io) {
                Ok(m) => m,
                Err(e) => {
                    let _ = args.runtime.delete(id, true);
                    return Err(undo(e));
                }
            },
            None => None,
        };
        let mut map = self.lock();
        let mut init = Proc::new(args.io.clone());
        init.console = master;
        map.insert(
            id.to_string(),
            Container {
                bundle: args.bundle.clone(),
                runtime: args.runtime,
                init,
                execs: HashMap::new(),
                rootfs_mounted: args.rootfs_mounted,
                oom: self.os.oom_control(pid).and_then(|p| {
                    let n = self.os.oom_kills(&p)?;
                    Some((p, n))
                }),
            },
        );
        self.started(&mut map, id, "", pid);
        // Created, not yet running (unless it has already died).
        if let Ok(p) = Self::proc_mut(&mut map, id, "") {
            if p.status == Status::Running {
                p.status = Status::Created;
            }
        }
        self.events
            .publish(make::create(id, &args.bundle.display().to_string(), pid));
        Ok(pid)
    }

    /// Start of the init (`exec_id` empty) or of an added exec; its pid.
    pub fn start(&self, id: &str, exec_id: &str) -> Result<u32, TaskError> {
        let (runtime, bundle, spec, io) = {
            let mut map = self.lock();
            let bundle = map.get(id).ok_or_else(|| not_found(id))?.bundle.clone();
            let runtime = Arc::clone(&map.get(id).ok_or_else(|| not_found(id))?.runtime);
            let p = Self::proc_mut(&mut map, id, exec_id)?;
            if p.status != Status::Created {
                return Err(TaskError::FailedPrecondition(format!(
                    "process {} of {id} is not in the created state",
                    if exec_id.is_empty() { id } else { exec_id }
                )));
            }
            (runtime, bundle, p.spec.take(), p.io.clone())
        };
        if exec_id.is_empty() {
            runtime.start(id)?;
            let mut map = self.lock();
            let p = Self::proc_mut(&mut map, id, "")?;
            if p.status == Status::Created {
                p.status = Status::Running;
            }
            let pid = p.pid;
            self.events.publish(make::start(id, pid));
            return Ok(pid);
        }
        let spec = spec.unwrap_or_default();
        let process = bundle.join(format!("{exec_id}.process.json"));
        std::fs::write(&process, &spec)
            .map_err(|e| TaskError::Internal(format!("writing {}: {e}", process.display())))?;
        let r = (|| {
            let (pio, console) = self.os.open_io(&io)?;
            let pid = runtime.exec(
                id,
                &bundle,
                exec_id,
                &process,
                pio,
                console.as_ref().map(|c| c.path.as_path()),
            )?;
            let master = match console {
                Some(c) => self.os.finish_console(c, &io)?,
                None => None,
            };
            Ok::<_, TaskError>((pid, master))
        })();
        let _ = std::fs::remove_file(&process);
        let (pid, master) = match r {
            Ok(x) => x,
            Err(e) => {
                // A failed exec is an exited one (containerd deletes it).
                let mut map = self.lock();
                if let Ok(p) = Self::proc_mut(&mut map, id, exec_id) {
                    p.status = Status::Stopped;
                    p.exit = Some(Exit {
                        code: 255,
                        at: std::time::SystemTime::now(),
                    });
                }
                self.exited.notify_all();
                return Err(e);
            }
        };
        let mut map = self.lock();
        if let Ok(p) = Self::proc_mut(&mut map, id, exec_id) {
            p.console = master;
        }
        self.started(&mut map, id, exec_id, pid);
        self.events.publish(make::exec_started(id, exec_id, pid));
        Ok(pid)
    }

    /// Starts a process in running container `id` that containerd does not
    /// know (CRI ExecSync's short path): `runtime exec` with `spec` (an OCI
    /// process, JSON) and `io`; no exec record and no events. `on_exit` is
    /// told its exit (at once if it is already over). Returns its pid.
    pub fn exec_detached(
        &self,
        id: &str,
        exec_id: &str,
        spec: &[u8],
        io: ProcIo,
        on_exit: DirectExit,
    ) -> Result<u32, TaskError> {
        let (runtime, bundle, init_pid) = {
            let map = self.lock();
            let c = map.get(id).ok_or_else(|| not_found(id))?;
            if c.init.status != Status::Running {
                return Err(TaskError::FailedPrecondition(format!(
                    "container {id} is not running"
                )));
            }
            (Arc::clone(&c.runtime), c.bundle.clone(), c.init.pid)
        };
        let process = bundle.join(format!("{exec_id}.process.json"));
        std::fs::write(&process, spec)
            .map_err(|e| TaskError::Internal(format!("writing {}: {e}", process.display())))?;
        let native = match (&self.native, runtime.native_name()) {
            (Some(n), Some(name)) => {
                match n.start(id, init_pid, &bundle, &process, &io) {
                    super::nativeexec::Outcome::Started(pid) => Some(Ok(pid)),
                    // Worded as a failed `runc exec` (crid reads 126/127 from it).
                    super::nativeexec::Outcome::Failed(message) => Some(Err(RuncError::Failed {
                        binary: name,
                        op: "exec".into(),
                        message,
                    })),
                    super::nativeexec::Outcome::Unsupported(why) => {
                        crate::log(&format!("exec in {id}: runc exec ({why})"));
                        None
                    }
                }
            }
            _ => None,
        };
        let r = match native {
            Some(r) => {
                // The process's stdio must not stay open here (see runc.rs).
                drop(io);
                r
            }
            None => runtime.exec(id, &bundle, exec_id, &process, io, None),
        };
        let _ = std::fs::remove_file(&process);
        let pid = r?;
        // Claimed under the waiters' lock: the reaper's callback for this
        // pid cannot run before the waiter is in place.
        let early = {
            let mut direct = self.direct.lock().unwrap_or_else(|p| p.into_inner());
            match self.reaper.claim(pid as i32) {
                Some(exit) => Some((exit, on_exit)),
                None => {
                    direct.insert(pid, on_exit);
                    None
                }
            }
        };
        if let Some((exit, tell)) = early {
            tell(exit);
        }
        Ok(pid)
    }

    /// SIGKILLs a process started by [`Tasks::exec_detached`] whose exit
    /// has not been reaped yet (so `pid` is still that process).
    pub fn kill_detached(&self, pid: u32) {
        let direct = self.direct.lock().unwrap_or_else(|p| p.into_inner());
        if direct.contains_key(&pid) {
            // Held under the waiters' lock: the exit cannot be delivered
            // (and the waiter removed) while the signal goes out.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Adds an exec process (started by a later Start).
    pub fn exec(
        &self,
        id: &str,
        exec_id: &str,
        io: IoPaths,
        spec: Vec<u8>,
    ) -> Result<(), TaskError> {
        let mut map = self.lock();
        let c = map.get_mut(id).ok_or_else(|| not_found(id))?;
        if c.init.status == Status::Stopped {
            return Err(TaskError::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        if c.execs.contains_key(exec_id) {
            return Err(TaskError::AlreadyExists(format!("exec {exec_id} exists")));
        }
        let mut p = Proc::new(io);
        p.spec = Some(spec);
        c.execs.insert(exec_id.to_string(), p);
        self.events.publish(make::exec_added(id, exec_id));
        Ok(())
    }

    /// Signals a process (`all`: every process of the container).
    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<(), TaskError> {
        let (runtime, pid, status) = {
            let mut map = self.lock();
            let runtime = Arc::clone(&map.get(id).ok_or_else(|| not_found(id))?.runtime);
            let p = Self::proc_mut(&mut map, id, exec_id)?;
            (runtime, p.pid, p.status)
        };
        if status == Status::Stopped && !all {
            return Err(TaskError::NotFound("process already finished".into()));
        }
        if exec_id.is_empty() {
            return match runtime.kill(id, signal, all) {
                Err(e) if e.is_not_running() => {
                    Err(TaskError::NotFound("process already finished".into()))
                }
                r => r.map_err(Into::into),
            };
        }
        if pid == 0 {
            return Err(TaskError::FailedPrecondition(format!(
                "exec {exec_id} has not started"
            )));
        }
        let sig = nix::sys::signal::Signal::try_from(signal as i32)
            .map_err(|_| TaskError::InvalidArgument(format!("bad signal {signal}")))?;
        // The pid is ours (claimed, not yet reaped while not Stopped), so
        // it cannot have been reused.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
            .map_err(|_| TaskError::NotFound("process already finished".into()))
    }

    /// Blocks until the process has exited; its exit.
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<Exit, TaskError> {
        let mut map = self.lock();
        loop {
            let p = Self::proc_mut(&mut map, id, exec_id)?;
            if let Some(x) = p.exit {
                return Ok(x);
            }
            map = self.exited.wait(map).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// A process's state.
    pub fn state(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Result<(u32, Status, Option<Exit>, IoPaths, PathBuf), TaskError> {
        let mut map = self.lock();
        let bundle = map.get(id).ok_or_else(|| not_found(id))?.bundle.clone();
        let p = Self::proc_mut(&mut map, id, exec_id)?;
        Ok((p.pid, p.status, p.exit, p.io.clone(), bundle))
    }

    /// Deletes an exited exec, or the container (`runtime delete`, rootfs
    /// unmounted); the process's pid and exit.
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<(u32, Exit), TaskError> {
        let now = || Exit {
            code: 0,
            at: std::time::SystemTime::now(),
        };
        if !exec_id.is_empty() {
            let mut map = self.lock();
            let c = map.get_mut(id).ok_or_else(|| not_found(id))?;
            let p = c
                .execs
                .get(exec_id)
                .ok_or_else(|| TaskError::NotFound(format!("exec {exec_id} of {id} not found")))?;
            if matches!(p.status, Status::Running) {
                return Err(TaskError::FailedPrecondition(format!(
                    "exec {exec_id} is still running"
                )));
            }
            let p = c.execs.remove(exec_id).ok_or_else(|| not_found(id))?;
            return Ok((p.pid, p.exit.unwrap_or_else(now)));
        }
        let (runtime, status) = {
            let map = self.lock();
            let c = map.get(id).ok_or_else(|| not_found(id))?;
            (Arc::clone(&c.runtime), c.init.status)
        };
        if matches!(status, Status::Running | Status::Paused) {
            return Err(TaskError::FailedPrecondition(format!(
                "container {id} is still running"
            )));
        }
        if let Err(e) = runtime.delete(id, true) {
            if !e.is_not_running() {
                return Err(e.into());
            }
        }
        let c = self.lock().remove(id).ok_or_else(|| not_found(id))?;
        if c.rootfs_mounted {
            self.os.unmount_rootfs(&c.bundle);
        }
        let exit = c.init.exit.unwrap_or(Exit {
            code: 137,
            at: std::time::SystemTime::now(),
        });
        self.events
            .publish(make::delete(id, c.init.pid, exit.code, exit.at));
        Ok((c.init.pid, exit))
    }

    /// The container's pids (from the runtime).
    pub fn pids(&self, id: &str) -> Result<Vec<u32>, TaskError> {
        let runtime = self.runtime_of(id)?;
        Ok(runtime.pids(id)?)
    }

    /// Pause or resume the container.
    pub fn pause(&self, id: &str, pause: bool) -> Result<(), TaskError> {
        let runtime = self.runtime_of(id)?;
        runtime.pause(id, pause)?;
        let mut map = self.lock();
        if let Ok(p) = Self::proc_mut(&mut map, id, "") {
            if p.status != Status::Stopped {
                p.status = if pause {
                    Status::Paused
                } else {
                    Status::Running
                };
            }
        }
        Ok(())
    }

    /// New resources (OCI `LinuxResources` JSON).
    pub fn update(&self, id: &str, resources: &[u8]) -> Result<(), TaskError> {
        let (runtime, bundle) = {
            let map = self.lock();
            let c = map.get(id).ok_or_else(|| not_found(id))?;
            (Arc::clone(&c.runtime), c.bundle.clone())
        };
        let file = bundle.join("resources.json");
        std::fs::write(&file, resources)
            .map_err(|e| TaskError::Internal(format!("writing {}: {e}", file.display())))?;
        let r = runtime.update(id, &file);
        let _ = std::fs::remove_file(&file);
        Ok(r?)
    }

    /// The terminal master of a process, for a resize.
    pub fn console(&self, id: &str, exec_id: &str) -> Result<Option<Arc<File>>, TaskError> {
        let mut map = self.lock();
        Ok(Self::proc_mut(&mut map, id, exec_id)?.console.clone())
    }

    /// Reports an OOM kill in the container's cgroup (also after the task
    /// is deleted: the killed init's exit often gets there first).
    pub fn oom(&self, id: &str) {
        self.events.publish(make::oom(id));
    }

    /// The init's pid (0: no such container).
    pub fn init_pid(&self, id: &str) -> u32 {
        self.lock().get(id).map(|c| c.init.pid).unwrap_or(0)
    }

    fn runtime_of(&self, id: &str) -> Result<Arc<dyn Runtime>, TaskError> {
        let map = self.lock();
        Ok(Arc::clone(
            &map.get(id).ok_or_else(|| not_found(id))?.runtime,
        ))
    }
}

#[cfg(test)]
#[path = "task_tests.rs"]
mod tests;
