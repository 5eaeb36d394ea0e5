//! The drain loop: reads one container's stdout/stderr FIFOs (non-blocking,
//! one `poll`), cuts the bytes into CRI entries and appends them to the log.
//!
//! Back-pressure is by design: entries are written synchronously from this
//! loop, so while the disk is slow the FIFOs are not read, the kernel's pipe
//! buffer fills and the container's writes block; the helper never buffers
//! more than [`DrainConfig::buffer_limit`] plus one read per container.

use super::format::{LineSplitter, Stream};
use super::sink::LogSink;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant, SystemTime};

/// Tuning of one drain.
#[derive(Debug, Clone, Copy)]
pub struct DrainConfig {
    /// Largest content of one entry (0: unlimited).
    pub max_line: usize,
    /// Buffered entries are written at the latest this long after the first one.
    pub flush_within: Duration,
    /// Buffered entries are written once they reach this many bytes.
    pub buffer_limit: usize,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            max_line: super::format::DEFAULT_MAX_LINE,
            flush_within: Duration::from_millis(100),
            buffer_limit: 64 * 1024,
        }
    }
}

/// Bytes read from a FIFO at once.
const READ_CHUNK: usize = 64 * 1024;

/// Asks a running drain to do something (sent with a byte on its wake pipe).
#[derive(Debug)]
pub enum Command {
    /// Write what is buffered to the current file, reopen the path, answer.
    Reopen(Sender<Result<(), String>>),
    /// Write what is buffered (and unterminated tails) and stop.
    Stop,
}

/// What a finished drain did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DrainStats {
    /// Entries written to the log.
    pub entries_written: u64,
    /// Entries dropped because the log could not be written (full disk).
    pub entries_dropped: u64,
}

/// One open stream.
struct Input {
    file: File,
    stream: Stream,
    splitter: LineSplitter,
}

/// Drains `inputs` into `sink` until every input reached end of file or a
/// [`Command::Stop`] arrives. `wake` is the read end of a non-blocking pipe
/// written to after each command sent on `commands`.
#[cfg(test)]
pub fn drain(
    inputs: Vec<(Stream, File)>,
    wake: File,
    commands: Receiver<Command>,
    sink: &mut dyn LogSink,
    cfg: DrainConfig,
) -> DrainStats {
    drain_with_tap(inputs, wake, commands, sink, cfg, None)
}

/// [`drain`], also publishing every chunk read to `tap` (attach clients);
/// the tap is closed when the drain ends.
pub fn drain_with_tap(
    inputs: Vec<(Stream, File)>,
    wake: File,
    commands: Receiver<Command>,
    sink: &mut dyn LogSink,
    cfg: DrainConfig,
    tap: Option<std::sync::Arc<super::tap::Tap>>,
) -> DrainStats {
    let mut d = Drain {
        inputs: inputs
            .into_iter()
            .map(|(stream, file)| {
                Some(Input {
                    file,
                    stream,
                    splitter: LineSplitter::new(stream, cfg.max_line),
                })
            })
            .collect(),
        tap,
        sink,
        cfg,
        out: Vec::with_capacity(cfg.buffer_limit + READ_CHUNK),
        dirty_since: None,
        failing: false,
        stats: DrainStats::default(),
    };
    d.run(&wake, &commands);
    if let Some(t) = &d.tap {
        t.close();
    }
    d.stats
}

struct Drain<'a> {
    inputs: Vec<Option<Input>>,
    /// Attach clients' fan-out.
    tap: Option<std::sync::Arc<super::tap::Tap>>,
    sink: &'a mut dyn LogSink,
    cfg: DrainConfig,
    /// Formatted entries not yet written.
    out: Vec<u8>,
    /// When `out` became non-empty.
    dirty_since: Option<Instant>,
    /// The last write failed (warned once until writes succeed again).
    failing: bool,
    stats: DrainStats,
}

impl Drain<'_> {
    fn run(&mut self, wake: &File, commands: &Receiver<Command>) {
        let mut chunk = vec![0u8; READ_CHUNK];
        while self.inputs.iter().any(Option::is_some) {
            let timeout = match self.dirty_since {
                None => PollTimeout::NONE,
                Some(t) => {
                    let left = self.cfg.flush_within.saturating_sub(t.elapsed());
                    // Round up, so a sub-millisecond rest does not spin.
                    let ms = left.as_micros().div_ceil(1000).min(u16::MAX as u128) as u16;
                    PollTimeout::from(ms)
                }
            };
            let ready: Vec<PollFlags> = {
                let mut fds: Vec<PollFd> = Vec::with_capacity(self.inputs.len() + 1);
                let mut slots = Vec::with_capacity(self.inputs.len());
                for (i, input) in self.inputs.iter().enumerate() {
                    if let Some(input) = input {
                        fds.push(PollFd::new(input.file.as_fd(), PollFlags::POLLIN));
                        slots.push(i);
                    }
                }
                fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        crate::log(&format!("log drain: poll: {e}"));
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                }
                let mut ready = vec![PollFlags::empty(); self.inputs.len() + 1];
                for (k, fd) in fds.iter().enumerate() {
                    let slot = slots.get(k).copied().unwrap_or(self.inputs.len());
                    ready[slot] = fd.revents().unwrap_or(PollFlags::POLLERR);
                }
                ready
            };
            // One read per ready stream per round keeps stdout and stderr
            // interleaved roughly as they were written.
            for (i, flags) in ready.iter().enumerate().take(self.inputs.len()) {
                if !flags.is_empty() {
                    self.read_once(i, &mut chunk);
                }
            }
            if ready.last().is_some_and(|f| !f.is_empty()) {
                let mut sink = [0u8; 64];
                while matches!((&*wake).read(&mut sink), Ok(n) if n > 0) {}
                while let Ok(cmd) = commands.try_recv() {
                    match cmd {
                        Command::Reopen(reply) => {
                            self.flush();
                            let r = self.sink.reopen().map_err(|e| e.to_string());
                            let _ = reply.send(r);
                        }
                        Command::Stop => {
                            self.read_rest(&mut chunk);
                            self.finish_all();
                            self.flush();
                            return;
                        }
                    }
                }
            }
            if self.out.len() >= self.cfg.buffer_limit
                || self
                    .dirty_since
                    .is_some_and(|t| t.elapsed() >= self.cfg.flush_within)
            {
                self.flush();
            }
        }
        self.flush();
    }

    /// One read from input `i`; end of file finishes its splitter.
    fn read_once(&mut self, i: usize, chunk: &mut [u8]) {
        let Some(input) = self.inputs[i].as_mut() else {
            return;
        };
        match input.file.read(chunk) {
            Ok(0) => {
                input.splitter.finish(SystemTime::now(), &mut self.out);
                self.inputs[i] = None;
            }
            Ok(n) => {
                if let Some(t) = &self.tap {
                    t.publish(input.stream, &chunk[..n]);
                }
                input
                    .splitter
                    .push(&chunk[..n], SystemTime::now(), &mut self.out)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                crate::log(&format!("log drain: reading a container stream: {e}"));
                input.splitter.finish(SystemTime::now(), &mut self.out);
                self.inputs[i] = None;
            }
        }
        if !self.out.is_empty() && self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
    }

    /// Reads whatever the FIFOs still hold (an exited container's last output).
    fn read_rest(&mut self, chunk: &mut [u8]) {
        for i in 0..self.inputs.len() {
            while let Some(input) = self.inputs[i].as_mut() {
                match input.file.read(chunk) {
                    Ok(0) => {
                        input.splitter.finish(SystemTime::now(), &mut self.out);
                        self.inputs[i] = None;
                    }
                    Ok(n) => {
                        if let Some(t) = &self.tap {
                            t.publish(input.stream, &chunk[..n]);
                        }
                        input
                            .splitter
                            .push(&chunk[..n], SystemTime::now(), &mut self.out);
                        if self.out.len() >= self.cfg.buffer_limit {
                            self.flush();
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }

    fn finish_all(&mut self) {
        for input in self.inputs.iter_mut().flatten() {
            input.splitter.finish(SystemTime::now(), &mut self.out);
        }
    }

    /// Writes the buffered entries; a failed write drops them, counted.
    fn flush(&mut self) {
        self.dirty_since = None;
        if self.out.is_empty() {
            return;
        }
        let entries = self.out.iter().filter(|&&b| b == b'\n').count() as u64;
        match self.sink.append(&self.out) {
            Ok(()) => {
                self.stats.entries_written += entries;
                if self.failing {
                    self.failing = false;
                    crate::log(&format!(
                        "container log writable again; {} entries dropped so far",
                        self.stats.entries_dropped
                    ));
                }
            }
            Err(e) => {
                self.stats.entries_dropped += entries;
                if !self.failing {
                    self.failing = true;
                    crate::log(&format!(
                        "cannot write the container log ({e}); dropping entries until it can be written"
                    ));
                }
            }
        }
        self.out.clear();
    }
}
