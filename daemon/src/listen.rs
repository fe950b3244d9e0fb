//! The listening sockets master(8) passes at fd 6, 7, …: checked, made non-blocking, accepted from.
//!
//! A service's children share its listening sockets, and the kernel wakes
//! every child polling one when a client connects: all but one then find
//! nothing to accept. The sockets are therefore non-blocking, and an
//! `accept` that says `EAGAIN` (or another error that means the
//! connection is gone, as Postfix's `sane_accept` lists them) is a lost
//! race, not a failure: the skeleton polls again.
//!
//! # Errors
//!
//! [`ListenProblem`] for a descriptor that is not a listening stream
//! socket of the service type's family; a failed `accept` is an errno,
//! which [`is_lost_race`] classifies.
//!
//! # See also
//!
//! Postfix `src/util/sane_accept.c`, `src/util/inet_listen.c`
//! (`inet_accept`), `src/util/unix_listen.c` (`unix_accept`).

use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockType, SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt};

use crate::ServiceType;
use crate::client::{Client, Conn};

/// What is wrong with a listening socket the master passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListenProblem {
    /// It is not a stream socket.
    #[error("not a stream socket")]
    NotStream,
    /// It is a stream socket that is not listening.
    #[error("not listening")]
    NotListening,
    /// Its address family does not match `-t`.
    #[error("its address family does not match service type {expected}")]
    WrongFamily {
        /// The service type from `-t`.
        expected: ServiceType,
    },
    /// It is neither a TCP nor a UNIX-domain socket.
    #[error("it is neither a TCP nor a UNIX-domain socket")]
    OtherFamily,
    /// Looking at it failed.
    #[error("{0}")]
    Io(#[source] Errno),
}

/// One of the service's listening sockets.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Checks that `fd` is a listening stream socket of `service_type`'s
    /// family (TCP or UNIX-domain, whichever it is, for `None`), and makes
    /// it non-blocking.
    pub(crate) fn new(fd: OwnedFd, service_type: Option<ServiceType>) -> Result<Listener, ListenProblem> {
        if getsockopt(&fd, sockopt::SockType).map_err(ListenProblem::Io)? != SockType::Stream {
            return Err(ListenProblem::NotStream);
        }
        if !getsockopt(&fd, sockopt::AcceptConn).map_err(ListenProblem::Io)? {
            return Err(ListenProblem::NotListening);
        }
        let family = getsockname::<SockaddrStorage>(fd.as_raw_fd()).map_err(ListenProblem::Io)?.family();
        let listener = match (service_type, family) {
            (Some(ServiceType::Inet) | None, Some(AddressFamily::Inet | AddressFamily::Inet6)) => {
                let l = TcpListener::from(fd);
                l.set_nonblocking(true).map(|()| Listener::Tcp(l))
            }
            (Some(ServiceType::Unix) | None, Some(AddressFamily::Unix)) => {
                let l = UnixListener::from(fd);
                l.set_nonblocking(true).map(|()| Listener::Unix(l))
            }
            (Some(expected), _) => return Err(ListenProblem::WrongFamily { expected }),
            (None, _) => return Err(ListenProblem::OtherFamily),
        };
        listener.map_err(|e| ListenProblem::Io(errno_of(&e)))
    }

    /// Accepts one connection (close-on-exec, as std makes every socket)
    /// as client `number`, with `timeout` on its reads and writes.
    pub(crate) fn accept(&self, number: u64, timeout: Duration) -> Result<Client, Errno> {
        let conn = match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Conn::Tcp(s)),
            Listener::Unix(l) => l.accept().map(|(s, _)| Conn::Unix(s)),
        }
        .map_err(|e| errno_of(&e))?;
        Client::new(conn, number, timeout).map_err(|e| errno_of(&e))
    }

    /// The std listener, for an async runtime to take over.
    #[cfg(feature = "tokio")]
    pub(crate) fn into_inner(self) -> Result<TcpListener, UnixListener> {
        match self {
            Listener::Tcp(l) => Ok(l),
            Listener::Unix(l) => Err(l),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

/// Whether an `accept` error means that there was nothing (left) to
/// accept: another child took the connection, the client gave up before
/// we got to it, or a signal interrupted the call. Postfix's
/// `sane_accept` turns the same errors into `EAGAIN`.
#[must_use]
pub fn is_lost_race(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::EAGAIN
            | Errno::EINTR
            | Errno::ECONNABORTED
            | Errno::ECONNREFUSED
            | Errno::ECONNRESET
            | Errno::EHOSTDOWN
            | Errno::EHOSTUNREACH
            | Errno::ENETDOWN
            | Errno::ENETUNREACH
            | Errno::ENOTCONN
            | Errno::EPROTO
            | Errno::ETIMEDOUT
    )
}

/// The errno of an I/O error from a system call (`EIO` if it has none).
pub(crate) fn errno_of(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_of_the_wrong_kind_are_refused() {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
        let got = Listener::new(tcp.into(), Some(ServiceType::Unix)).map(|_| ());
        assert_eq!(got, Err(ListenProblem::WrongFamily { expected: ServiceType::Unix }));
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        assert_eq!(Listener::new(a.into(), None).map(|_| ()), Err(ListenProblem::NotListening));
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        assert_eq!(Listener::new(udp.into(), Some(ServiceType::Inet)).map(|_| ()), Err(ListenProblem::NotStream));
        let file = std::fs::File::open("/dev/null").expect("open");
        assert_eq!(Listener::new(file.into(), None).map(|_| ()), Err(ListenProblem::Io(Errno::ENOTSOCK)));
    }

    #[test]
    fn an_empty_shared_socket_is_a_lost_race() {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
        let l = Listener::new(tcp.into(), None).expect("a listening TCP socket");
        let e = l.accept(1, Duration::ZERO).expect_err("nothing to accept");
        assert_eq!(e, Errno::EAGAIN);
        assert!(is_lost_race(e));
        assert!(!is_lost_race(Errno::EMFILE) && !is_lost_race(Errno::EINVAL));
    }
}
