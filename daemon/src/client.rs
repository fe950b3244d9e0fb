//! One client of a skeleton: a TCP or UNIX-domain connection, or stdin/stdout when stand-alone.
//!
//! A [`Client`] is what a handler gets: `Read`, `BufRead` and `Write`, in
//! blocking mode with `ipc_timeout` on every read and write (Postfix's
//! `timed_ipc_setup`), so a client that stalls ends its handler with a
//! `TimedOut` or `WouldBlock` error instead of holding the process for
//! ever. Its read buffer lives as long as the connection: in a
//! multi_server a client may send its next request before the answer to
//! the last one, and what the handler did not consume yet stays buffered
//! for its next call (the skeleton calls it again at once).
//!
//! # Errors
//!
//! Reads and writes fail as the socket does; a read after `ipc_timeout`
//! without data fails with `WouldBlock` (`EAGAIN`, how Linux reports a
//! socket timeout).
//!
//! # See also
//!
//! Postfix `src/global/timed_ipc.c`, `src/util/vstream.c`.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The size of a client's read buffer.
const BUFFER: usize = 8192;

/// The connection under a [`Client`].
#[derive(Debug)]
pub(crate) enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// Stand-alone: read stdin, write stdout.
    Stdio(io::Stdin, io::Stdout),
}

/// One client connection, as a handler sees it.
#[derive(Debug)]
pub struct Client {
    conn: Conn,
    number: u64,
    peer: String,
    buf: Box<[u8]>,
    pos: usize,
    filled: usize,
}

impl Client {
    /// Wraps an accepted connection: blocking, with `timeout` (zero for
    /// none) on each read and write.
    pub(crate) fn new(conn: Conn, number: u64, timeout: Duration) -> io::Result<Client> {
        let timeout = Some(timeout).filter(|t| !t.is_zero());
        let peer = match &conn {
            Conn::Tcp(s) => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)?;
                s.peer_addr().map_or_else(|_| "unknown".to_owned(), |a| a.to_string())
            }
            Conn::Unix(s) => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)?;
                "local".to_owned()
            }
            Conn::Stdio(..) => "stdin".to_owned(),
        };
        Ok(Client { conn, number, peer, buf: vec![0; BUFFER].into_boxed_slice(), pos: 0, filled: 0 })
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

    /// Whether bytes the handler has not read yet are buffered.
    pub(crate) fn has_buffered(&self) -> bool {
        self.pos < self.filled
    }

    /// Shuts the connection down both ways, so that the client sees EOF
    /// now, before the skeleton's `AVAIL` (dropping it does the same).
    pub(crate) fn shutdown(&self) {
        let _ = match &self.conn {
            Conn::Tcp(s) => s.shutdown(Shutdown::Both),
            Conn::Unix(s) => s.shutdown(Shutdown::Both),
            Conn::Stdio(_, out) => out.lock().flush(),
        };
    }

    fn read_conn(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match &mut self.conn {
            Conn::Tcp(s) => s.read(out),
            Conn::Unix(s) => s.read(out),
            Conn::Stdio(input, _) => input.read(out),
        }
    }
}

impl AsFd for Client {
    /// The connection's descriptor (stdin's when stand-alone).
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.conn {
            Conn::Tcp(s) => s.as_fd(),
            Conn::Unix(s) => s.as_fd(),
            Conn::Stdio(input, _) => input.as_fd(),
        }
    }
}

impl Read for Client {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.has_buffered() {
            let n = out.len().min(self.filled - self.pos);
            out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.read_conn(out)
    }
}

impl BufRead for Client {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if !self.has_buffered() {
            let mut buf = std::mem::take(&mut self.buf);
            let got = self.read_conn(&mut buf);
            self.buf = buf;
            self.pos = 0;
            self.filled = got?;
        }
        Ok(&self.buf[self.pos..self.filled])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.filled);
    }
}

impl Write for Client {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.conn {
            Conn::Tcp(s) => s.write(data),
            Conn::Unix(s) => s.write(data),
            Conn::Stdio(_, out) => out.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.conn {
            Conn::Tcp(_) | Conn::Unix(_) => Ok(()),
            Conn::Stdio(_, out) => out.flush(),
        }
    }
}
