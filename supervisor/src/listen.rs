//! A service's listening sockets: made by the caller, or bound here from an address.
//!
//! Every child of a service gets every one of its listening sockets, from
//! fd 6 on, in the order they were given; the kernel picks which child
//! accepts a connection. The master only polls them for readability, and
//! only while the service wants another child: it never accepts, and never
//! changes their flags (a flag set on a socket here would be set in every
//! child too, since they share the open file).
//!
//! # Errors
//!
//! Binding fails as `bind(2)` does ([`crate::BuildError::Bind`]); a
//! descriptor that is not a listening socket is refused
//! ([`crate::BuildError::NotListening`]).
//!
//! # See also
//!
//! Postfix `src/master/master_listen.c`.

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use nix::sys::socket::{SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt};

use crate::BuildError;

/// Where a listening socket listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ListenAddr {
    /// A TCP socket bound to this address (the port chosen by the kernel
    /// when 0 was asked for).
    Tcp(SocketAddr),
    /// A Unix-domain socket at this path.
    Unix(PathBuf),
    /// A socket of another family, or an unnamed one.
    Other,
}

impl fmt::Display for ListenAddr {
    /// `tcp ADDR`, `unix PATH`, or `other`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "tcp {addr}"),
            ListenAddr::Unix(path) => write!(f, "unix {}", path.display()),
            ListenAddr::Other => f.write_str("other"),
        }
    }
}

/// A listening socket to be, as the builder holds it until `build`.
#[derive(Debug)]
pub(crate) enum ListenSpec {
    /// The caller's socket.
    Fd(OwnedFd),
    /// Bind TCP here.
    Tcp(SocketAddr),
    /// Bind a Unix-domain socket here; removed again when the service goes.
    Unix(PathBuf),
}

/// One listening socket of a service.
#[derive(Debug)]
pub(crate) struct Listener {
    fd: OwnedFd,
    addr: ListenAddr,
    /// The socket file this crate created, removed on drop.
    remove: Option<PathBuf>,
}

impl Listener {
    /// Binds or checks the socket `spec` describes.
    pub(crate) fn open(spec: ListenSpec) -> Result<Listener, BuildError> {
        match spec {
            ListenSpec::Tcp(addr) => {
                let l =
                    TcpListener::bind(addr).map_err(|source| BuildError::Bind { addr: addr.to_string(), source })?;
                let addr = l.local_addr().map_err(|source| BuildError::Bind { addr: addr.to_string(), source })?;
                Ok(Listener { fd: l.into(), addr: ListenAddr::Tcp(addr), remove: None })
            }
            ListenSpec::Unix(path) => {
                let l = UnixListener::bind(&path)
                    .map_err(|source| BuildError::Bind { addr: path.display().to_string(), source })?;
                Ok(Listener { fd: l.into(), addr: ListenAddr::Unix(path.clone()), remove: Some(path) })
            }
            ListenSpec::Fd(fd) => {
                // SO_ACCEPTCONN: a socket on which listen(2) was called.
                match getsockopt(&fd, sockopt::AcceptConn) {
                    Ok(true) => {}
                    Ok(false) => return Err(BuildError::NotListening(nix::errno::Errno::EINVAL)),
                    Err(errno) => return Err(BuildError::NotListening(errno)),
                }
                let addr = address_of(fd.as_fd());
                Ok(Listener { fd, addr, remove: None })
            }
        }
    }

    pub(crate) fn addr(&self) -> &ListenAddr {
        &self.addr
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.remove {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What `getsockname(2)` says about a socket of the caller's.
fn address_of(fd: BorrowedFd<'_>) -> ListenAddr {
    use std::os::fd::AsRawFd;
    let Ok(storage) = getsockname::<SockaddrStorage>(fd.as_raw_fd()) else { return ListenAddr::Other };
    if let Some(v4) = storage.as_sockaddr_in() {
        return ListenAddr::Tcp(SocketAddr::V4((*v4).into()));
    }
    if let Some(v6) = storage.as_sockaddr_in6() {
        return ListenAddr::Tcp(SocketAddr::V6((*v6).into()));
    }
    if storage.family() == Some(nix::sys::socket::AddressFamily::Unix)
        && let Some(path) = storage.as_unix_addr().and_then(|u| u.path())
    {
        return ListenAddr::Unix(path.to_owned());
    }
    ListenAddr::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_that_does_not_listen_is_refused_and_a_listener_is_named() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(matches!(Listener::open(ListenSpec::Fd(a.into())), Err(BuildError::NotListening(_))));
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let l = Listener::open(ListenSpec::Fd(tcp.into())).unwrap();
        assert_eq!(l.addr(), &ListenAddr::Tcp(addr));
        assert_eq!(l.addr().to_string(), format!("tcp {addr}"));
    }
}
