//! Task bookkeeping against a recording fake runtime and OS.

use super::*;
use crate::shim::events::Event;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Default)]
struct FakeRuntime {
    calls: Mutex<Vec<String>>,
    next_pid: AtomicU32,
    /// `kill` answers "not running".
    dead: std::sync::atomic::AtomicBool,
}

impl FakeRuntime {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn call(&self, c: String) {
        self.calls.lock().unwrap().push(c);
    }
    fn pid(&self) -> u32 {
        1000 + self.next_pid.fetch_add(1, Ordering::SeqCst)
    }
}

impl Runtime for FakeRuntime {
    fn create(
        &self,
        id: &str,
        _: &Path,
        _: ProcIo,
        console: Option<&Path>,
    ) -> Result<u32, RuncError> {
        self.call(format!("create {id} console={}", console.is_some()));
        Ok(self.pid())
    }
    fn start(&self, id: &str) -> Result<(), RuncError> {
        self.call(format!("start {id}"));
        Ok(())
    }
    fn exec(
        &self,
        id: &str,
        _: &Path,
        exec_id: &str,
        process: &Path,
        _: ProcIo,
        _: Option<&Path>,
    ) -> Result<u32, RuncError> {
        let spec = std::fs::read_to_string(process).unwrap_or_default();
        self.call(format!("exec {id} {exec_id} {spec}"));
        Ok(self.pid())
    }
    fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuncError> {
        self.call(format!("kill {id} {signal} all={all}"));
        if self.dead.load(Ordering::SeqCst) {
            return Err(RuncError::Failed {
                binary: "runc".into(),
                op: "kill".into(),
                message: "container not running".into(),
            });
        }
        Ok(())
    }
    fn delete(&self, id: &str, force: bool) -> Result<(), RuncError> {
        self.call(format!("delete {id} force={force}"));
        Ok(())
    }
    fn pids(&self, _: &str) -> Result<Vec<u32>, RuncError> {
        Ok(vec![1000])
    }
    fn update(&self, id: &str, r: &Path) -> Result<(), RuncError> {
        self.call(format!(
            "update {id} {}",
            std::fs::read_to_string(r).unwrap_or_default()
        ));
        Ok(())
    }
    fn pause(&self, id: &str, pause: bool) -> Result<(), RuncError> {
        self.call(format!("pause {id} {pause}"));
        Ok(())
    }
}

#[derive(Default)]
struct FakeOs {
    unmounted: Mutex<Vec<PathBuf>>,
    oom_kills: AtomicU32,
}

impl ProcOs for FakeOs {
    fn open_io(&self, _: &IoPaths) -> Result<(ProcIo, Option<Console>), TaskError> {
        Ok((ProcIo::default(), None))
    }
    fn finish_console(&self, _: Console, _: &IoPaths) -> Result<Option<Arc<File>>, TaskError> {
        Ok(None)
    }
    fn unmount_rootfs(&self, bundle: &Path) {
        self.unmounted.lock().unwrap().push(bundle.to_path_buf());
    }
    fn oom_control(&self, _: u32) -> Option<PathBuf> {
        Some(PathBuf::from("/oom_control"))
    }
    fn oom_kills(&self, _: &Path) -> Option<u64> {
        Some(self.oom_kills.load(Ordering::SeqCst).into())
    }
}

#[derive(Default)]
struct Events(Mutex<Vec<String>>);

impl Publish for Events {
    fn publish(&self, e: Event) {
        self.0.lock().unwrap().push(e.topic.to_string());
    }
}

struct Fixture {
    tasks: Arc<Tasks>,
    reaper: Arc<Reaper>,
    rt: Arc<FakeRuntime>,
    os: Arc<FakeOs>,
    events: Arc<Events>,
    dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let reaper = Reaper::new();
    let rt = Arc::new(FakeRuntime::default());
    let os = Arc::new(FakeOs::default());
    let events = Arc::new(Events::default());
    let tasks = Arc::new(Tasks::new(
        Arc::clone(&reaper),
        Arc::clone(&events) as Arc<dyn Publish>,
        Arc::clone(&os) as Arc<dyn ProcOs>,
    ));
    Fixture {
        tasks,
        reaper,
        rt,
        os,
        events,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Fixture {
    fn create(&self, id: &str) -> u32 {
        self.tasks
            .create(
                id,
                CreateArgs {
                    bundle: self.dir.path().to_path_buf(),
                    io: IoPaths::default(),
                    runtime: Arc::clone(&self.rt) as Arc<dyn Runtime>,
                    rootfs_mounted: true,
                },
            )
            .unwrap()
    }
    /// The reaper reports `pid`'s exit.
    fn exits(&self, pid: u32, code: u32) {
        let t = Arc::clone(&self.tasks);
        let cb: crate::shim::reaper::OnExit = Box::new(move |p, x| t.on_exit(p, x));
        self.reaper.record(
            pid as i32,
            Exit {
                code,
                at: std::time::SystemTime::now(),
            },
            &cb,
        );
    }
    fn topics(&self) -> Vec<String> {
        self.events.0.lock().unwrap().clone()
    }
}

#[test]
fn lifecycle_create_start_exit_wait_delete() {
    let f = fixture();
    let pid = f.create("c1");
    assert_eq!(f.tasks.state("c1", "").unwrap().1, Status::Created);
    assert_eq!(f.tasks.start("c1", "").unwrap(), pid);
    assert_eq!(f.tasks.state("c1", "").unwrap().1, Status::Running);
    // Running: delete refused.
    assert!(matches!(
        f.tasks.delete("c1", ""),
        Err(TaskError::FailedPrecondition(_))
    ));
    let t = Arc::clone(&f.tasks);
    let waiter = std::thread::spawn(move || t.wait("c1", "").unwrap().code);
    f.exits(pid, 143);
    assert_eq!(waiter.join().unwrap(), 143);
    let (p, exit) = f.tasks.delete("c1", "").unwrap();
    assert_eq!((p, exit.code), (pid, 143));
    assert_eq!(f.os.unmounted.lock().unwrap().len(), 1, "rootfs unmounted");
    assert!(matches!(
        f.tasks.state("c1", ""),
        Err(TaskError::NotFound(_))
    ));
    assert_eq!(
        f.rt.calls(),
        vec![
            "create c1 console=false",
            "start c1",
            "delete c1 force=true"
        ]
    );
    assert_eq!(
        f.topics(),
        vec![
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
}

#[test]
fn an_exec_that_exits_before_its_pid_is_known_is_not_lost() {
    let f = fixture();
    let pid = f.create("c1");
    f.tasks.start("c1", "").unwrap();
    f.tasks
        .exec(
            "c1",
            "e1",
            IoPaths::default(),
            b"{\"args\":[\"true\"]}".to_vec(),
        )
        .unwrap();
    // The exec's pid will be the fake's next one; its exit arrives first.
    f.exits(pid + 1, 7);
    assert_eq!(f.tasks.start("c1", "e1").unwrap(), pid + 1);
    assert_eq!(f.tasks.wait("c1", "e1").unwrap().code, 7);
    assert_eq!(
        f.tasks.state("c1", "").unwrap().1,
        Status::Running,
        "init untouched"
    );
    assert!(f
        .rt
        .calls()
        .contains(&"exec c1 e1 {\"args\":[\"true\"]}".to_string()));
    assert_eq!(f.tasks.delete("c1", "e1").unwrap().1.code, 7);
    assert!(f.topics().contains(&"/tasks/exec-added".to_string()));
    assert!(f.topics().contains(&"/tasks/exec-started".to_string()));
}

#[test]
fn kill_of_an_exited_process_is_not_found() {
    let f = fixture();
    let pid = f.create("c1");
    f.tasks.start("c1", "").unwrap();
    f.tasks.kill("c1", "", 15, false).unwrap();
    f.exits(pid, 143);
    assert!(matches!(
        f.tasks.kill("c1", "", 9, false),
        Err(TaskError::NotFound(_))
    ));
    // A race the bookkeeping has not seen yet: runc's words decide.
    let f = fixture();
    f.create("c2");
    f.tasks.start("c2", "").unwrap();
    f.rt.dead.store(true, Ordering::SeqCst);
    assert!(matches!(
        f.tasks.kill("c2", "", 9, false),
        Err(TaskError::NotFound(_))
    ));
}

#[test]
fn duplicate_and_unknown_ids() {
    let f = fixture();
    f.create("c1");
    let again = f.tasks.create(
        "c1",
        CreateArgs {
            bundle: f.dir.path().to_path_buf(),
            io: IoPaths::default(),
            runtime: Arc::clone(&f.rt) as Arc<dyn Runtime>,
            rootfs_mounted: false,
        },
    );
    assert!(matches!(again, Err(TaskError::AlreadyExists(_))));
    assert!(matches!(
        f.tasks.start("nope", ""),
        Err(TaskError::NotFound(_))
    ));
    assert!(matches!(
        f.tasks.wait("c1", "nope"),
        Err(TaskError::NotFound(_))
    ));
    assert!(matches!(
        f.tasks.start("c1", "nope"),
        Err(TaskError::NotFound(_))
    ));
}

#[test]
fn update_passes_the_resources_file() {
    let f = fixture();
    f.create("c1");
    f.tasks.update("c1", b"{\"memory\":{}}").unwrap();
    assert!(f
        .rt
        .calls()
        .contains(&"update c1 {\"memory\":{}}".to_string()));
}

#[test]
fn an_oom_killed_init_is_reported_before_its_exit() {
    let f = fixture();
    let pid = f.create("c1");
    f.tasks.start("c1", "").unwrap();
    f.os.oom_kills.store(1, Ordering::SeqCst);
    f.exits(pid, 137);
    assert_eq!(
        f.topics(),
        vec!["/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/exit"]
    );
    // A plain SIGKILL is no OOM.
    let f = fixture();
    let pid = f.create("c2");
    f.tasks.start("c2", "").unwrap();
    f.exits(pid, 137);
    assert!(!f.topics().contains(&"/tasks/oom".to_string()));
}

/// What a detached exec's waiter was told.
fn waiter() -> (DirectExit, std::sync::mpsc::Receiver<u32>) {
    let (tx, rx) = std::sync::mpsc::channel();
    (
        Box::new(move |x: Exit| {
            let _ = tx.send(x.code);
        }),
        rx,
    )
}

#[test]
fn a_detached_exec_reports_its_exit_to_its_waiter_only() {
    let f = fixture();
    let init = f.create("c1");
    f.tasks.start("c1", "").unwrap();
    let before = f.topics();
    let (tell, told) = waiter();
    let pid = f
        .tasks
        .exec_detached(
            "c1",
            "e1",
            b"{\"args\":[\"true\"]}",
            ProcIo::default(),
            tell,
        )
        .unwrap();
    assert_eq!(pid, init + 1);
    assert!(f
        .rt
        .calls()
        .contains(&"exec c1 e1 {\"args\":[\"true\"]}".to_string()));
    assert!(
        !f.dir.path().join("e1.process.json").exists(),
        "the process file is removed once started"
    );
    assert!(told.try_recv().is_err(), "still running");
    f.exits(pid, 3);
    assert_eq!(told.recv().unwrap(), 3);
    assert_eq!(f.topics(), before, "containerd hears nothing of it");
    assert_eq!(
        f.tasks.state("c1", "").unwrap().1,
        Status::Running,
        "the init is untouched"
    );
    assert!(matches!(
        f.tasks.state("c1", "e1"),
        Err(TaskError::NotFound(_))
    ));
}

#[test]
fn a_detached_exec_that_exits_before_its_pid_is_known_is_not_lost() {
    let f = fixture();
    let init = f.create("c1");
    f.tasks.start("c1", "").unwrap();
    f.exits(init + 1, 137);
    let (tell, told) = waiter();
    f.tasks
        .exec_detached("c1", "e1", b"{}", ProcIo::default(), tell)
        .unwrap();
    assert_eq!(told.recv().unwrap(), 137);
}

#[test]
fn a_detached_exec_needs_a_running_container() {
    let f = fixture();
    let (tell, _) = waiter();
    assert!(matches!(
        f.tasks
            .exec_detached("nope", "e1", b"{}", ProcIo::default(), tell),
        Err(TaskError::NotFound(_))
    ));
    f.create("c1");
    let (tell, _) = waiter();
    assert!(matches!(
        f.tasks
            .exec_detached("c1", "e1", b"{}", ProcIo::default(), tell),
        Err(TaskError::FailedPrecondition(_))
    ));
    assert!(
        !f.rt.calls().iter().any(|c| c.starts_with("exec")),
        "the runtime is not asked"
    );
}
