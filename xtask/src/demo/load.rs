//! The demo's load generator: client threads that keep the service's children busy.
//!
//! Each of N threads opens a connection, writes a line, reads the echo and
//! checks it, keeps the connection for a while (so that its child stays
//! `TAKEN`), closes its end and awaits the server's close; then again,
//! until told to stop. The counters ([`LoadStats`]) are shared with the
//! master's loop, which shows them. Every thread holds a clone of a pipe's
//! write end, so the read end reports EOF once all of them have finished:
//! the master polls it ([`Load::done_fd`]) instead of joining blindly.

use std::io::{self, BufRead, BufReader, PipeReader, PipeWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a client waits for the service (connect, echo, close) before it
/// counts the connection as failed.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the clients connect.
#[derive(Clone, Debug)]
pub(super) enum Target {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix-domain socket path.
    Unix(PathBuf),
}

/// What the clients did so far.
#[derive(Debug, Default)]
pub(super) struct LoadStats {
    /// Connections open now.
    pub(super) active: AtomicUsize,
    /// The most connections open at once.
    pub(super) max_active: AtomicUsize,
    /// Connections whose echo came back right and which closed cleanly.
    pub(super) served: AtomicU64,
    /// Connections that failed (refused, timed out, wrong echo, reset).
    pub(super) failed: AtomicU64,
    /// The last failure, for the view.
    pub(super) last_error: Mutex<Option<String>>,
}

/// The running load generator.
pub(super) struct Load {
    stop: Arc<AtomicBool>,
    done: PipeReader,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<LoadStats>,
}

impl Load {
    /// Starts `clients` threads against `target`, each keeping a connection
    /// for about `hold` after its echo.
    pub(super) fn start(clients: usize, target: &Target, hold: Duration) -> io::Result<Load> {
        let (done, writer) = io::pipe()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LoadStats::default());
        let mut threads = Vec::with_capacity(clients);
        for number in 0..clients {
            let client = Client {
                number,
                target: target.clone(),
                hold,
                stop: Arc::clone(&stop),
                stats: Arc::clone(&stats),
                _done: writer.try_clone()?,
            };
            threads.push(std::thread::Builder::new().name(format!("client-{number}")).spawn(move || client.run())?);
        }
        drop(writer);
        Ok(Load { stop, done, threads, stats })
    }

    /// The counters.
    pub(super) fn stats(&self) -> &Arc<LoadStats> {
        &self.stats
    }

    /// Tells every client to finish its connection and stop.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Readable (at EOF) once every client thread has finished.
    pub(super) fn done_fd(&self) -> BorrowedFd<'_> {
        self.done.as_fd()
    }

    /// Joins the threads, which have finished once [`done_fd`](Self::done_fd)
    /// is at EOF (or nearly: a thread drops its pipe end as it returns).
    pub(super) fn join(self) {
        let mut rest = Vec::new();
        let _ = (&self.done).read_to_end(&mut rest);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// One client thread.
struct Client {
    number: usize,
    target: Target,
    hold: Duration,
    stop: Arc<AtomicBool>,
    stats: Arc<LoadStats>,
    /// Dropped when the thread ends: see [`Load::done_fd`].
    _done: PipeWriter,
}

impl Client {
    fn run(self) {
        let mut round: usize = 0;
        while !self.stop.load(Ordering::Relaxed) {
            round += 1;
            match self.connection(round) {
                Ok(()) => {
                    self.stats.served.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut last) = self.stats.last_error.lock() {
                        *last = Some(format!("client {}: {e}", self.number));
                    }
                    // Not a busy loop against a service that refuses.
                    std::thread::sleep(self.hold.max(Duration::from_millis(50)));
                }
            }
        }
    }

    /// One connection: a line, its echo, a hold, both sides closed.
    fn connection(&self, round: usize) -> io::Result<()> {
        match &self.target {
            Target::Tcp(addr) => {
                let s = TcpStream::connect_timeout(addr, CLIENT_TIMEOUT)?;
                s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
                s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
                self.converse(s, round, |s| s.shutdown(Shutdown::Write))
            }
            Target::Unix(path) => {
                let s = UnixStream::connect(path)?;
                s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
                s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
                self.converse(s, round, |s| s.shutdown(Shutdown::Write))
            }
        }
    }

    fn converse<S: Read + Write>(
        &self,
        stream: S,
        round: usize,
        close: impl Fn(&S) -> io::Result<()>,
    ) -> io::Result<()> {
        let active = self.stats.active.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats.max_active.fetch_max(active, Ordering::Relaxed);
        let result = self.exchange(stream, round, close);
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        result
    }

    fn exchange<S: Read + Write>(
        &self,
        stream: S,
        round: usize,
        close: impl Fn(&S) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut conn = BufReader::new(stream);
        let line = format!("client {} round {round}\n", self.number);
        conn.get_mut().write_all(line.as_bytes())?;
        let mut back = String::new();
        conn.read_line(&mut back)?;
        if back != line {
            return Err(io::Error::other(format!("sent {line:?}, got back {back:?}")));
        }
        // A hold between 50% and 150% of --hold, different for each
        // client and round, so that the children do not move in step.
        let spread = u32::try_from((self.number * 7 + round * 13) % 101).unwrap_or(50);
        std::thread::sleep(self.hold / 2 + self.hold * spread / 100);
        close(conn.get_ref())?;
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest)?;
        if !rest.is_empty() {
            return Err(io::Error::other(format!("unexpected {} bytes after the echo", rest.len())));
        }
        Ok(())
    }
}
