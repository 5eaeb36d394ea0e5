//! Drains run against real FIFOs written by real processes (busybox) and
//! threads; a fake [`LogSink`] stands in for a full or slow disk.

use super::container_io::ContainerIo;
use super::drain::{drain, Command, DrainConfig};
use super::format::Stream;
use super::sink::LogSink;
use crid_common::protocol::{ContainerIoSpec, Response};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BUSYBOX: &str = "/bin/busybox";

/// One parsed log entry: (stream, tag, content).
type Entry = (String, char, Vec<u8>);

/// Parses a CRI log file, checking every entry is well-formed.
fn parse(bytes: &[u8]) -> Vec<Entry> {
    assert!(
        bytes.is_empty() || bytes.ends_with(b"\n"),
        "torn last entry"
    );
    let mut out = Vec::new();
    let mut last_ts = String::new();
    for line in bytes[..bytes.len().saturating_sub(1)].split(|&b| b == b'\n') {
        if bytes.is_empty() {
            break;
        }
        let mut parts = line.splitn(4, |&b| b == b' ');
        let ts = std::str::from_utf8(parts.next().unwrap())
            .unwrap()
            .to_string();
        let ts = normalized(&ts);
        assert!(ts >= last_ts, "timestamps go back: {last_ts} then {ts}");
        last_ts = ts;
        let stream = std::str::from_utf8(parts.next().unwrap())
            .unwrap()
            .to_string();
        assert!(stream == "stdout" || stream == "stderr", "{stream:?}");
        let tag = parts.next().unwrap();
        assert!(tag == b"F" || tag == b"P", "{tag:?}");
        let content = parts.next().expect("content separator").to_vec();
        out.push((stream, tag[0] as char, content));
    }
    out
}

/// Checks a Go RFC3339Nano UTC timestamp (`2026-11-29T19:03:15.71612Z`,
/// trailing zeros of the fraction trimmed) and pads it to 9 fraction digits
/// so timestamps compare as strings.
fn normalized(ts: &str) -> String {
    let b = ts.as_bytes();
    assert!(
        ts.len() >= 20
            && ts.ends_with('Z')
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':',
        "{ts:?}"
    );
    let frac = match &ts[19..ts.len() - 1] {
        "" => String::new(),
        f => {
            let f = f.strip_prefix('.').expect("fraction after a dot");
            assert!(!f.is_empty() && f.len() <= 9 && !f.ends_with('0'), "{ts:?}");
            assert!(f.bytes().all(|c| c.is_ascii_digit()), "{ts:?}");
            f.to_string()
        }
    };
    format!("{}.{frac:0<9}Z", &ts[..19])
}

/// Entries completed so far in a log being written (a concurrent reader may
/// see a write half done, as the kubelet's reader may: it waits for the newline).
fn complete_entries(p: &Path) -> usize {
    std::fs::read(p).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

fn read_log(p: &Path) -> Vec<Entry> {
    parse(&std::fs::read(p).unwrap())
}

fn spec(id: &str, log: &Path, tty: bool) -> ContainerIoSpec {
    ContainerIoSpec {
        container_id: id.into(),
        log_path: log.to_path_buf(),
        tty,
        stdin: false,
        stdin_once: false,
        max_line_bytes: None,
    }
}

/// Prepared io of one container.
struct Prepared {
    io: ContainerIo,
    stdout: PathBuf,
    stderr: Option<PathBuf>,
    stdin: Option<PathBuf>,
}

fn prepare(dir: &Path, spec: &ContainerIoSpec) -> Prepared {
    let io = ContainerIo::new(dir.join("io"));
    match io.prepare(spec).unwrap() {
        Response::ContainerIo {
            stdin,
            stdout,
            stderr,
        } => Prepared {
            io,
            stdout,
            stderr,
            stdin,
        },
        r => panic!("unexpected {r:?}"),
    }
}

/// Opens a FIFO's write side as the shim does (a reader exists, so no wait).
fn writer(p: &Path) -> File {
    OpenOptions::new().write(true).open(p).unwrap()
}

/// Runs `script` in busybox sh with stdout/stderr on the FIFOs; waits for it.
fn run_sh(script: &str, stdout: &Path, stderr: Option<&Path>) {
    let mut cmd = Proc::new(BUSYBOX);
    cmd.args(["sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(writer(stdout));
    match stderr {
        Some(p) => cmd.stderr(writer(p)),
        None => cmd.stderr(Stdio::null()),
    };
    let st = cmd.status().unwrap();
    assert!(st.success(), "{script}: {st}");
}

#[test]
fn fifos_are_made_0600_and_removed_at_release() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("logs/c/0.log");
    let mut s = spec("c1", &log, false);
    s.stdin = true;
    let p = prepare(d.path(), &s);
    for f in [Some(&p.stdout), p.stderr.as_ref(), p.stdin.as_ref()] {
        let f = f.unwrap();
        let m = std::fs::metadata(f).unwrap();
        assert!(m.file_type().is_fifo(), "{}", f.display());
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777,
            0o600
        );
        assert!(f.starts_with(d.path().join("io/c1")));
    }
    assert!(log.exists(), "the log exists once prepare answers");
    // The same request again (a retry) gets the same paths; a different one is refused.
    assert!(
        matches!(p.io.prepare(&s).unwrap(), Response::ContainerIo { stdout, .. } if stdout == p.stdout)
    );
    s.tty = true;
    assert!(p.io.prepare(&s).is_err());
    // A container that never started: release still ends the drain.
    p.io.release("c1").unwrap();
    assert!(!d.path().join("io/c1").exists());
    p.io.release("c1").unwrap();
    assert!(p.io.reopen("c1").is_err());
}

#[test]
fn bad_requests_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let io = ContainerIo::new(d.path().join("io"));
    assert!(io
        .prepare(&spec("../x", &d.path().join("l"), false))
        .is_err());
    assert!(io
        .prepare(&spec("c", Path::new("rel/0.log"), false))
        .is_err());
    assert!(!d.path().join("io/c").exists());
}

#[test]
fn two_hundred_thousand_lines_once_and_in_order() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("0.log");
    let p = prepare(d.path(), &spec("c", &log, false));
    run_sh("seq 1 200000", &p.stdout, p.stderr.as_deref());
    p.io.release("c").unwrap();
    let entries = read_log(&log);
    assert_eq!(entries.len(), 200_000);
    for (i, (stream, tag, content)) in entries.iter().enumerate() {
        assert_eq!((stream.as_str(), *tag), ("stdout", 'F'));
        assert_eq!(content, (i + 1).to_string().as_bytes(), "entry {i}");
    }
}

#[test]
fn a_100_kib_line_becomes_partial_pieces_that_join() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("0.log");
    let p = prepare(d.path(), &spec("c", &log, false));
    let line: Vec<u8> = (0..100 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let mut w = writer(&p.stdout);
    w.write_all(&line).unwrap();
    w.write_all(b"\nafter\n").unwrap();
    drop(w);
    p.io.release("c").unwrap();
    let entries = read_log(&log);
    let tags: String = entries.iter().map(|e| e.1).collect();
    assert_eq!(tags, "PPPPPPFF");
    assert!(entries[..6].iter().all(|e| e.2.len() == 16 * 1024));
    let joined: Vec<u8> = entries[..7].iter().flat_map(|e| e.2.clone()).collect();
    assert_eq!(joined, line);
    assert_eq!(entries[7].2, b"after");
}

/// Padding of the interleaving test's lines.
const PAD: &str = "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp";

#[test]
fn stdout_and_stderr_interleaved_are_tagged() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("0.log");
    let p = prepare(d.path(), &spec("c", &log, false));
    // 200-byte lines: each stream writes ~400 KB, more than a pipe holds
    // (256 KiB at most), so the writer blocks until the drain reads and the
    // streams interleave in the file however the threads are scheduled
    // (with short lines a drain scheduled late found both pipes complete).
    let script = format!(
        "pad={PAD}; i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo out$i $pad; echo err$i $pad >&2; done"
    );
    run_sh(&script, &p.stdout, p.stderr.as_deref());
    p.io.release("c").unwrap();
    let entries = read_log(&log);
    assert_eq!(entries.len(), 4000);
    for (stream, prefix) in [("stdout", "out"), ("stderr", "err")] {
        let got: Vec<String> = entries
            .iter()
            .filter(|e| e.0 == stream)
            .map(|e| String::from_utf8(e.2.clone()).unwrap())
            .collect();
        let want: Vec<String> = (1..=2000).map(|i| format!("{prefix}{i} {PAD}")).collect();
        assert_eq!(got, want, "{stream}");
    }
    // Both streams really were interleaved in the file, not one after the other.
    let first_err = entries.iter().position(|e| e.0 == "stderr").unwrap();
    assert!(first_err < 2000, "stderr first appears at {first_err}");
}

#[test]
fn empty_line_and_last_line_without_newline() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("0.log");
    let p = prepare(d.path(), &spec("c", &log, false));
    run_sh("printf 'a\\n\\nlast'", &p.stdout, p.stderr.as_deref());
    p.io.release("c").unwrap();
    let got = read_log(&log);
    let want: Vec<Entry> = vec![
        ("stdout".into(), 'F', b"a".to_vec()),
        ("stdout".into(), 'F', b"".to_vec()),
        ("stdout".into(), 'P', b"last".to_vec()),
    ];
    assert_eq!(got, want);
}

#[test]
fn tty_has_one_stream_logged_as_stdout_with_crlf_stripped() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("0.log");
    let p = prepare(d.path(), &spec("c", &log, true));
    assert!(p.stderr.is_none());
    run_sh("printf 'one\\r\\ntwo\\r\\n'", &p.stdout, None);
    p.io.release("c").unwrap();
    let got = read_log(&log);
    let want: Vec<Entry> = vec![
        ("stdout".into(), 'F', b"one".to_vec()),
        ("stdout".into(), 'F', b"two".to_vec()),
    ];
    assert_eq!(got, want);
}

#[test]
fn output_ends_by_itself_and_reopen_then_says_not_running() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("0.log");
    let p = prepare(d.path(), &spec("c", &log, false));
    run_sh("echo bye; echo err >&2", &p.stdout, p.stderr.as_deref());
    // Both writers closed: the drain finishes without being told.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match p.io.reopen("c") {
            Err(e) if e.contains("not running") => break,
            r => assert!(Instant::now() < deadline, "reopen still answers {r:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(read_log(&log).len(), 2);
    p.io.release("c").unwrap();
}

#[test]
fn a_line_is_visible_promptly_while_the_writer_stays_open() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("0.log");
    let p = prepare(d.path(), &spec("c", &log, false));
    let mut w = writer(&p.stdout);
    let start = Instant::now();
    w.write_all(b"hello\n").unwrap();
    while complete_entries(&log) == 0 {
        assert!(start.elapsed() < Duration::from_secs(2), "line not flushed");
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    // 100 ms promised; the slack is for a loaded 2-core test machine.
    assert!(took < Duration::from_millis(400), "visible after {took:?}");
    drop(w);
    p.io.release("c").unwrap();
}

#[test]
fn rotation_mid_stream_keeps_every_line_once() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("0.log");
    let p = prepare(d.path(), &spec("c", &log, false));
    let out = p.stdout.clone();
    let total = 100_000u32;
    let done = Arc::new(AtomicBool::new(false));
    let t = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut w = writer(&out);
            for i in 1..=total {
                // Lines written in two pieces, so rotation also meets half lines.
                write!(w, "line-").unwrap();
                writeln!(w, "{i}").unwrap();
                if i % 10_000 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let rotated = d.path().join("0.log.20261129-000000");
    // Rotate once some, but not all, lines are logged.
    while complete_entries(&log) < 20_000 {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::fs::rename(&log, &rotated).unwrap();
    p.io.reopen("c").unwrap();
    assert!(log.exists(), "new file exists when reopen answers");
    assert!(
        !done.load(Ordering::SeqCst),
        "rotation happened after the writer finished"
    );
    t.join().unwrap();
    p.io.release("c").unwrap();
    let old = read_log(&rotated);
    let new = read_log(&log);
    assert!(!old.is_empty() && !new.is_empty());
    let all: Vec<String> = old
        .iter()
        .chain(new.iter())
        .map(|e| {
            assert_eq!(e.1, 'F');
            String::from_utf8(e.2.clone()).unwrap()
        })
        .collect();
    let want: Vec<String> = (1..=total).map(|i| format!("line-{i}")).collect();
    assert_eq!(all.len(), want.len());
    assert!(
        all == want,
        "lines lost, duplicated or out of order across the rotation"
    );
}

/// A fake disk: fails with ENOSPC while `full`, can be made slow, records entries.
#[derive(Clone, Default)]
struct FakeDisk {
    full: Arc<AtomicBool>,
    /// While set, `append` waits (a stalled disk).
    stalled: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
    data: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl LogSink for FakeDisk {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        while self.stalled.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.full.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.data.lock().unwrap().extend_from_slice(buf);
        Ok(())
    }
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A FIFO pair (read side non-blocking, as the helper opens it) in `dir`.
fn fifo(dir: &Path, name: &str) -> (File, File) {
    let p = dir.join(name);
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let r = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&p)
        .unwrap();
    (r, writer(&p))
}

/// Starts `drain` on a thread over one stdout FIFO into `disk`.
fn start_drain(
    dir: &Path,
    disk: &FakeDisk,
) -> (
    File,
    std::sync::mpsc::Sender<Command>,
    File,
    std::thread::JoinHandle<super::drain::DrainStats>,
) {
    let (r, w) = fifo(dir, "out");
    let (wake_r, wake_w) = fifo(dir, "wake");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut sink = disk.clone();
    let t = std::thread::spawn(move || {
        drain(
            vec![(Stream::Stdout, r)],
            wake_r,
            rx,
            &mut sink,
            DrainConfig::default(),
        )
    });
    (w, tx, wake_w, t)
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_full_disk_drops_lines_counted_and_logging_resumes() {
    let d = tempfile::tempdir().unwrap();
    let disk = FakeDisk::default();
    disk.full.store(true, Ordering::SeqCst);
    let (mut w, _tx, _wake, t) = start_drain(d.path(), &disk);
    for i in 0..10 {
        writeln!(w, "lost{i}").unwrap();
    }
    wait_until("a failed write", || {
        disk.attempts.load(Ordering::SeqCst) > 0
    });
    disk.full.store(false, Ordering::SeqCst);
    for i in 0..10 {
        writeln!(w, "kept{i}").unwrap();
    }
    drop(w);
    let stats = t.join().expect("the drain does not panic");
    let entries = parse(&disk.data.lock().unwrap());
    let kept: Vec<String> = entries
        .iter()
        .map(|e| String::from_utf8(e.2.clone()).unwrap())
        .collect();
    // Every line is either written once or counted as dropped.
    assert_eq!(stats.entries_written as usize, kept.len());
    assert_eq!(stats.entries_written + stats.entries_dropped, 20);
    assert!(stats.entries_dropped > 0);
    let want: Vec<String> = (0..10).map(|i| format!("kept{i}")).collect();
    assert!(kept.ends_with(&want), "{kept:?}");
}

#[test]
fn a_stalled_disk_blocks_the_writer_instead_of_buffering() {
    let d = tempfile::tempdir().unwrap();
    let disk = FakeDisk::default();
    disk.stalled.store(true, Ordering::SeqCst);
    let (mut w, _tx, _wake, t) = start_drain(d.path(), &disk);
    let written = Arc::new(AtomicUsize::new(0));
    let total = 8 << 20;
    let wt = {
        let written = Arc::clone(&written);
        std::thread::spawn(move || {
            let line = [b'x'; 1023];
            while written.load(Ordering::SeqCst) < total {
                w.write_all(&line).unwrap();
                w.write_all(b"\n").unwrap();
                written.fetch_add(1024, Ordering::SeqCst);
            }
        })
    };
    wait_until("the drain's first write", || {
        disk.attempts.load(Ordering::SeqCst) > 0
    });
    std::thread::sleep(Duration::from_millis(300));
    // Pipe buffer (64 KiB) + one read + the drain's buffer limit, not 8 MiB.
    let stuck_at = written.load(Ordering::SeqCst);
    assert!(stuck_at <= 512 * 1024, "writer got {stuck_at} bytes ahead");
    disk.stalled.store(false, Ordering::SeqCst);
    wt.join().unwrap();
    let stats = t.join().unwrap();
    assert_eq!(stats.entries_written as usize, total / 1024);
    assert_eq!(stats.entries_dropped, 0);
}

#[test]
fn stop_reads_what_the_fifo_still_holds() {
    let d = tempfile::tempdir().unwrap();
    let disk = FakeDisk::default();
    let (r, mut w) = fifo(d.path(), "out");
    // Room for more than one read's worth, all queued before the drain runs.
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&w),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20),
    )
    .unwrap();
    let lines = 50_000;
    for i in 0..lines {
        writeln!(w, "{i:08}").unwrap();
    }
    w.write_all(b"tail").unwrap();
    let (wake_r, mut wake_w) = fifo(d.path(), "wake");
    let (tx, rx) = std::sync::mpsc::channel();
    // Stop is already waiting when the drain starts: its first round reads
    // one chunk, then Stop must collect the remaining ~380 KiB, and the
    // unterminated tail, though the writer (a lingering process) stays open.
    tx.send(Command::Stop).unwrap();
    wake_w.write_all(&[1]).unwrap();
    let mut sink = disk.clone();
    let stats = drain(
        vec![(Stream::Stdout, r)],
        wake_r,
        rx,
        &mut sink,
        DrainConfig::default(),
    );
    assert_eq!(stats.entries_written, lines + 1);
    let got = parse(&disk.data.lock().unwrap());
    assert_eq!(got.len() as u64, lines + 1);
    for (i, e) in got[..lines as usize].iter().enumerate() {
        assert_eq!((e.1, e.2.as_slice()), ('F', format!("{i:08}").as_bytes()));
    }
    assert_eq!(got[lines as usize].1, 'P');
    assert_eq!(got[lines as usize].2, b"tail");
    drop(w);
}

#[test]
fn a_restarted_helper_adopts_the_fifos_and_logs_on() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("0.log");
    let mut s = spec("c", &log, false);
    s.stdin = true;
    let p = prepare(d.path(), &s);
    // The shim keeps a read side of its own (never read), so the writer
    // meets no EPIPE while no helper is there.
    let shim_reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&p.stdout)
        .unwrap();
    let mut w = writer(&p.stdout);
    let line = |w: &mut File, i: u32| writeln!(w, "n{i}").unwrap();
    for i in 1..=1000 {
        line(&mut w, i);
    }
    p.io.abandon("c");
    // No helper: written into the pipe, read by the next helper.
    for i in 1001..=2000 {
        line(&mut w, i);
    }
    let next = ContainerIo::new(d.path().join("io"));
    let notes = next.adopt();
    assert_eq!(notes, vec!["adopted the io of container c".to_string()]);
    for i in 2001..=3000 {
        line(&mut w, i);
    }
    // The adopted container answers requests like a fresh one (a reopen
    // of the same, not renamed, path appends to it).
    next.reopen("c").unwrap();
    drop((w, shim_reader));
    next.release("c").unwrap();
    let got: Vec<String> = read_log(&log)
        .into_iter()
        .map(|e| String::from_utf8(e.2).unwrap())
        .collect();
    let want: Vec<String> = (1..=3000).map(|i| format!("n{i}")).collect();
    assert!(
        got == want,
        "{} entries, first {:?}",
        got.len(),
        got.first()
    );
    assert!(!d.path().join("io/c").exists());
}

/// User+system CPU seconds of this process so far (`/proc/self/stat`, 100 Hz ticks).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Throughput figure for docs/PERFORMANCE.md: busybox `cat` (another
/// process) writes 512 MiB of short lines into the stdout FIFO; the drain
/// writes the CRI log to disk. This process runs only the drain meanwhile,
/// so its CPU time is the drain's. Run in release:
/// `cargo test --release -p crid-pod-helper drain_throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn drain_throughput() {
    let d = tempfile::tempdir_in("/var/tmp").unwrap();
    let input = d.path().join("input");
    let line = b"2026-11-29 19:30:00 INFO request served in 12ms path=/api/v1/items\n";
    let total: usize = 512 << 20;
    {
        let mut chunk = Vec::with_capacity(1 << 20);
        while chunk.len() + line.len() <= 1 << 20 {
            chunk.extend_from_slice(line);
        }
        let mut f = std::io::BufWriter::new(File::create(&input).unwrap());
        for _ in 0..total / chunk.len() {
            f.write_all(&chunk).unwrap();
        }
    }
    let bytes = std::fs::metadata(&input).unwrap().len() as f64;
    let log = d.path().join("0.log");
    let p = prepare(d.path(), &spec("c", &log, false));
    let cpu0 = process_cpu_seconds();
    let t0 = Instant::now();
    run_sh(
        &format!("cat {}", input.display()),
        &p.stdout,
        p.stderr.as_deref(),
    );
    p.io.release("c").unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu0;
    let lines = bytes / line.len() as f64;
    assert_eq!(complete_entries(&log) as f64, lines);
    let log_bytes = std::fs::metadata(&log).unwrap().len() as f64;
    println!(
        "drain: {:.0} MiB of {}-byte lines in {secs:.2} s = {:.0} MB/s input ({:.0} MB/s log written), \
         {:.2} CPU s per GB input, {:.2} M lines/s",
        bytes / (1 << 20) as f64,
        line.len(),
        bytes / secs / 1e6,
        log_bytes / secs / 1e6,
        cpu / (bytes / 1e9),
        lines / secs / 1e6
    );
}

/// A disk whose writer "dies" at a chosen append: before writing it (the
/// helper killed with entries buffered) or right after (killed before the
/// pipe was told): a panic ends the drain thread as a SIGKILL ends the helper.
struct DyingDisk {
    data: Arc<std::sync::Mutex<Vec<u8>>>,
    appends: usize,
    die_at: usize,
    after_write: bool,
}

impl LogSink for DyingDisk {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.appends += 1;
        if self.appends == self.die_at && !self.after_write {
            panic!("killed before the write");
        }
        self.data.lock().unwrap().extend_from_slice(buf);
        if self.appends == self.die_at {
            panic!("killed after the write");
        }
        Ok(())
    }
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_drain_killed_mid_stream_loses_nothing_the_next_one_reads_on() {
    for after_write in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let (r, mut w) = fifo(d.path(), "out");
        // A second read side, as the shim keeps one: the FIFO's bytes outlive the drain.
        let keep = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(d.path().join("out"))
            .unwrap();
        let data = Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = 20_000u32;
        let writer = std::thread::spawn(move || {
            for i in 0..lines {
                writeln!(w, "line{i:05}").unwrap();
            }
            // Unterminated tail, written when the first drain is dead.
            std::thread::sleep(Duration::from_millis(300));
            w.write_all(b"tail").unwrap();
        });
        let start = |file: File, disk: DyingDisk| {
            let (wake_r, wake_w) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                    .unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let t = std::thread::spawn(move || {
                let mut disk = disk;
                drain(
                    vec![(Stream::Stdout, file)],
                    File::from(wake_r),
                    rx,
                    &mut disk,
                    DrainConfig {
                        buffer_limit: 4096,
                        ..DrainConfig::default()
                    },
                )
            });
            (t, tx, File::from(wake_w))
        };
        let (first, _tx1, _wake1) = start(
            r,
            DyingDisk {
                data: Arc::clone(&data),
                appends: 0,
                die_at: 5,
                after_write,
            },
        );
        assert!(first.join().is_err(), "the first drain dies");
        // The next helper opens the FIFO again and drains on.
        let r2 = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(d.path().join("out"))
            .unwrap();
        let (second, tx2, mut wake2) = start(
            r2,
            DyingDisk {
                data: Arc::clone(&data),
                appends: 0,
                die_at: usize::MAX,
                after_write: false,
            },
        );
        writer.join().unwrap();
        // An adopted FIFO reports no hang-up (its reader opened after the
        // writer): the container's end may have to be told by a release, as crid does.
        std::thread::sleep(Duration::from_millis(200));
        // (It may have seen the end by itself already.)
        let _ = tx2.send(Command::Stop);
        let _ = wake2.write_all(&[1]);
        second.join().unwrap();
        drop(keep);
        let got = parse(&data.lock().unwrap());
        let mut nums: Vec<u32> = got
            .iter()
            .filter(|e| e.1 == 'F')
            .map(|e| std::str::from_utf8(&e.2).unwrap()[4..].parse().unwrap())
            .collect();
        // Written twice at most: the batch of the append that "died" after writing.
        let twice = nums.windows(2).filter(|w| w[0] >= w[1]).count();
        assert!(twice <= 1, "more than one rewind");
        nums.dedup();
        let mut sorted = nums.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted,
            (0..lines).collect::<Vec<_>>(),
            "after_write={after_write}: lines lost"
        );
        assert_eq!(
            got.last().map(|e| (e.1, e.2.clone())),
            Some(('P', b"tail".to_vec()))
        );
        if !after_write {
            assert_eq!(nums, (0..lines).collect::<Vec<_>>(), "written once each");
        }
    }
}
