//! Talking to the child processes of a real-process test: their output, the example binaries, line clients.
//!
//! The pieces the integration tests of several crates share when they run
//! a server program as a child (an example such as `postfix_echo`, a
//! Postfix daemon): [`Collector`] gathers a child's stdout or stderr until
//! EOF, [`example_binary`] finds an example cargo built, and
//! [`Conversation`] is a line client over TCP or a UNIX-domain socket.
//! Every wait ends at a deadline the caller gives, or at the stream's
//! timeouts ([`WAIT`]), and pauses only inside poll(2).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{WAIT, wait_readable};

// ---------------------------------------------------------------------------
// Child processes.

/// One output pipe of a child (its stdout or stderr), collected until EOF.
///
/// Reading a pipe blocks until the child writes, so every read here is
/// preceded by a poll bounded by the caller's deadline.
pub struct Collector<R> {
    pipe: Option<R>,
    bytes: Vec<u8>,
    eof: bool,
}

impl<R: Read + AsFd> Collector<R> {
    /// Collects from `pipe`; `None` (an output that was not piped) is at
    /// EOF from the start.
    pub fn new(pipe: Option<R>) -> Collector<R> {
        let eof = pipe.is_none();
        Collector { pipe, bytes: Vec::new(), eof }
    }

    /// The pipe's descriptor while it is not at EOF, to poll with others.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.pipe.as_ref().filter(|_| !self.eof).map(AsFd::as_fd)
    }

    /// Whether every writer has closed the pipe (the child, and whoever
    /// inherited it from the child, exited).
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Everything collected so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Everything collected so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Waits at most until `deadline` for the pipe to be readable, then
    /// reads once; returns whether something (data or EOF) arrived.
    pub fn read_some(&mut self, deadline: Instant) -> bool {
        let Some(pipe) = self.pipe.as_mut().filter(|_| !self.eof) else {
            return false;
        };
        if !wait_readable(pipe.as_fd(), deadline) {
            return false;
        }
        let mut buf = [0u8; 4096];
        match pipe.read(&mut buf) {
            Ok(0) => self.eof = true,
            Ok(n) => self.bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading a child's output: {e}"),
        }
        true
    }

    /// Reads once if something is ready now, without waiting.
    pub fn read_if_ready(&mut self) {
        self.read_some(Instant::now());
    }

    /// Reads until EOF or `deadline`; returns whether EOF was reached.
    pub fn read_to_eof(&mut self, deadline: Instant) -> bool {
        while !self.eof {
            if !self.read_some(deadline) {
                return false;
            }
        }
        true
    }

    /// Reads until `done` holds for the text collected, or EOF, or
    /// `deadline`; returns whether it held.
    pub fn read_until(&mut self, deadline: Instant, mut done: impl FnMut(&str) -> bool) -> bool {
        loop {
            if done(&self.text()) {
                return true;
            }
            if !self.read_some(deadline) {
                return false;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Files.

/// The example binary `name` that cargo built for this test run, from the
/// crate at `manifest_dir` (the caller's `env!("CARGO_MANIFEST_DIR")`).
///
/// Cargo builds examples for `cargo test` unless a single test target is
/// named (`--test <name>`), into `target/<profile>/examples/`, next to the
/// `deps/` directory that holds this test binary. A build of only the test
/// leaves an older example in place, so a binary older than its source is
/// refused rather than tested.
pub fn example_binary(manifest_dir: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test binary location {}", exe.display()));
    let bin = profile_dir.join("examples").join(name);
    assert!(
        bin.is_file(),
        "the example binary {} is missing: run `cargo test --workspace` (or `cargo test -p <the example's crate>`), \
         which builds examples before running tests",
        bin.display()
    );
    let source = Path::new(manifest_dir).join("examples").join(format!("{name}.rs"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
    if let (Ok(built), Ok(edited)) = (modified(&bin), modified(&source)) {
        assert!(
            built >= edited,
            "the example binary {} is older than {}: run `cargo test --workspace` (or \
             `cargo build --example {name}`) to rebuild it",
            bin.display(),
            source.display()
        );
    }
    bin
}

// ---------------------------------------------------------------------------
// Clients of the echo example.

/// A client connection of either family.
pub trait Stream: Read + Write + AsFd {
    /// Sends EOF (`shutdown(SHUT_WR)`), keeping the read side open.
    fn close_write(&self) -> io::Result<()>;
}

impl Stream for TcpStream {
    fn close_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Stream for UnixStream {
    fn close_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// A TCP client whose reads and writes are bounded by [`WAIT`].
pub fn tcp_client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    s.set_write_timeout(Some(WAIT)).expect("write timeout");
    s
}

/// Connects a Unix-domain client whose reads and writes are bounded by
/// [`WAIT`].
pub fn try_unix_client(path: &Path) -> io::Result<UnixStream> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(WAIT))?;
    s.set_write_timeout(Some(WAIT))?;
    Ok(s)
}

/// [`try_unix_client`], failing the test if it cannot connect.
pub fn unix_client(path: &Path) -> UnixStream {
    try_unix_client(path).unwrap_or_else(|e| panic!("connecting to {}: {e}", path.display()))
}

/// One client's conversation with the echo service; reads are bounded by
/// the stream's timeouts.
pub struct Conversation<S: Stream> {
    conn: BufReader<S>,
}

impl<S: Stream> Conversation<S> {
    /// A conversation over `stream`.
    pub fn new(stream: S) -> Conversation<S> {
        Conversation { conn: BufReader::new(stream) }
    }

    /// Sends `line` and a newline, without awaiting the echo.
    pub fn send(&mut self, line: &str) {
        let sent = format!("{line}\n");
        self.conn.get_mut().write_all(sent.as_bytes()).unwrap_or_else(|e| panic!("sending {line:?}: {e}"));
    }

    /// Awaits the echo of `line` (sent with [`send`](Self::send)) and checks
    /// it.
    pub fn expect_echo(&mut self, line: &str) {
        let mut back = String::new();
        self.conn
            .read_line(&mut back)
            .unwrap_or_else(|e| panic!("awaiting the echo of {line:?} (bounded by {WAIT:?}): {e}"));
        assert_eq!(back, format!("{line}\n"), "the echo of {line:?}");
    }

    /// Sends `line` and checks that it comes back.
    pub fn echo(&mut self, line: &str) {
        self.send(line);
        self.expect_echo(line);
    }

    /// Whether the server sends anything (or closes) within `window`.
    pub fn answers_within(&self, window: Duration) -> bool {
        !self.conn.buffer().is_empty() || wait_readable(self.conn.get_ref().as_fd(), Instant::now() + window)
    }

    /// Sends `tail` (no newline) and EOF; checks that the tail comes back
    /// and the server then closes the connection.
    pub fn finish(mut self, tail: &str) {
        self.conn.get_mut().write_all(tail.as_bytes()).unwrap_or_else(|e| panic!("sending {tail:?}: {e}"));
        self.conn.get_ref().close_write().expect("shutdown(SHUT_WR)");
        let mut rest = Vec::new();
        self.conn
            .read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("awaiting the server's EOF after ours (bounded by {WAIT:?}): {e}"));
        assert_eq!(String::from_utf8_lossy(&rest), tail, "what the server sent before closing");
    }
}
