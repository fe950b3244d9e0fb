//! Running a Postfix daemon as master(8) runs one: its command line, and the flow pipe at fds 3 and 4.
//!
//! master(8) starts each daemon of a master.cf line as
//! `COMMAND -n NAME -t TYPE [-v] [-s N] ARGS…` (`master_ent.c`), with the
//! status channel at fd 5, the listening sockets from fd 6 and the flow
//! pipe at fds 3 and 4 (`master_spawn.c`, `master_flow.c`). No Postfix
//! daemon runs without that pipe: each marks both ends close-on-exec at
//! startup and dies if either is closed. The caller's environment
//! (`MAIL_CONFIG`, say) and working directory reach the daemon as they
//! are, and [`PostfixDaemon::configure`] sets anything else on each
//! command (standard I/O, a process group).
//!
//! The daemons speak Postfix's wire: a service that runs one uses
//! [`AnyTransport::postfix()`](master_proto_transports::AnyTransport::postfix)
//! (the duplex pipe), or building it fails.
//!
//! # Errors
//!
//! [`FlowPipe::new`] fails as `pipe2(2)` does.
//!
//! # See also
//!
//! Postfix `src/master/master_ent.c`, `master_spawn.c`, `master_flow.c`,
//! `src/global/mail_flow.c`.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::process::Command;
use std::sync::Arc;

use master_proto::env::{MASTER_FLOW_READ, MASTER_FLOW_WRITE};
use nix::fcntl::OFlag;

/// The `-t` of a Postfix daemon: the kind of its master.cf line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServiceType {
    /// `inet`: TCP sockets.
    Inet,
    /// `unix`: `SOCK_STREAM` Unix-domain sockets.
    Unix,
    /// `unix-dgram`: `SOCK_DGRAM` Unix-domain sockets.
    UnixDgram,
    /// `fifo`: named pipes.
    Fifo,
    /// `pass`: descriptor passing.
    Pass,
}

impl ServiceType {
    /// The name master.cf uses, and `-t` passes.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ServiceType::Inet => "inet",
            ServiceType::Unix => "unix",
            ServiceType::UnixDgram => "unix-dgram",
            ServiceType::Fifo => "fifo",
            ServiceType::Pass => "pass",
        }
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Postfix's flow-control pipe, shared by the daemons of one or more
/// services (master(8) has one for all of them). Both ends are
/// non-blocking and close-on-exec, as `master_flow_init()` makes them;
/// each child gets them at fds 3 and 4.
#[derive(Clone, Debug)]
pub struct FlowPipe {
    read: Arc<OwnedFd>,
    write: Arc<OwnedFd>,
}

impl FlowPipe {
    /// A new flow pipe.
    ///
    /// # Errors
    ///
    /// As `pipe2(2)`.
    pub fn new() -> io::Result<FlowPipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        Ok(FlowPipe { read: Arc::new(read), write: Arc::new(write) })
    }

    /// Duplicates of both ends, at the numbers a daemon finds them.
    pub(crate) fn fixed_fds(&self) -> io::Result<[(RawFd, OwnedFd); 2]> {
        Ok([
            (MASTER_FLOW_READ, self.read.as_fd().try_clone_to_owned()?),
            (MASTER_FLOW_WRITE, self.write.as_fd().try_clone_to_owned()?),
        ])
    }
}

/// A Postfix daemon's command, as master(8) builds it from a master.cf
/// line.
///
/// # Examples
///
/// The master.cf line `echo.sock unix - n n - - spawn user=nobody
/// argv=/bin/cat`:
///
/// ```no_run
/// use master_proto_supervisor::{PostfixDaemon, Service, ServiceType};
/// use master_proto_transports::AnyTransport;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let spawn = PostfixDaemon::new("/usr/lib/postfix/sbin/spawn", "echo.sock", ServiceType::Unix)
///     .args(["-V", "user=nobody", "argv=/bin/cat"]);
/// let service = Service::builder("echo.sock")
///     .transport(AnyTransport::postfix())
///     .listen_unix("/var/spool/postfix/private/echo.sock")
///     .postfix_daemon(spawn)
///     .build()?;
/// # let _ = service; Ok(()) }
/// ```
pub struct PostfixDaemon {
    program: OsString,
    name: String,
    kind: ServiceType,
    verbose: bool,
    args: Vec<OsString>,
    flow: Option<FlowPipe>,
    configure: Option<Configure>,
}

/// What [`PostfixDaemon::configure`] keeps.
type Configure = Box<dyn FnMut(&mut Command) + Send>;

impl fmt::Debug for PostfixDaemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostfixDaemon")
            .field("program", &self.program)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

impl PostfixDaemon {
    /// The daemon `program` for the service `name` (`-n`) of type `kind`
    /// (`-t`).
    #[must_use]
    pub fn new(program: impl Into<OsString>, name: impl Into<String>, kind: ServiceType) -> PostfixDaemon {
        PostfixDaemon {
            program: program.into(),
            name: name.into(),
            kind,
            verbose: false,
            args: Vec::new(),
            flow: None,
            configure: None,
        }
    }

    /// Adds an argument after the standard ones (master.cf's command
    /// arguments).
    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments after the standard ones.
    #[must_use]
    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Passes `-v` (master(8) does when it runs verbose).
    #[must_use]
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Shares `flow` with other daemons; by default the service makes a
    /// flow pipe of its own.
    #[must_use]
    pub fn flow_pipe(mut self, flow: FlowPipe) -> Self {
        self.flow = Some(flow);
        self
    }

    /// Calls `configure` on each command before it is spawned (standard
    /// I/O, a process group, a working directory).
    #[must_use]
    pub fn configure(mut self, configure: impl FnMut(&mut Command) + Send + 'static) -> Self {
        self.configure = Some(Box::new(configure));
        self
    }

    /// The service name (`-n`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The command line for a child with `listen_count` listening sockets:
    /// `PROGRAM -n NAME -t TYPE [-v] [-s N] ARGS…` (`-s` only for more
    /// than one socket, as master(8)).
    #[must_use]
    pub fn command(&mut self, listen_count: usize) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.arg("-n").arg(&self.name).arg("-t").arg(self.kind.as_str());
        if self.verbose {
            cmd.arg("-v");
        }
        if listen_count > 1 {
            cmd.arg("-s").arg(listen_count.to_string());
        }
        cmd.args(&self.args);
        if let Some(configure) = self.configure.as_mut() {
            configure(&mut cmd);
        }
        cmd
    }

    /// The flow pipe given, or a new one.
    pub(crate) fn flow_pipe_or_new(&mut self) -> io::Result<FlowPipe> {
        match &self.flow {
            Some(flow) => Ok(flow.clone()),
            None => {
                let flow = FlowPipe::new()?;
                self.flow = Some(flow.clone());
                Ok(flow)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(cmd: &Command) -> Vec<String> {
        std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn the_command_line_is_master_8s() {
        let mut d = PostfixDaemon::new("/usr/lib/postfix/sbin/spawn", "echo.sock", ServiceType::Unix)
            .args(["-V", "user=nobody"])
            .arg("argv=/bin/cat");
        assert_eq!(
            argv(&d.command(1)),
            ["/usr/lib/postfix/sbin/spawn", "-n", "echo.sock", "-t", "unix", "-V", "user=nobody", "argv=/bin/cat"]
        );
        let mut d = PostfixDaemon::new("smtpd", "127.0.0.1:25", ServiceType::Inet).verbose(true).configure(|cmd| {
            cmd.env("X", "1");
        });
        let cmd = d.command(3);
        assert_eq!(argv(&cmd), ["smtpd", "-n", "127.0.0.1:25", "-t", "inet", "-v", "-s", "3"]);
        assert!(cmd.get_envs().any(|(k, v)| k == "X" && v == Some("1".as_ref())));
    }

    #[test]
    fn the_flow_pipe_is_non_blocking_and_close_on_exec() {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        let flow = FlowPipe::new().unwrap();
        for (at, fd) in flow.fixed_fds().unwrap() {
            assert!([MASTER_FLOW_READ, MASTER_FLOW_WRITE].contains(&at));
            let fl = OFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFL).unwrap());
            assert!(fl.contains(OFlag::O_NONBLOCK));
            let fd_flags = FdFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFD).unwrap());
            assert!(fd_flags.contains(FdFlag::FD_CLOEXEC));
        }
    }
}
