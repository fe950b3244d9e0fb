//! The async flavour (feature `tokio`): both skeletons with `async fn` handlers, the listening sockets and the master-disconnect wait on tokio's reactor.
//!
//! [`Daemon::single_server_async`] and [`Daemon::multi_server_async`] keep
//! the rules of their blocking twins ([`crate::single`], [`crate::multi`])
//! word for word: `TAKEN` before each client (single) or request (multi),
//! `AVAIL` after, `max_use`, `max_idle` (multi: only while no client is
//! connected), `ipc_timeout` on each read and write, exit as soon as the
//! master goes or an `AVAIL` says `Disconnected`, a bound on accept
//! errors, `-S` on stdin/stdout. The listening sockets become tokio
//! listeners (a lost race on a shared socket is retried inside tokio's
//! `accept`, so it is not reported), and the sink's disconnect descriptor
//! sits in tokio's reactor through [`tokio::io::unix::AsyncFd`]. As in
//! Postfix, and as in the blocking flavour, requests are served one at a
//! time: while a handler runs, the process is `TAKEN` and other clients
//! wait. Notifications are one short `send(2)` (or a memory store) and run
//! inline.
//!
//! The futures are not `Send` (the event hook need not be): run them on a
//! current-thread runtime, as [`block_on`] does.
//!
//! ```no_run
//! use master_proto_daemon::{Daemon, aio};
//! use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
//!
//! fn main() -> std::process::ExitCode {
//!     Daemon::main(|daemon| {
//!         aio::block_on(daemon.single_server_async(async |client| {
//!             let mut line = String::new();
//!             while client.read_line(&mut line).await? > 0 {
//!                 client.write_all(line.as_bytes()).await?;
//!                 line.clear();
//!             }
//!             Ok(())
//!         }))
//!     })
//! }
//! ```
//!
//! # Safety
//!
//! One `unsafe` call: registering a descriptor with tokio's reactor
//! ([`AsyncFd::register_with_interest`]), whose contract is that the
//! descriptor stays open and the same while registered. It is a duplicate
//! of the sink's disconnect descriptor that this module owns (an
//! [`OwnedFd`] inside the `AsyncFd`), so nothing else can close it.
//!
//! # Errors
//!
//! As the blocking flavour's [`ServerError`]; [`ServerError::Runtime`]
//! when [`block_on`] cannot build its runtime or the reactor refuses a
//! descriptor.
//!
//! # See also
//!
//! Postfix `src/master/single_server.c`, `src/master/multi_server.c`;
//! tokio's `AsyncFd`.

#![allow(unsafe_code)] // Safety: one registration with tokio's reactor of a descriptor owned here (module docs).

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use master_proto::StatusSink;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::event::{Event, ExitReason};
use crate::listen::{Listener, errno_of};
use crate::multi::Session;
use crate::server::{Daemon, ServerError};

/// The size of a client's read buffer.
const BUFFER: usize = 8192;

/// Runs `future` to completion on a new current-thread tokio runtime with
/// I/O and timers.
///
/// # Errors
///
/// [`ServerError::Runtime`] when the runtime cannot be built; otherwise
/// the future's own result.
pub fn block_on<T>(future: impl Future<Output = Result<T, ServerError>>) -> Result<T, ServerError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| ServerError::Runtime(e.kind()))?;
    runtime.block_on(future)
}

/// The connection under an [`AsyncClient`].
#[derive(Debug)]
enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
    Stdio(tokio::io::Stdin, tokio::io::Stdout),
}

/// One client connection, as an async handler sees it: `AsyncRead`,
/// `AsyncBufRead` (its buffer lives as long as the connection) and
/// `AsyncWrite`, with `ipc_timeout` on each read and write (an operation
/// that waits longer fails with `TimedOut`).
#[derive(Debug)]
pub struct AsyncClient {
    conn: Conn,
    number: u64,
    peer: String,
    timeout: Duration,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    buf: Box<[u8]>,
    pos: usize,
    filled: usize,
}

impl AsyncClient {
    fn new(conn: Conn, number: u64, timeout: Duration) -> AsyncClient {
        let peer = match &conn {
            Conn::Tcp(s) => s.peer_addr().map_or_else(|_| "unknown".to_owned(), |a| a.to_string()),
            Conn::Unix(_) => "local".to_owned(),
            Conn::Stdio(..) => "stdin".to_owned(),
        };
        AsyncClient {
            conn,
            number,
            peer,
            timeout,
            read_timer: None,
            write_timer: None,
            buf: vec![0; BUFFER].into_boxed_slice(),
            pos: 0,
            filled: 0,
        }
    }

    /// The client's number in this process, from 1.
    #[must_use]
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Who it is: the peer's address for TCP, `local` for a UNIX-domain
    /// socket, `stdin` when stand-alone.
    #[must_use]
    pub fn peer(&self) -> &str {
        &self.peer
    }

    fn has_buffered(&self) -> bool {
        self.pos < self.filled
    }

    /// Whether the socket may have data, without reading.
    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let ready = match &self.conn {
            Conn::Tcp(s) => s.poll_read_ready(cx),
            Conn::Unix(s) => s.poll_read_ready(cx),
            Conn::Stdio(..) => Poll::Ready(Ok(())),
        };
        ready.map(|_| ())
    }

    /// Reads what has arrived into the buffer without waiting: `Some(0)` at
    /// EOF, `None` when nothing is there after all.
    fn try_fill(&mut self) -> io::Result<Option<usize>> {
        let got = match &self.conn {
            Conn::Tcp(s) => s.try_read(&mut self.buf),
            Conn::Unix(s) => s.try_read(&mut self.buf),
            Conn::Stdio(..) => return Ok(Some(1)),
        };
        match got {
            Ok(n) => {
                (self.pos, self.filled) = (0, n);
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits out `timer` (armed with the timeout on first use): a
    /// `TimedOut` error once it fires.
    fn poll_timer(timer: &mut Option<Pin<Box<Sleep>>>, timeout: Duration, cx: &mut Context<'_>) -> Poll<io::Error> {
        if timeout.is_zero() {
            return Poll::Pending;
        }
        let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(sleep.as_mut().poll(cx));
        *timer = None;
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "ipc_timeout"))
    }

    fn poll_read_conn(&mut self, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let got = match &mut self.conn {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, out),
            Conn::Unix(s) => Pin::new(s).poll_read(cx, out),
            Conn::Stdio(input, _) => Pin::new(input).poll_read(cx, out),
        };
        match got {
            Poll::Ready(r) => {
                self.read_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => AsyncClient::poll_timer(&mut self.read_timer, self.timeout, cx).map(Err),
        }
    }
}

impl AsyncRead for AsyncClient {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.has_buffered() {
            let n = out.remaining().min(this.filled - this.pos);
            out.put_slice(&this.buf[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        this.poll_read_conn(cx, out)
    }
}

impl AsyncBufRead for AsyncClient {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if !this.has_buffered() {
            let mut buf = std::mem::take(&mut this.buf);
            let mut read = ReadBuf::new(&mut buf);
            let got = this.poll_read_conn(cx, &mut read);
            let n = read.filled().len();
            this.buf = buf;
            ready!(got)?;
            (this.pos, this.filled) = (0, n);
        }
        Poll::Ready(Ok(&this.buf[this.pos..this.filled]))
    }

    fn consume(self: Pin<&mut Self>, n: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + n).min(this.filled);
    }
}

impl AsyncWrite for AsyncClient {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let got = match &mut this.conn {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Conn::Unix(s) => Pin::new(s).poll_write(cx, data),
            Conn::Stdio(_, out) => Pin::new(out).poll_write(cx, data),
        };
        match got {
            Poll::Ready(r) => {
                this.write_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => AsyncClient::poll_timer(&mut this.write_timer, this.timeout, cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().conn {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
            Conn::Stdio(_, out) => Pin::new(out).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().conn {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Stdio(_, out) => Pin::new(out).poll_flush(cx),
        }
    }
}

/// A listening socket on tokio's reactor.
enum AsyncListener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl AsyncListener {
    fn new(listener: Listener) -> io::Result<AsyncListener> {
        // Already non-blocking, as tokio wants them.
        match listener.into_inner() {
            Ok(l) => tokio::net::TcpListener::from_std(l).map(AsyncListener::Tcp),
            Err(l) => tokio::net::UnixListener::from_std(l).map(AsyncListener::Unix),
        }
    }

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<Conn>> {
        match self {
            AsyncListener::Tcp(l) => l.poll_accept(cx).map_ok(|(s, _)| Conn::Tcp(s)),
            AsyncListener::Unix(l) => l.poll_accept(cx).map_ok(|(s, _)| Conn::Unix(s)),
        }
    }
}

/// Accepts from whichever listening socket has a connection first.
async fn accept(listeners: &[AsyncListener]) -> io::Result<Conn> {
    std::future::poll_fn(|cx| {
        for l in listeners {
            if let Poll::Ready(got) = l.poll_accept(cx) {
                return Poll::Ready(got);
            }
        }
        Poll::Pending
    })
    .await
}

/// Waits for the first client with a request buffered or data arriving.
async fn readable(clients: &[AsyncClient]) -> usize {
    if clients.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for (i, c) in clients.iter().enumerate() {
            if c.has_buffered() || c.poll_ready(cx).is_ready() {
                return Poll::Ready(i);
            }
        }
        Poll::Pending
    })
    .await
}

/// Sleeps until `deadline`, or for ever for none.
async fn idle(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The moment `limit` from now, or `None` for no limit (zero).
fn deadline(limit: Duration) -> Option<Instant> {
    if limit.is_zero() { None } else { Instant::now().checked_add(limit) }
}

/// What woke the loop.
enum Wake {
    MasterGone,
    Idle,
    Accepted(io::Result<Conn>),
    Readable(usize),
}

impl Daemon {
    /// The async [`single_server`](Daemon::single_server): `handler`
    /// serves one whole client, between `TAKEN` and `AVAIL`.
    ///
    /// # Errors
    ///
    /// As [`single_server`](Daemon::single_server).
    pub async fn single_server_async(
        self,
        mut handler: impl AsyncFnMut(&mut AsyncClient) -> io::Result<()>,
    ) -> Result<ExitReason, ServerError> {
        self.serve_async(false, async |client| handler(client).await.map(|()| Session::Close)).await
    }

    /// The async [`multi_server`](Daemon::multi_server): `handler` serves
    /// one request of a client that has data, between `TAKEN` and `AVAIL`.
    ///
    /// # Errors
    ///
    /// As [`multi_server`](Daemon::multi_server).
    pub async fn multi_server_async(
        self,
        handler: impl AsyncFnMut(&mut AsyncClient) -> io::Result<Session>,
    ) -> Result<ExitReason, ServerError> {
        self.serve_async(true, handler).await
    }

    /// Both loops: a single_server is a multi_server that serves each
    /// client whole as soon as it is accepted, counts it at once, and
    /// accepts no other meanwhile.
    async fn serve_async(
        mut self,
        multi: bool,
        mut handler: impl AsyncFnMut(&mut AsyncClient) -> io::Result<Session>,
    ) -> Result<ExitReason, ServerError> {
        if self.args.stand_alone {
            let stdio = Conn::Stdio(tokio::io::stdin(), tokio::io::stdout());
            let mut client = AsyncClient::new(stdio, 1, Duration::ZERO);
            let fail = |e: io::Error| ServerError::StandAlone(e.kind());
            loop {
                if multi && tokio::io::AsyncBufReadExt::fill_buf(&mut client).await.map_err(fail)?.is_empty() {
                    break;
                }
                let session = handler(&mut client).await.map_err(fail)?;
                client.flush().await.map_err(fail)?;
                if !multi || session == Session::Close {
                    break;
                }
            }
            return self.exit(ExitReason::StandAloneDone);
        }
        let (sink, listeners) = self.setup()?;
        let listeners = listeners
            .into_iter()
            .enumerate()
            .map(|(number, l)| {
                AsyncListener::new(l)
                    .map_err(|e| ServerError::ListenSocket { number, problem: crate::ListenProblem::Io(errno_of(&e)) })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A duplicate of the disconnect descriptor (the same open file: at
        // EOF when the master goes), owned by the AsyncFd.
        let gone: OwnedFd = sink.disconnect_fd().try_clone_to_owned().map_err(|e| ServerError::Runtime(e.kind()))?;
        // SAFETY: `gone` is an OwnedFd moved into the AsyncFd: it stays
        // open, and names the same file, until the AsyncFd is dropped.
        let gone = unsafe { AsyncFd::register_with_interest(gone, tokio::io::Interest::READABLE) }
            .map_err(|e| ServerError::Runtime(e.into_parts().1.kind()))?;
        let limits = self.args.limits;
        let mut clients: Vec<AsyncClient> = Vec::new();
        let (mut accepted, mut use_count, mut accept_errors) = (0u64, 0u64, 0u32);
        let mut idle_until = deadline(limits.max_idle);
        loop {
            if clients.is_empty() {
                if limits.max_use > 0 && use_count >= limits.max_use {
                    return self.exit(ExitReason::UseLimit);
                }
                if idle_until.is_some_and(|at| Instant::now() >= at) {
                    return self.exit(ExitReason::IdleTimeout);
                }
            }
            let until = if clients.is_empty() { idle_until } else { None };
            let wake = tokio::select! {
                biased;
                _ = gone.readable() => Wake::MasterGone,
                () = idle(until) => Wake::Idle,
                i = readable(&clients) => Wake::Readable(i),
                got = accept(&listeners) => Wake::Accepted(got),
            };
            let i = match wake {
                Wake::MasterGone => return self.exit(ExitReason::MasterDisconnect),
                Wake::Idle => continue,
                Wake::Accepted(Err(e)) => {
                    self.accept_failed(errno_of(&e), &mut accept_errors)?;
                    continue;
                }
                Wake::Accepted(Ok(conn)) => {
                    accepted += 1;
                    let client = AsyncClient::new(conn, accepted, limits.ipc_timeout);
                    self.report(&Event::Connected { client: client.number(), peer: client.peer() });
                    clients.push(client);
                    if multi {
                        continue;
                    }
                    clients.len() - 1
                }
                Wake::Readable(i) => i,
            };
            let client = &mut clients[i];
            // A multi_server client with nothing after all (a spurious
            // wake-up) waits again; at EOF it is closed unheard.
            let (close, error) = match if multi && !client.has_buffered() { client.try_fill() } else { Ok(Some(1)) } {
                Ok(None) => continue,
                Ok(Some(0)) => (true, None),
                Err(e) => (true, Some(e)),
                Ok(Some(_)) => {
                    self.taken(&sink);
                    let result = handler(client).await;
                    let session = match result {
                        Ok(Session::Keep) if multi => (false, None),
                        Ok(_) => (true, None),
                        Err(e) => (true, Some(e)),
                    };
                    if session.0 {
                        let _ = client.shutdown().await;
                    }
                    if !multi {
                        let (client, error) = (&clients[i], session.1.as_ref());
                        self.report(&Event::Closed { client: client.number(), peer: client.peer(), error });
                    }
                    if !self.avail(&sink)? {
                        return self.exit(ExitReason::MasterDisconnect);
                    }
                    if !multi {
                        clients.clear();
                        use_count = use_count.saturating_add(1);
                        idle_until = deadline(limits.max_idle);
                        continue;
                    }
                    session
                }
            };
            if close {
                let client = clients.remove(i);
                use_count = use_count.saturating_add(1);
                self.report(&Event::Closed { client: client.number(), peer: client.peer(), error: error.as_ref() });
                if clients.is_empty() {
                    idle_until = deadline(limits.max_idle);
                }
            }
        }
    }
}
