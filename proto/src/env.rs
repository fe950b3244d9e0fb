//! The child's standard environment: fd 5, listen fds from 6, `GENERATION`.
//!
//! A Postfix master gives every child of a service the same layout:
//!
//! | what | where |
//! |---|---|
//! | status channel | fd 5 ([`MASTER_STATUS_FD`]) |
//! | listening sockets | fd 6, 7, … ([`MASTER_LISTEN_FD`] + n) |
//! | spawn generation | environment `GENERATION`, in octal |
//!
//! This module installs that layout into a [`std::process::Command`] on the
//! master's side ([`ChildFds::install`]) and reads it back in the child after
//! `exec` ([`ChildEnv::from_process`], whose parsing of the variables is
//! [`Layout::parse`], a pure function). Beyond Postfix's layout it passes:
//!
//! - `MASTER_LISTEN_FDS=<n>`: how many listening sockets follow fd 6 (a
//!   Postfix daemon learns this from its `-s n` argument instead);
//! - `MASTER_STATUS_TRANSPORT=<name>`: the transport's short name;
//! - `MASTER_STATUS_AUX=<name>:<fd>,…`: the transport's auxiliary
//!   descriptors (a lifeline, a doorbell), placed right after the listening
//!   sockets;
//! - any descriptor at a fixed number the caller asks for (Postfix's flow
//!   pipe at fds 3 and 4, say).
//!
//! Installing checks for descriptor collisions as `master_spawn.c` does;
//! where Postfix dies ("file descriptor collision"), this moves the
//! colliding descriptor out of the way first, since a master with few open
//! files easily gets fd 5 or 6 for a channel end. In the child, only the
//! installed descriptors survive `exec`: everything else above fd 2 is
//! marked close-on-exec in the child, whoever opened it, so a child inherits
//! exactly its standard environment and no end of the master's.
//!
//! # Errors
//!
//! [`InstallError`] on the master's side; [`EnvError`] in the child, naming
//! what is missing or malformed.
//!
//! # See also
//!
//! Postfix `src/master/master_spawn.c`, `src/master/master_proto.h`,
//! `src/global/mail_server.h`.

#![allow(unsafe_code)] // Safety: `pre_exec` and taking ownership of inherited descriptors.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};

/// `MASTER_STATUS_FD`: the child's end of the status channel.
pub const MASTER_STATUS_FD: RawFd = 5;
/// `MASTER_LISTEN_FD`: the first listening socket; more follow in order.
pub const MASTER_LISTEN_FD: RawFd = 6;
/// `MASTER_FLOW_READ`: Postfix's flow-control pipe, read end (not part of
/// the status protocol; see [`ChildFds::fixed`]).
pub const MASTER_FLOW_READ: RawFd = 3;
/// `MASTER_FLOW_WRITE`: Postfix's flow-control pipe, write end.
pub const MASTER_FLOW_WRITE: RawFd = 4;

/// Environment variable holding the spawn generation, in octal.
pub const GENERATION_VAR: &str = "GENERATION";
/// Environment variable holding the number of listening sockets.
pub const LISTEN_FDS_VAR: &str = "MASTER_LISTEN_FDS";
/// Environment variable naming the status transport.
pub const TRANSPORT_VAR: &str = "MASTER_STATUS_TRANSPORT";
/// Environment variable listing the transport's auxiliary descriptors.
pub const AUX_VAR: &str = "MASTER_STATUS_AUX";

/// The child's end of a status channel, as a transport hands it out for one
/// spawn: what goes to fd 5, plus any named auxiliary descriptors.
#[derive(Debug)]
pub struct ChildEnd {
    /// The transport's short name, passed to the child in
    /// `MASTER_STATUS_TRANSPORT`.
    pub transport: &'static str,
    /// What the child gets at fd 5.
    pub status: OwnedFd,
    /// Auxiliary descriptors by name, placed after the listening sockets.
    pub aux: Vec<(&'static str, OwnedFd)>,
}

/// The descriptors and variables of one child's standard environment, ready
/// to install into a [`Command`].
///
/// # Examples
///
/// ```no_run
/// # fn demo(end: master_proto::env::ChildEnd, listener: std::net::TcpListener) -> Result<(), Box<dyn std::error::Error>> {
/// use master_proto::env::ChildFds;
/// let mut cmd = std::process::Command::new("/usr/libexec/my-service");
/// ChildFds::new(end, 0o17).listen(listener.try_clone()?.into()).install(&mut cmd)?;
/// let child = cmd.spawn()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ChildFds {
    generation: u32,
    end: ChildEnd,
    listen: Vec<OwnedFd>,
    fixed: Vec<(RawFd, OwnedFd)>,
}

impl ChildFds {
    /// Starts a child's environment from the transport's child end and the
    /// generation the master assigned to this spawn.
    #[must_use]
    pub fn new(end: ChildEnd, generation: u32) -> ChildFds {
        ChildFds { generation, end, listen: Vec::new(), fixed: Vec::new() }
    }

    /// Adds the next listening socket (fd 6, then 7, …).
    #[must_use]
    pub fn listen(mut self, fd: OwnedFd) -> ChildFds {
        self.listen.push(fd);
        self
    }

    /// Places `fd` at descriptor number `at` in the child, for descriptors
    /// outside the status protocol such as Postfix's flow pipe (fds 3, 4).
    #[must_use]
    pub fn fixed(mut self, at: RawFd, fd: OwnedFd) -> ChildFds {
        self.fixed.push((at, fd));
        self
    }

    /// Installs the environment into `cmd`: sets the variables and arranges
    /// for the descriptors to be moved to their numbers, and every other
    /// descriptor above 2 to be marked close-on-exec, between `fork` and
    /// `exec`. The
    /// descriptors now belong to `cmd` and are closed in the master when
    /// `cmd` is dropped (after spawning it).
    ///
    /// # Errors
    ///
    /// [`InstallError::Dup`] when a descriptor that sits at a number
    /// another must move to (Postfix's "file descriptor collision") cannot
    /// be moved out of the way, [`InstallError::Overlap`] when two
    /// descriptors are asked for at one number, and
    /// [`InstallError::TooMany`] when the layout would pass `RawFd::MAX`.
    pub fn install(self, cmd: &mut Command) -> Result<(), InstallError> {
        let ChildFds { generation, end, listen, fixed } = self;
        let listen_count = listen.len();
        let mut moves: Vec<(OwnedFd, RawFd)> = Vec::with_capacity(2 + listen.len() + end.aux.len() + fixed.len());
        let mut aux_var = String::new();
        moves.push((end.status, MASTER_STATUS_FD));
        let mut next = MASTER_LISTEN_FD;
        for fd in listen {
            moves.push((fd, next));
            next = next.checked_add(1).ok_or(InstallError::TooMany)?;
        }
        for (name, fd) in end.aux {
            if !aux_var.is_empty() {
                aux_var.push(',');
            }
            aux_var.push_str(&format!("{name}:{next}"));
            moves.push((fd, next));
            next = next.checked_add(1).ok_or(InstallError::TooMany)?;
        }
        moves.extend(fixed.into_iter().map(|(at, fd)| (fd, at)));

        let mut targets = HashSet::new();
        for (_, at) in &moves {
            if !targets.insert(*at) {
                return Err(InstallError::Overlap { target: *at });
            }
        }
        // A source sitting at a target number would be clobbered by the
        // dup2 to that number before its own move: give it a new number
        // above every target first.
        let above = targets.iter().copied().max().unwrap_or(MASTER_STATUS_FD).saturating_add(1);
        for (fd, _) in &mut moves {
            if targets.contains(&fd.as_raw_fd()) {
                let moved = fcntl(fd.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(above)).map_err(InstallError::Dup)?;
                // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that
                // nothing else owns.
                *fd = unsafe { OwnedFd::from_raw_fd(moved) };
            }
        }

        // The descriptors to keep, ascending, for the close pass.
        let mut keep: Vec<RawFd> = targets.into_iter().collect();
        keep.sort_unstable();

        cmd.env(GENERATION_VAR, format!("{generation:o}"));
        cmd.env(LISTEN_FDS_VAR, listen_count.to_string());
        cmd.env(TRANSPORT_VAR, end.transport);
        if aux_var.is_empty() {
            cmd.env_remove(AUX_VAR);
        } else {
            cmd.env(AUX_VAR, aux_var);
        }

        // SAFETY: the closure runs in the child between fork and exec, where
        // only async-signal-safe calls are allowed. It calls only dup2(2) and
        // close_range(2) (raw syscalls), reads the vectors captured above
        // (no allocation, no locks), and returns an io::Error built from an
        // errno, which allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                for (fd, at) in &moves {
                    // No source sits at any target (checked above), so no
                    // move clobbers a descriptor still to be moved. dup2
                    // clears close-on-exec on the copy; the original stays
                    // close-on-exec and vanishes at exec.
                    if nix::libc::dup2(fd.as_raw_fd(), *at) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                cloexec_all_but(&keep);
                Ok(())
            });
        }
        Ok(())
    }
}

/// Marks every descriptor above 2 that is not in `keep` (sorted)
/// close-on-exec, so that it vanishes at `exec` whoever opened it. Marking
/// rather than closing keeps the standard library's own exec-error pipe
/// working. Runs between fork and exec: async-signal-safe, no allocation. A
/// kernel without `CLOSE_RANGE_CLOEXEC` (before Linux 5.11) leaves them be:
/// every descriptor this workspace creates is close-on-exec anyway.
fn cloexec_all_but(keep: &[RawFd]) {
    let mut from: u32 = 3;
    for &k in keep.iter().chain(std::iter::once(&RawFd::MAX)) {
        let Ok(k) = u32::try_from(k) else { continue };
        if k > from {
            // SAFETY: close_range takes plain integers and touches no memory;
            // with CLOSE_RANGE_CLOEXEC it only sets a flag, and the range
            // excludes every descriptor in `keep`.
            unsafe {
                nix::libc::syscall(nix::libc::SYS_close_range, from, k - 1, nix::libc::CLOSE_RANGE_CLOEXEC);
            }
        }
        from = from.max(k.saturating_add(1));
    }
}

/// Why a child's environment could not be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// A descriptor sat where another must go, and could not be moved out
    /// of the way.
    #[error("cannot move a colliding descriptor out of the way: {0}")]
    Dup(#[source] Errno),
    /// Two descriptors were asked for at the same number.
    #[error("two descriptors asked for at fd {target}")]
    Overlap {
        /// The number asked for twice.
        target: RawFd,
    },
    /// The layout ran past the largest descriptor number.
    #[error("too many descriptors for the standard environment")]
    TooMany,
}

/// Set once the standard descriptors have been claimed, so that no two
/// owners of fd 5 can exist in one process.
static CLAIMED: AtomicBool = AtomicBool::new(false);

/// The standard environment as a child finds it after `exec`.
#[derive(Debug)]
pub struct ChildEnv {
    /// This process's pid, as sinks report it.
    pub pid: i32,
    /// The spawn generation from `GENERATION`.
    pub generation: u32,
    status: Option<OwnedFd>,
    listen: Vec<OwnedFd>,
    /// The transport named in `MASTER_STATUS_TRANSPORT`, if any (a real
    /// Postfix master sets none: its channel is the duplex pipe).
    pub transport: Option<String>,
    aux: Vec<(String, Option<OwnedFd>)>,
}

impl ChildEnv {
    /// Reads the standard environment of this process: takes ownership of
    /// fd 5, of `MASTER_LISTEN_FDS` listening sockets from fd 6 (one, as
    /// Postfix's default `-s 1`, if the variable is absent), and of the
    /// auxiliary descriptors in `MASTER_STATUS_AUX`.
    ///
    /// # Errors
    ///
    /// [`EnvError`] naming what is missing or malformed, or
    /// [`EnvError::AlreadyClaimed`] if called twice in one process.
    pub fn from_process() -> Result<ChildEnv, EnvError> {
        let listen = parse_listen_count(std::env::var(LISTEN_FDS_VAR).ok().as_deref())?;
        ChildEnv::from_process_with_listen(listen)
    }

    /// As [`from_process`](Self::from_process) with the number of
    /// listening sockets given (a Postfix daemon's `-s` argument).
    ///
    /// # Errors
    ///
    /// As [`from_process`](Self::from_process).
    pub fn from_process_with_listen(listen_count: usize) -> Result<ChildEnv, EnvError> {
        if CLAIMED.load(Ordering::Acquire) {
            return Err(EnvError::AlreadyClaimed);
        }
        let layout = Layout::parse(
            std::env::var(GENERATION_VAR).ok().as_deref(),
            listen_count,
            std::env::var(AUX_VAR).ok().as_deref(),
        )?;
        let transport = std::env::var(TRANSPORT_VAR).ok();
        for fd in layout.fds() {
            if !is_open(fd) {
                return Err(EnvError::MissingFd(fd));
            }
        }
        if CLAIMED.swap(true, Ordering::AcqRel) {
            return Err(EnvError::AlreadyClaimed);
        }
        // SAFETY: each number was checked open above and is distinct; the
        // master placed it here for this process, and the CLAIMED flag makes
        // this the only place in the process that takes ownership of it, so
        // no other OwnedFd owns or will close these descriptors.
        let take = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
        let status = take(MASTER_STATUS_FD);
        let listen: Vec<OwnedFd> = layout.listen_fds().map(take).collect();
        let Layout { generation, aux, .. } = layout;
        let aux: Vec<(String, Option<OwnedFd>)> = aux.into_iter().map(|(name, fd)| (name, Some(take(fd)))).collect();
        // The master cleared close-on-exec on these; set it again so that
        // whatever this child runs does not inherit the master's channel.
        let owned = std::iter::once(&status).chain(&listen).chain(aux.iter().filter_map(|(_, fd)| fd.as_ref()));
        for fd in owned {
            fcntl(fd, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).map_err(EnvError::Io)?;
        }
        // A pid_t is an i32 on every platform this crate builds for.
        let pid = i32::try_from(std::process::id()).map_err(|_| EnvError::Io(Errno::EOVERFLOW))?;
        Ok(ChildEnv { pid, generation, status: Some(status), listen, transport, aux })
    }

    /// Takes the listening sockets, fd 6, 7, … in order (empty once taken).
    pub fn take_listen(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.listen)
    }

    /// Takes the status channel at fd 5 (a transport's sink does).
    ///
    /// # Errors
    ///
    /// [`EnvError::MissingFd`] if it was taken already.
    pub fn take_status(&mut self) -> Result<OwnedFd, EnvError> {
        self.status.take().ok_or(EnvError::MissingFd(MASTER_STATUS_FD))
    }

    /// The status channel at fd 5, while it has not been taken.
    #[must_use]
    pub fn status_fd(&self) -> Option<BorrowedFd<'_>> {
        self.status.as_ref().map(AsFd::as_fd)
    }

    /// Takes the auxiliary descriptor the transport installed under `name`.
    ///
    /// # Errors
    ///
    /// [`EnvError::MissingAux`] if the master installed none by that name,
    /// or it was taken already.
    pub fn take_aux(&mut self, name: &str) -> Result<OwnedFd, EnvError> {
        self.aux
            .iter_mut()
            .find(|(n, _)| n == name)
            .and_then(|(_, fd)| fd.take())
            .ok_or_else(|| EnvError::MissingAux(name.to_owned()))
    }
}

/// Whether descriptor number `fd` is open in this process.
pub(crate) fn is_open(fd: RawFd) -> bool {
    // A BorrowedFd may only name an open descriptor, so ask with the raw
    // number.
    // SAFETY: fcntl(F_GETFD) takes no pointer and changes nothing; on a
    // number that is not open it fails with EBADF.
    unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) >= 0 }
}

/// Parses `GENERATION` as Postfix writes it (`%o`).
///
/// # Errors
///
/// [`EnvError::NoGeneration`] when absent, [`EnvError::BadGeneration`] when
/// not an octal number that fits 32 bits.
pub fn parse_generation(value: Option<&str>) -> Result<u32, EnvError> {
    let v = value.ok_or(EnvError::NoGeneration)?;
    if v.is_empty() || !v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(EnvError::BadGeneration(v.to_owned()));
    }
    u32::from_str_radix(v, 8).map_err(|_| EnvError::BadGeneration(v.to_owned()))
}

impl EnvError {
    /// [`EnvError::Io`] with the errno of `e`, which a failed system call
    /// always carries; `EIO` for an error that carries none.
    #[must_use]
    pub fn from_io(e: &std::io::Error) -> EnvError {
        EnvError::Io(e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))
    }
}

/// Parses `MASTER_LISTEN_FDS`: the number of listening sockets from fd 6,
/// one (Postfix's default `-s 1`) when absent.
///
/// # Errors
///
/// [`EnvError::BadListenCount`] when not a decimal count.
pub fn parse_listen_count(value: Option<&str>) -> Result<usize, EnvError> {
    match value {
        Some(v) => v.parse().map_err(|_| EnvError::BadListenCount(v.to_owned())),
        None => Ok(1),
    }
}

/// The standard environment's numbers, as its variables give them, before
/// any descriptor is looked at: what [`ChildEnv::from_process`] parses, as
/// a pure function of the values (a variable that is not valid UTF-8 counts
/// as absent there).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Layout {
    /// The spawn generation, from `GENERATION`.
    pub generation: u32,
    /// How many listening sockets follow fd 6.
    pub listen_count: usize,
    /// The auxiliary descriptors, by name, in the order of
    /// `MASTER_STATUS_AUX`.
    pub aux: Vec<(String, RawFd)>,
}

impl Layout {
    /// Parses the values of `GENERATION` and `MASTER_STATUS_AUX` (`None`
    /// when unset) for a child with `listen_count` listening sockets, and
    /// checks that the descriptors it names are distinct and above 2.
    ///
    /// # Errors
    ///
    /// As [`parse_generation`]; [`EnvError::BadAux`] when an item of
    /// `MASTER_STATUS_AUX` is not `name:fd` with `fd` above 2, or a
    /// descriptor is named twice (fd 5 and the listening sockets included);
    /// [`EnvError::BadListenCount`] when the listening sockets would run
    /// past the largest descriptor number.
    pub fn parse(generation: Option<&str>, listen_count: usize, aux: Option<&str>) -> Result<Layout, EnvError> {
        let generation = parse_generation(generation)?;
        let aux_spec = aux.unwrap_or_default();
        let bad = || EnvError::BadAux(aux_spec.to_owned());
        let mut aux_fds = Vec::new();
        for item in aux_spec.split(',').filter(|s| !s.is_empty()) {
            let (name, fd) = item.split_once(':').ok_or_else(bad)?;
            let fd: RawFd = fd.parse().map_err(|_| bad())?;
            if fd <= 2 {
                return Err(bad());
            }
            aux_fds.push((name.to_owned(), fd));
        }
        let layout = Layout { generation, listen_count, aux: aux_fds };
        layout.listen_end()?;
        // fd 5 and the listening range are distinct by construction, so a
        // number named twice involves an aux descriptor. The range is not
        // collected: its length is a number from the environment (the
        // `env` fuzz target found a count of 444011144 costing gigabytes).
        let listen = layout.listen_fds();
        let mut seen = HashSet::from([MASTER_STATUS_FD]);
        if layout.aux.iter().any(|(_, fd)| listen.contains(fd) || !seen.insert(*fd)) {
            return Err(bad());
        }
        Ok(layout)
    }

    /// Every descriptor number of the layout: fd 5, the listening sockets
    /// from fd 6, then the auxiliary descriptors.
    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        std::iter::once(MASTER_STATUS_FD).chain(self.listen_fds()).chain(self.aux.iter().map(|(_, fd)| *fd))
    }

    /// The listening sockets' numbers, fd 6 on.
    pub fn listen_fds(&self) -> std::ops::Range<RawFd> {
        // `parse` checked that the end fits.
        MASTER_LISTEN_FD..self.listen_end().unwrap_or(MASTER_LISTEN_FD)
    }

    /// One past the last listening socket's number.
    fn listen_end(&self) -> Result<RawFd, EnvError> {
        let too_many = || EnvError::BadListenCount(self.listen_count.to_string());
        MASTER_LISTEN_FD.checked_add(RawFd::try_from(self.listen_count).map_err(|_| too_many())?).ok_or_else(too_many)
    }
}

/// What is wrong with a child's standard environment.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// `GENERATION` is not set: not started by a master.
    #[error("GENERATION is not set: this process was not started by a master")]
    NoGeneration,
    /// `GENERATION` is not an octal number.
    #[error("GENERATION={0:?} is not an octal number")]
    BadGeneration(String),
    /// A standard descriptor is not open.
    #[error("fd {0} is not open: the standard environment is incomplete")]
    MissingFd(RawFd),
    /// `MASTER_LISTEN_FDS` is not a count.
    #[error("MASTER_LISTEN_FDS={0:?} is not a descriptor count")]
    BadListenCount(String),
    /// `MASTER_STATUS_AUX` is malformed.
    #[error("MASTER_STATUS_AUX={0:?} is malformed (want name:fd,…)")]
    BadAux(String),
    /// The transport needs an auxiliary descriptor the master did not pass.
    #[error("the status transport needs descriptor {0:?}, which the master did not pass")]
    MissingAux(String),
    /// The environment names another transport than the one asked for.
    #[error("the master uses status transport {found:?}, not {expected:?}")]
    WrongTransport {
        /// The transport the child asked for.
        expected: &'static str,
        /// The transport the environment names.
        found: String,
    },
    /// The environment names a transport this program was built without.
    #[error("the master uses status transport {0:?}, which is not built into this program")]
    UnknownTransport(String),
    /// The standard descriptors were claimed already in this process.
    #[error("the standard environment was already claimed in this process")]
    AlreadyClaimed,
    /// A descriptor the master passed is not what the transport expects
    /// (a shared-memory region too small, say).
    #[error("the status channel is unusable: {0}")]
    Unusable(&'static str),
    /// Setting up the sink failed.
    #[error("setting up the status sink failed: {0}")]
    Io(#[source] Errno),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_octal() {
        assert_eq!(parse_generation(Some("17")), Ok(0o17));
        assert_eq!(parse_generation(Some("0")), Ok(0));
        assert_eq!(parse_generation(Some("37777777777")), Ok(u32::MAX));
        assert_eq!(parse_generation(None), Err(EnvError::NoGeneration));
        for bad in ["", "8", "19", "0x1", "-1", " 1", "1 ", "77777777777"] {
            assert_eq!(parse_generation(Some(bad)), Err(EnvError::BadGeneration(bad.into())), "{bad:?}");
        }
    }

    #[test]
    fn listen_count_is_decimal_and_one_by_default() {
        assert_eq!(parse_listen_count(None), Ok(1));
        assert_eq!(parse_listen_count(Some("0")), Ok(0));
        assert_eq!(parse_listen_count(Some("3")), Ok(3));
        assert_eq!(parse_listen_count(Some("-1")), Err(EnvError::BadListenCount("-1".into())));
    }

    #[test]
    fn layout_names_every_descriptor_once() {
        let layout = Layout::parse(Some("7"), 2, Some("lifeline:8,doorbell:9")).unwrap();
        assert_eq!(layout.generation, 7);
        assert_eq!(layout.aux, vec![("lifeline".to_owned(), 8), ("doorbell".to_owned(), 9)]);
        assert_eq!(layout.fds().collect::<Vec<_>>(), vec![5, 6, 7, 8, 9]);
        assert_eq!(Layout::parse(Some("7"), 0, None).unwrap().fds().collect::<Vec<_>>(), vec![5]);
        assert_eq!(Layout::parse(None, 1, None), Err(EnvError::NoGeneration));
        for bad in ["x", "x:", "x:2", "x:6", "x:5", "x:9,y:9", ":", "x:+"] {
            assert_eq!(Layout::parse(Some("1"), 1, Some(bad)), Err(EnvError::BadAux(bad.into())), "{bad:?}");
        }
        // The listening sockets may not run past the largest number, and a
        // long range costs nothing to parse.
        let too_many = usize::try_from(RawFd::MAX).unwrap();
        assert_eq!(Layout::parse(Some("1"), too_many, None), Err(EnvError::BadListenCount(too_many.to_string())));
        let most = too_many - 6;
        let layout = Layout::parse(Some("1"), most, Some("x:3,y:2147483647")).unwrap();
        assert_eq!(layout.listen_fds(), 6..RawFd::MAX);
        assert_eq!(Layout::parse(Some("1"), most, Some("x:2147483640")), Err(EnvError::BadAux("x:2147483640".into())));
    }
}
