//! Guest output, and the host's own messages.
//!
//! Guest output is written whole line by whole line, each starting with its instance's
//! prefix for `--instances N` and `serve`; in prefixed output, control characters are
//! escaped, so no guest can overwrite another's prefix or drive the operator's terminal.
//! It goes out from a thread of its own, through a bounded buffer, so that a reader that
//! stalls (a full pipe) never blocks the runtime. When the buffer is full, a guest of
//! `latchkey run` waits — its write is pending, as a write to a slow pipe is, while every
//! other task goes on — and nothing is lost; a handler of `latchkey serve` does not wait:
//! what does not fit is dropped, and the count of bytes dropped is said in a line of its
//! own once output flows again ([`Overflow`]).

use std::collections::VecDeque;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// The longest part of a line kept back waiting for its end.
const MAX_LINE: usize = 64 * 1024;

/// The most bytes of guest output waiting to be written, per host stream.
const MAX_QUEUED: usize = 4 << 20;

/// What a guest's write does when the buffer of its host stream is full.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Waits for room (`latchkey run`: a command's output is all of it).
    Wait,
    /// Is dropped, and counted (`latchkey serve`: no request waits on the host's log).
    Drop,
}

/// Which of the host's streams a guest stream goes to.
#[derive(Clone)]
pub enum Target {
    Stdout,
    Stderr,
    /// A buffer, for tests.
    #[cfg(test)]
    Buffer(Arc<Mutex<Vec<u8>>>),
}

/// Writes `text` and a newline to the host's stderr, as the host's own message: through
/// the same queue as guest output, so that neither a stalled reader nor a closed pipe
/// stops the host.
pub fn say(text: std::fmt::Arguments<'_>) {
    Writer::stderr().send(format!("{text}\n").into_bytes(), Overflow::Drop);
}

/// [`say`] with `format!`'s syntax.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::output::say(format_args!($($arg)*)) };
}

/// The host's stderr for its log (`tracing`): queued like everything else written there.
pub struct HostStderr;

impl Write for HostStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Writer::stderr().send(buf.to_vec(), Overflow::Drop);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A guest's stdout or stderr that writes whole lines, each starting with `prefix`, so
/// that lines of concurrent instances never interleave mid-line. Clones share the
/// unfinished last line, which is written, ended, when the last clone is dropped.
#[derive(Clone)]
pub struct Prefixed(Arc<Lines>);

struct Lines {
    target: Target,
    prefix: String,
    overflow: Overflow,
    /// The unfinished last line, shared by every stream the guest opens.
    pending: Mutex<Vec<u8>>,
}

impl Prefixed {
    pub fn new(target: Target, prefix: String, overflow: Overflow) -> Self {
        Prefixed(Arc::new(Lines {
            target,
            prefix,
            overflow,
            pending: Mutex::default(),
        }))
    }
}

impl Lines {
    fn emit(&self, lines: &[u8]) {
        let mut out = Vec::with_capacity(lines.len() + 16);
        for line in lines.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(self.prefix.as_bytes());
            if self.prefix.is_empty() {
                out.extend_from_slice(line);
            } else {
                escape_into(&mut out, line);
            }
        }
        match self.writer() {
            Some(writer) => writer.send(out, self.overflow),
            #[cfg(test)]
            None => match &self.target {
                Target::Buffer(buffer) => buffer.lock().unwrap().extend_from_slice(&out),
                _ => unreachable!("only a buffer has no writer"),
            },
            #[cfg(not(test))]
            None => {}
        }
    }

    fn writer(&self) -> Option<&'static Writer> {
        match &self.target {
            Target::Stdout => Some(Writer::stdout()),
            Target::Stderr => Some(Writer::stderr()),
            #[cfg(test)]
            Target::Buffer(_) => None,
        }
    }

    /// Writes the complete lines in `pending + bytes` and keeps the rest — up to
    /// [`MAX_LINE`] bytes: a longer unfinished line is written out in pieces of that size,
    /// each ended as a line, so that guest output never grows the host.
    fn write_lines(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend_from_slice(bytes);
        let end = match pending.iter().rposition(|&b| b == b'\n') {
            Some(newline) => newline + 1,
            None => 0,
        };
        let overflow = pending.len() - end;
        let cut = end + overflow / MAX_LINE * MAX_LINE;
        if cut == 0 {
            return;
        }
        let rest = pending.split_off(cut);
        let out = std::mem::replace(&mut *pending, rest);
        let (lines, long) = out.split_at(end);
        let mut text = Vec::with_capacity(out.len() + long.len() / MAX_LINE);
        text.extend_from_slice(lines);
        for piece in long.chunks(MAX_LINE) {
            text.extend_from_slice(piece);
            text.push(b'\n');
        }
        self.emit(&text)
    }

    /// Writes what is left without a newline, ending it with one.
    fn finish(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            pending.push(b'\n');
            self.emit(&std::mem::take(&mut *pending));
        }
    }
}

/// `text` with every control character written as `\xNN` (or `\u{NNNN}`): a guest's text
/// as an operator's table shows it.
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c as u32 {
            _ if !c.is_control() => out.push(c),
            code @ 0..=0x7f => out.push_str(&format!("\\x{code:02x}")),
            code => out.push_str(&format!("\\u{{{code:04x}}}")),
        }
    }
    out
}

/// `line` with every control character but the line's end and tabs written as `\xNN`.
///
/// C1 controls (U+0080 to U+009F, `0xC2 0x80..=0x9F` in UTF-8: some terminals read U+009B
/// as an escape's start) are written `\u{NNNN}`, as [`escaped`] writes them.
fn escape_into(out: &mut Vec<u8>, line: &[u8]) {
    let mut bytes = line.iter().copied().peekable();
    while let Some(byte) = bytes.next() {
        if (byte < 0x20 && byte != b'\n' && byte != b'\t') || byte == 0x7f {
            let _ = write!(out, "\\x{byte:02x}");
        } else if let (0xc2, Some(next @ 0x80..=0x9f)) = (byte, bytes.peek().copied()) {
            bytes.next();
            let _ = write!(out, "\\u{{{:04x}}}", u32::from(next));
        } else {
            out.push(byte);
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.finish();
    }
}

impl IsTerminal for Prefixed {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Prefixed {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // Only queued here: the writer's thread does the writing.
        if self.0.overflow == Overflow::Wait
            && let Some(writer) = self.0.writer()
            && !writer.has_room(cx)
        {
            return Poll::Pending;
        }
        self.0.write_lines(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// One of the host's streams, written by a thread of its own from a bounded queue.
struct Writer {
    queue: Mutex<Queue>,
    /// Signalled when there is something to write, and when the queue is empty.
    changed: Condvar,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Bytes dropped since output last flowed.
    dropped: usize,
    /// Whether the thread is writing a chunk it took off the queue.
    writing: bool,
    /// Chunks written so far: how a drain tells a slow reader from a stalled one.
    written: u64,
    /// Writers waiting for room ([`Overflow::Wait`]), woken as chunks go out.
    waiting: Vec<std::task::Waker>,
}

impl Writer {
    fn stdout() -> &'static Writer {
        static STDOUT: OnceLock<&'static Writer> = OnceLock::new();
        STDOUT.get_or_init(|| Writer::start("latchkey-stdout", || Box::new(std::io::stdout())))
    }

    fn stderr() -> &'static Writer {
        static STDERR: OnceLock<&'static Writer> = OnceLock::new();
        STDERR.get_or_init(|| Writer::start("latchkey-stderr", || Box::new(std::io::stderr())))
    }

    fn start(name: &str, open: fn() -> Box<dyn Write + Send>) -> &'static Writer {
        let writer: &'static Writer = Box::leak(Box::new(Writer {
            queue: Mutex::default(),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || writer.run(open()))
            .expect("a thread for guest output");
        writer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `bytes`; if the queue is full, drops them, or — for a writer that waited for
    /// room, which a guest's whole write may overrun — queues them anyway.
    fn send(&self, bytes: Vec<u8>, overflow: Overflow) {
        let mut queue = self.lock();
        if queue.bytes + bytes.len() > MAX_QUEUED && overflow == Overflow::Drop {
            queue.dropped += bytes.len();
            return;
        }
        queue.bytes += bytes.len();
        queue.chunks.push_back(bytes);
        self.changed.notify_all();
    }

    /// Whether there is room for more; if not, `cx` is woken when there is.
    fn has_room(&self, cx: &Context<'_>) -> bool {
        let mut queue = self.lock();
        if queue.bytes < MAX_QUEUED {
            return true;
        }
        queue.waiting.push(cx.waker().clone());
        false
    }

    fn run(&self, mut out: Box<dyn Write + Send>) {
        loop {
            let (chunk, dropped) = {
                let mut queue = self.lock();
                while queue.chunks.is_empty() {
                    queue.writing = false;
                    self.changed.notify_all();
                    queue = self.changed.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
                let chunk = queue.chunks.pop_front().expect("a chunk");
                queue.bytes -= chunk.len();
                queue.writing = true;
                (chunk, std::mem::take(&mut queue.dropped))
            };
            // A stream that cannot be written (a closed pipe) loses what it is sent.
            if dropped > 0 {
                let _ = writeln!(out, "[latchkey: {dropped} bytes of output dropped]");
            }
            let _ = out.write_all(&chunk).and_then(|()| out.flush());
            let waiting = {
                let mut queue = self.lock();
                queue.written += 1;
                std::mem::take(&mut queue.waiting)
            };
            waiting.into_iter().for_each(std::task::Waker::wake);
        }
    }

    /// Waits until everything queued so far is written, or until nothing has been written
    /// for [`STALLED`]: a reader that stopped reading does not keep the host from exiting.
    fn drain(&self) {
        let mut queue = self.lock();
        while !queue.chunks.is_empty() || queue.writing {
            let written = queue.written;
            let (next, waited) = self
                .changed
                .wait_timeout(queue, STALLED)
                .unwrap_or_else(|e| e.into_inner());
            queue = next;
            if waited.timed_out() && queue.written == written {
                return;
            }
        }
    }
}

/// How long a drain waits for a stream that takes nothing.
const STALLED: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until the output queued so far is written (see [`Writer::drain`]): before the
/// host exits.
pub fn drain() {
    Writer::stdout().drain();
    Writer::stderr().drain();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffered(prefix: &str) -> (Prefixed, Arc<Mutex<Vec<u8>>>) {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let out = Prefixed::new(
            Target::Buffer(buffer.clone()),
            prefix.into(),
            Overflow::Drop,
        );
        (out, buffer)
    }

    /// Whole lines go out at once, each with its prefix; the last, unended one when the
    /// stream is dropped.
    #[test]
    fn lines_are_prefixed_and_the_last_is_ended() {
        let (out, buffer) = buffered("[1] ");
        out.0.write_lines(b"one\ntw");
        out.0.write_lines(b"o\nthr");
        assert_eq!(&*buffer.lock().unwrap(), b"[1] one\n[1] two\n");
        drop(out);
        assert_eq!(&*buffer.lock().unwrap(), b"[1] one\n[1] two\n[1] thr\n");
    }

    /// A guest that writes without newlines cannot grow the host: what it writes is kept
    /// up to a bounded length, then written out as a line of its own.
    #[test]
    fn a_line_without_end_is_bounded() {
        let (out, buffer) = buffered("> ");
        let chunk = [b'x'; 4096];
        for _ in 0..1024 {
            out.0.write_lines(&chunk);
            let pending = out.0.pending.lock().unwrap().len();
            assert!(pending <= MAX_LINE, "{pending} bytes kept back");
        }
        drop(out);
        let written = buffer.lock().unwrap();
        let payload = written.iter().filter(|&&b| b == b'x').count();
        assert_eq!(payload, 1024 * 4096, "bytes were lost");
        assert!(written.starts_with(b"> xxx"));
    }

    /// In prefixed output a guest's carriage returns, escapes and NULs are shown, not
    /// obeyed: no guest can overwrite its prefix or another instance's line.
    #[test]
    fn control_characters_are_escaped_in_prefixed_output() {
        let (out, buffer) = buffered("[2] ");
        out.0.write_lines("a\rb\x1b[2Kc\0d\te\u{9b}2J\n".as_bytes());
        assert_eq!(
            &*buffer.lock().unwrap(),
            b"[2] a\\x0db\\x1b[2Kc\\x00d\te\\u{009b}2J\n"
        );
        let (plain, buffer) = buffered("");
        plain.0.write_lines(b"raw\r\n");
        assert_eq!(&*buffer.lock().unwrap(), b"raw\r\n");
    }

    /// A writer whose stream never takes anything (a stalled reader) keeps at most
    /// `MAX_QUEUED` bytes and drops the rest, counting them; sending never waits.
    #[test]
    fn a_stalled_stream_drops_what_does_not_fit() {
        let writer = Writer {
            queue: Mutex::default(),
            changed: Condvar::new(),
        };
        for _ in 0..(2 * MAX_QUEUED / 1024) {
            writer.send(vec![b'x'; 1024], Overflow::Drop);
        }
        let queue = writer.lock();
        assert_eq!(queue.bytes, MAX_QUEUED);
        assert_eq!(queue.dropped, MAX_QUEUED);
    }
}
