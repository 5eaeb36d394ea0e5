//! The drain loop: reads one container's stdout/stderr FIFOs (non-blocking,
//! one `poll`), cuts the bytes into CRI entries and appends them to the log.
//!
//! Back-pressure is by design: entries are written synchronously from this
//! loop, so while the disk is slow the FIFOs are not read, the kernel's pipe
//! buffer fills and the container's writes block; the helper never buffers
//! more than [`DrainConfig::buffer_limit`] plus one read per container.
//!
//! Nothing read is lost when the helper dies: bytes are looked at through
//! [`Source`] (tee into a private pipe) and consumed from the container's
//! pipe only after the entries they make were written (or dropped for a
//! full disk). The pipe therefore also holds what is buffered here, so a
//! flush is due once half a window is waiting; an unterminated line stays
//! in the pipe too and is looked at again on a short timer rather than on
//! every `poll` (the pipe stays readable while it sits there).

use super::format::{LineSplitter, Stream};
use super::sink::LogSink;
use super::source::{Look, Source};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::Read;
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

/// Bytes looked at in a FIFO at once (the window of unconsumed bytes).
const READ_CHUNK: usize = 64 * 1024;

/// First and longest wait before looking again at a stream whose pipe holds
/// only an unterminated line.
const STALL_FIRST: Duration = Duration::from_millis(10);
const STALL_MAX: Duration = Duration::from_millis(160);

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
    source: Source,
    stream: Stream,
    splitter: LineSplitter,
    /// The pipe holds nothing new (only an unterminated line): not polled
    /// for input; looked at again at `stall_until`.
    stalled: Option<(Instant, Duration)>,
    /// End of file seen: removed once its bytes are consumed.
    ended: bool,
}

impl Input {
    /// Seen bytes whose entries are in the drain's buffer: everything but
    /// the splitter's tail (which is the suffix of what was seen, or longer
    /// when a huge tail was spilled into memory).
    fn settled(&self) -> usize {
        self.source.seen().saturating_sub(self.splitter.pending())
    }
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
                    source: Source::new(file),
                    stream,
                    splitter: LineSplitter::new(stream, cfg.max_line),
                    stalled: None,
                    ended: false,
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
            let mut due = self.dirty_since.map(|t| t + self.cfg.flush_within);
            for (until, _) in self.inputs.iter().flatten().filter_map(|i| i.stalled) {
                due = Some(due.map_or(until, |d| d.min(until)));
            }
            let timeout = match due {
                None => PollTimeout::NONE,
                Some(t) => {
                    let left = t.saturating_duration_since(Instant::now());
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
                        // A stalled pipe stays readable: only its hang-up
                        // (always reported) wakes the poll.
                        let events = if input.stalled.is_some() {
                            PollFlags::empty()
                        } else {
                            PollFlags::POLLIN
                        };
                        fds.push(PollFd::new(input.source.as_fd(), events));
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
            // One look per ready stream per round keeps stdout and stderr
            // interleaved roughly as they were written.
            let now = Instant::now();
            for (i, flags) in ready.iter().enumerate().take(self.inputs.len()) {
                let stall_over = self.inputs[i]
                    .as_ref()
                    .and_then(|x| x.stalled)
                    .is_some_and(|(until, _)| until <= now);
                if !flags.is_empty() || stall_over {
                    let hung_up = flags.intersects(PollFlags::POLLHUP | PollFlags::POLLERR);
                    self.look_once(i, &mut chunk, hung_up);
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
            if self.flush_due() {
                self.flush();
            }
        }
        self.flush();
    }

    /// Whether buffered entries are to be written now: the buffer is full,
    /// it is old enough, a stream ended, or a pipe's window is half full of
    /// bytes waiting for their write (the container would soon block).
    fn flush_due(&self) -> bool {
        self.out.len() >= self.cfg.buffer_limit
            || self
                .dirty_since
                .is_some_and(|t| t.elapsed() >= self.cfg.flush_within)
            || self
                .inputs
                .iter()
                .flatten()
                .any(|i| i.ended || i.settled() >= READ_CHUNK / 2)
    }

    /// One look at input `i`; end of file (or a hang-up with nothing new)
    /// finishes its splitter. True when new bytes came.
    fn look_once(&mut self, i: usize, chunk: &mut [u8], hung_up: bool) -> bool {
        let Some(input) = self.inputs[i].as_mut() else {
            return false;
        };
        if input.ended {
            return false;
        }
        let mut new = false;
        match input.source.look(chunk) {
            Ok(Look::New(n)) => {
                new = true;
                input.stalled = None;
                if let Some(t) = &self.tap {
                    t.publish(input.stream, &chunk[..n]);
                }
                input
                    .splitter
                    .push(&chunk[..n], SystemTime::now(), &mut self.out);
                // A line longer than half the window (no maximum set) cannot
                // wait in the pipe: its bytes move into memory.
                if input.splitter.pending() >= READ_CHUNK / 2 {
                    let seen = input.source.seen();
                    if let Err(e) = input.source.consume(seen) {
                        crate::log(&format!("log drain: consuming a container stream: {e}"));
                    }
                }
            }
            Ok(Look::End) => {
                input.splitter.finish(SystemTime::now(), &mut self.out);
                input.ended = true;
            }
            Ok(Look::Nothing) if hung_up => {
                // The writers are gone and only an unterminated tail (seen
                // already) is left.
                input.splitter.finish(SystemTime::now(), &mut self.out);
                input.ended = true;
            }
            Ok(Look::Nothing) => {
                // Stalled only when all that waits in the pipe is an
                // unterminated line; settled bytes are consumed by the
                // flush that is due, which makes room.
                if input.source.seen() > 0 && input.settled() == 0 {
                    let wait = input
                        .stalled
                        .map_or(STALL_FIRST, |(_, w)| (w * 2).min(STALL_MAX));
                    input.stalled = Some((Instant::now() + wait, wait));
                }
            }
            Err(e) => {
                crate::log(&format!("log drain: reading a container stream: {e}"));
                input.splitter.finish(SystemTime::now(), &mut self.out);
                input.ended = true;
            }
        }
        if !self.out.is_empty() && self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
        new
    }

    /// Reads whatever the FIFOs still hold (an exited container's last output).
    fn read_rest(&mut self, chunk: &mut [u8]) {
        for i in 0..self.inputs.len() {
            loop {
                // A full window is emptied first, or nothing new fits.
                if self.flush_due() {
                    self.flush();
                }
                if !self.look_once(i, chunk, false) {
                    break;
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
    /// Either way their bytes are then consumed from the pipes, and ended
    /// streams are closed.
    fn flush(&mut self) {
        self.dirty_since = None;
        if !self.out.is_empty() {
            self.write_out();
        }
        for slot in self.inputs.iter_mut() {
            let Some(input) = slot.as_mut() else { continue };
            let n = input.settled();
            if n > 0 {
                // Room in the pipe: the writer may have added more.
                input.stalled = None;
                if let Err(e) = input.source.consume(n) {
                    crate::log(&format!("log drain: consuming a container stream: {e}"));
                    input.ended = true;
                }
            }
            if input.ended {
                *slot = None;
            }
        }
    }

    fn write_out(&mut self) {
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
