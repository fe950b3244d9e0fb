//! `postfix_echo`: a single-server line echo service that runs under a real Postfix master(8).
//!
//! # Synopsis
//!
//! ```text
//! postfix_echo [-cdDlrSuvVz] [-i max_idle] [-m max_use] [-n name]
//!              [-o name=value] [-s count] [-t type]
//! ```
//!
//! # Description
//!
//! A Postfix daemon in the shape of `single_server(3)`: a child process of
//! master(8) that serves one client at a time. It echoes every line a client
//! sends back to it until the client closes its end, then waits for the next
//! client. It speaks the master's child-status protocol through this
//! project's Postfix-compatible transport ([`master_proto_pipe::Duplex`]):
//!
//! - it reads its standard environment with
//!   [`master_proto::ChildEnv::from_process_with_listen`]: the status channel
//!   at fd 5, `-s` listening sockets from fd 6, and `GENERATION` in octal
//!   (a real master sets no `MASTER_STATUS_TRANSPORT`, which the duplex
//!   transport accepts);
//! - it tells the master `TAKEN` before serving a client and `AVAIL` after;
//! - it waits in `poll(2)` on its listening sockets and on the status
//!   channel, which becomes readable (at EOF) when the master goes away.
//!
//! The listening sockets are shared with the service's other children, so
//! another child may take a connection between `poll` and `accept`: the
//! sockets are non-blocking and a lost race (`EAGAIN`) just means polling
//! again, as in Postfix.
//!
//! The process exits, with status 0, when
//!
//! - the master closes the status channel (after `postfix reload`, or when
//!   it dies), noticed while idle as EOF on fd 5, or while serving as a
//!   failed `AVAIL` notification; a client already accepted is served to
//!   the end first, since dropping it "would be rude";
//! - it has served `max_use` clients;
//! - no client arrived for `max_idle` seconds.
//!
//! # Adding it to master.cf
//!
//! Build it with `cargo build --release --example postfix_echo`, copy
//! `target/release/examples/postfix_echo` into Postfix's `daemon_directory`
//! (`postconf -h daemon_directory`), add a line to `master.cf` and run
//! `postfix reload`. A local service on a UNIX-domain socket in the
//! `private/` or `public/` directory:
//!
//! ```text
//! # service type  private unpriv  chroot  wakeup  maxproc command + args
//! echo      unix  -       n       n       -       -       postfix_echo
//! ```
//!
//! or a TCP service (`telnet localhost 7777`), here with a shorter idle
//! time:
//!
//! ```text
//! 127.0.0.1:7777 inet n   n       n       -       4       postfix_echo
//!     -o max_idle=30s
//! ```
//!
//! The `unpriv` column says `n` because this example does not drop
//! privileges itself (see *Bugs*).
//!
//! # Options
//!
//! Options are those master(8) passes to every daemon; those marked
//! *accepted* change nothing here.
//!
//! - `-c`: run chrooted (accepted; see *Bugs*).
//! - `-d`: do not detach (accepted: the process never detaches).
//! - `-D`: run a debugger on start-up (accepted).
//! - `-i max_idle`: as `-o max_idle=max_idle`.
//! - `-l`: the service's process limit is 1 (accepted).
//! - `-m max_use`: as `-o max_use=max_use`.
//! - `-n name`: the service name from `master.cf`, used in log lines.
//! - `-o name=value`: a configuration parameter (below); parameters this
//!   program does not use (`syslog_name`, say) are accepted and ignored.
//! - `-r`: accepted and ignored (no Postfix daemon uses it today).
//! - `-s count`: the number of listening sockets, from fd 6 (default 1).
//! - `-S`: stand-alone: serve one client on standard input and output,
//!   without a master, then exit.
//! - `-t type`: the service type, `unix` or `inet`; each listening socket
//!   must be of that family. Required unless `-S` is given.
//! - `-u`: run as the mail owner (accepted; see *Bugs*).
//! - `-v`: verbose: one log line per client, and the reason for exiting.
//!   Repeatable.
//! - `-V`: log to standard error (accepted: it always does).
//! - `-z`: the service's process limit is 0 (accepted).
//!
//! Options may be clustered (`-dv`) and an option's value attached
//! (`-s1`); `--` ends the options. Operands are refused.
//!
//! # Configuration parameters
//!
//! - `max_idle` (default `100s`): exit after this long without a client;
//!   `0` never does. A time: a number with an optional unit `s`, `m`, `h`,
//!   `d` or `w` (seconds if none).
//! - `max_use` (default `100`): exit after serving this many clients; `0`
//!   means no limit.
//! - `ipc_timeout` (default `3600s`): give up on a client that neither
//!   sends nor reads for this long; `0` waits for ever.
//! - `line_length_limit` (default `2048`): a longer line is echoed in
//!   pieces of this many bytes.
//!
//! # Diagnostics
//!
//! Problems go to standard error (master(8) passes it on to its own, or to
//! a log), as `postfix_echo[pid]: warning: ...` or `... fatal: ...`; with
//! `-v` there is one line per client and one saying why the process exits.
//!
//! Exit status: 0 after a normal exit (master gone, `max_use`, `max_idle`,
//! or the end of a stand-alone client); 1 after a fatal error (no `-t`, an
//! unsupported service type, a listening socket of the wrong family, an
//! incomplete standard environment, a status notification that failed for
//! another reason than the master's leaving, repeated `accept` errors); 2
//! after a usage error (an unknown option, a missing or malformed value, an
//! operand), with a usage message.
//!
//! # Bugs
//!
//! It neither chroots (`-c`) nor drops privileges (`-u`): the standard
//! library and this crate's dependencies offer no safe `setuid`/`chroot`,
//! and the mail owner's name lives in `main.cf`, which this example does
//! not read. Under a master(8) started as root it therefore runs as root,
//! which is why the `master.cf` lines above say so in the `unpriv` column.
//! It does not take part in Postfix's in-flow control (fds 3 and 4).
//!
//! # See also
//!
//! master(8), master.cf(5), Postfix `src/master/single_server.c` and
//! `src/master/master_proto.c`; [`master_proto::StatusSink`],
//! [`master_proto_pipe::Duplex`].

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use master_proto::env::ChildEnv;
use master_proto::{NotifyError, Status, StatusSink, Transport};
use master_proto_pipe::Duplex;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, SockType, SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt};

/// The program name in log lines and the usage message.
const PROG: &str = "postfix_echo";

const USAGE: &str = "usage: postfix_echo [-cdDlrSuvVz] [-i max_idle] [-m max_use] [-n name] \
                     [-o name=value] [-s count] [-t unix|inet]";

/// Options without a value (Postfix's getopt string is
/// `cdDi:lm:n:o:s:St:uvVz`; `r` is accepted as well).
const FLAGS: &str = "cdDlrSuvVz";
/// Options that take a value.
const WITH_VALUE: &str = "imnost";

/// After this many failed `accept` calls other than a lost race, give up
/// (Postfix's `msg_error_limit`).
const ACCEPT_ERROR_LIMIT: u32 = 13;

fn main() -> ExitCode {
    let config = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string().map_err(|a| format!("argument {a:?} is not UTF-8")))
        .collect::<Result<Vec<String>, String>>()
        .and_then(Config::parse)
    {
        Ok(config) => config,
        Err(why) => {
            eprintln!("{PROG}: {why}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&config) {
        Ok(reason) => {
            if config.verbose > 0 {
                log(format_args!("{reason} -- exiting"));
            }
            ExitCode::SUCCESS
        }
        Err(why) => {
            log(format_args!("fatal: {why}"));
            ExitCode::FAILURE
        }
    }
}

/// Writes one log line to standard error, prefixed as Postfix does.
fn log(line: std::fmt::Arguments<'_>) {
    // One write(2) per line: a service's children share the master's
    // stderr, and a line written in pieces would interleave with theirs.
    let line = format!("{PROG}[{}]: {line}\n", std::process::id());
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

/// What the command line asks for.
#[derive(Debug)]
struct Config {
    /// `-n`: the service name.
    service: String,
    /// `-t`: the service type.
    service_type: Option<String>,
    /// `-v`, counted.
    verbose: u32,
    /// `-S`.
    stand_alone: bool,
    /// `-s`: the number of listening sockets.
    sockets: usize,
    /// `max_idle`; zero for no limit.
    max_idle: Duration,
    /// `max_use`; zero for no limit.
    max_use: u64,
    /// `ipc_timeout`.
    ipc_timeout: Duration,
    /// `line_length_limit`.
    line_limit: usize,
}

impl Config {
    /// Parses the arguments after the program name, getopt style.
    fn parse(args: Vec<String>) -> Result<Config, String> {
        let mut config = Config {
            service: PROG.to_owned(),
            service_type: None,
            verbose: 0,
            stand_alone: false,
            sockets: 1,
            max_idle: Duration::from_secs(100),
            max_use: 100,
            ipc_timeout: Duration::from_secs(3600),
            line_limit: 2048,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--" {
                break;
            }
            let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
                return Err(format!("unexpected argument {arg:?}: this program takes no operands"));
            };
            for (at, option) in cluster.char_indices() {
                if FLAGS.contains(option) {
                    config.flag(option);
                } else if WITH_VALUE.contains(option) {
                    let attached = &cluster[at + option.len_utf8()..];
                    let value = if attached.is_empty() {
                        args.next().ok_or_else(|| format!("option -{option} requires a value"))?
                    } else {
                        attached.to_owned()
                    };
                    config.option(option, value)?;
                    break;
                } else {
                    return Err(format!("invalid option -- '{option}'"));
                }
            }
        }
        if let Some(operand) = args.next() {
            return Err(format!("unexpected argument {operand:?}: this program takes no operands"));
        }
        Ok(config)
    }

    fn flag(&mut self, option: char) {
        match option {
            'v' => self.verbose = self.verbose.saturating_add(1),
            'S' => self.stand_alone = true,
            // -c -d -D -l -r -u -V -z: nothing to do here (module docs).
            _ => {}
        }
    }

    fn option(&mut self, option: char, value: String) -> Result<(), String> {
        match option {
            'i' => self.parameter("max_idle", &value),
            'm' => self.parameter("max_use", &value),
            'n' => {
                self.service = value;
                Ok(())
            }
            'o' => {
                // Postfix takes `-o name` as `name=` (an empty value).
                let (name, value) = value.split_once('=').unwrap_or((&value, ""));
                self.parameter(name.trim(), value.trim())
            }
            's' => match value.parse::<usize>() {
                Ok(n) if n > 0 => {
                    self.sockets = n;
                    Ok(())
                }
                _ => Err(format!("invalid socket count: -s {value}")),
            },
            't' => {
                self.service_type = Some(value);
                Ok(())
            }
            _ => unreachable!("option -{option} is listed in WITH_VALUE but not handled"),
        }
    }

    fn parameter(&mut self, name: &str, value: &str) -> Result<(), String> {
        let bad = |what: &str| format!("invalid {name} value {value:?}: expected {what}");
        match name {
            "max_idle" => self.max_idle = parse_time(value).ok_or_else(|| bad("a time such as 100s"))?,
            "ipc_timeout" => self.ipc_timeout = parse_time(value).ok_or_else(|| bad("a time such as 3600s"))?,
            "max_use" => self.max_use = value.parse().map_err(|_| bad("a count"))?,
            "line_length_limit" => match value.parse() {
                Ok(n) if n > 0 => self.line_limit = n,
                _ => return Err(bad("a positive count")),
            },
            // Any other main.cf parameter: not ours to judge.
            _ => {}
        }
        Ok(())
    }
}

/// Parses a Postfix time value: a number with an optional unit (`s`, `m`,
/// `h`, `d`, `w`; seconds if none).
fn parse_time(value: &str) -> Option<Duration> {
    let (number, unit) = match value.char_indices().last()? {
        (at, unit) if unit.is_ascii_alphabetic() => (&value[..at], unit),
        _ => (value, 's'),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scale: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(scale).map(Duration::from_secs)
}

/// The service type of `-t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServiceType {
    Unix,
    Inet,
}

/// A listening socket from the standard environment.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// One accepted client.
enum Client {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    /// Checks that `fd` (standard descriptor `number`) is a listening stream
    /// socket of `service_type`'s family, and makes it non-blocking: it is
    /// shared with the service's other children, which may take a
    /// connection between our `poll` and our `accept`.
    fn new(fd: OwnedFd, number: usize, service_type: ServiceType) -> Result<Listener, String> {
        let what = |e: Errno| format!("listening socket #{number}: {e}");
        if getsockopt(&fd, sockopt::SockType).map_err(what)? != SockType::Stream {
            return Err(format!("listening socket #{number} is not a stream socket"));
        }
        if !getsockopt(&fd, sockopt::AcceptConn).map_err(what)? {
            return Err(format!("listening socket #{number} is not listening"));
        }
        let family = getsockname::<SockaddrStorage>(fd.as_raw_fd()).map_err(what)?.family();
        let listener = match (service_type, family) {
            (ServiceType::Inet, Some(AddressFamily::Inet | AddressFamily::Inet6)) => Listener::Tcp(fd.into()),
            (ServiceType::Unix, Some(AddressFamily::Unix)) => Listener::Unix(fd.into()),
            (_, family) => {
                return Err(format!(
                    "listening socket #{number} has address family {family:?}, which does not match service type {service_type:?}"
                ));
            }
        };
        match &listener {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l) => l.set_nonblocking(true),
        }
        .map_err(|e| format!("listening socket #{number}: {e}"))?;
        Ok(listener)
    }

    /// Accepts one client, in blocking mode with `timeout` on each read and
    /// write.
    fn accept(&self, timeout: Duration) -> io::Result<Client> {
        let timeout = Some(timeout).filter(|t| !t.is_zero());
        // The same steps for both kinds of stream, which share no trait.
        macro_rules! accepted {
            ($variant:ident, $listener:expr) => {{
                let (stream, _) = $listener.accept()?;
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(timeout)?;
                stream.set_write_timeout(timeout)?;
                Ok(Client::$variant(stream))
            }};
        }
        match self {
            Listener::Tcp(l) => accepted!(Tcp, l),
            Listener::Unix(l) => accepted!(Unix, l),
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

impl Client {
    /// Echoes every line until the client's EOF, then shuts the
    /// connection down.
    fn serve(&self, line_limit: usize) -> (Echoed, io::Result<()>) {
        let (echoed, result) = match self {
            Client::Tcp(s) => echo(s, s, line_limit),
            Client::Unix(s) => echo(s, s, line_limit),
        };
        // The connection closes when the client is dropped; an explicit
        // shutdown only makes the order (our EOF before AVAIL) visible.
        let _ = match self {
            Client::Tcp(s) => s.shutdown(Shutdown::Both),
            Client::Unix(s) => s.shutdown(Shutdown::Both),
        };
        (echoed, result)
    }

    /// Who the client is, for a log line.
    fn peer(&self) -> String {
        match self {
            Client::Tcp(s) => s.peer_addr().map_or_else(|_| "unknown".to_owned(), |a| a.to_string()),
            Client::Unix(_) => "local".to_owned(),
        }
    }
}

/// What one client sent.
#[derive(Clone, Copy, Debug, Default)]
struct Echoed {
    lines: u64,
    bytes: u64,
}

/// Copies `input` to `output` a line (at most `line_limit` bytes) at a
/// time, flushing after each, until EOF.
fn echo(input: impl Read, mut output: impl Write, line_limit: usize) -> (Echoed, io::Result<()>) {
    let mut input = BufReader::new(input);
    let mut line = Vec::new();
    let mut echoed = Echoed::default();
    let limit = u64::try_from(line_limit).unwrap_or(u64::MAX);
    loop {
        line.clear();
        let n = match (&mut input).take(limit).read_until(b'\n', &mut line) {
            Ok(0) => return (echoed, Ok(())),
            Ok(n) => n,
            Err(e) => return (echoed, Err(e)),
        };
        if let Err(e) = output.write_all(&line).and_then(|()| output.flush()) {
            return (echoed, Err(e));
        }
        echoed.lines += 1;
        echoed.bytes = echoed.bytes.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
    }
}

/// Runs the service; returns why it stopped.
fn run(config: &Config) -> Result<&'static str, String> {
    if config.stand_alone {
        let (echoed, result) = echo(io::stdin().lock(), io::stdout().lock(), config.line_limit);
        result.map_err(|e| format!("standard input/output: {e}"))?;
        if config.verbose > 0 {
            log(format_args!("{}: stand-alone client: {} lines, {} bytes", config.service, echoed.lines, echoed.bytes));
        }
        return Ok("stand-alone client done");
    }
    let service_type = match config.service_type.as_deref() {
        None => return Err("no transport type specified (-t unix or -t inet)".to_owned()),
        Some(t) if t.eq_ignore_ascii_case("unix") => ServiceType::Unix,
        Some(t) if t.eq_ignore_ascii_case("inet") => ServiceType::Inet,
        Some(t) => return Err(format!("unsupported transport type: {t}")),
    };
    let mut env = ChildEnv::from_process_with_listen(config.sockets).map_err(|e| e.to_string())?;
    let sink = Duplex.sink(&mut env).map_err(|e| e.to_string())?;
    let listeners = env
        .take_listen()
        .into_iter()
        .enumerate()
        .map(|(number, fd)| Listener::new(fd, number, service_type))
        .collect::<Result<Vec<_>, _>>()?;
    serve(config, &sink, &listeners)
}

/// The event loop: waits for a client on any listening socket, or for the
/// master to go, or for the idle time to pass.
fn serve(config: &Config, sink: &impl StatusSink, listeners: &[Listener]) -> Result<&'static str, String> {
    let mut served: u64 = 0;
    let mut accept_errors: u32 = 0;
    let mut idle_until = deadline(config.max_idle);
    loop {
        if config.max_use > 0 && served >= config.max_use {
            return Ok("use limit reached");
        }
        let timeout = match idle_until {
            None => PollTimeout::NONE,
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok("idle timeout");
                }
                // Round up, so that the wait never ends early.
                PollTimeout::try_from(left.as_millis().saturating_add(1)).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds: Vec<PollFd<'_>> = std::iter::once(sink.disconnect_fd())
            .chain(listeners.iter().map(AsFd::as_fd))
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        // Readable (EOF), hang-up or error on the status channel: nobody
        // ever writes to it, so any event means the master has gone.
        if fds[0].any().unwrap_or(true) {
            return Ok("master disconnect");
        }
        let ready: Vec<usize> =
            fds[1..].iter().enumerate().filter(|(_, fd)| fd.any().unwrap_or(true)).map(|(i, _)| i).collect();
        for listener in ready.into_iter().filter_map(|i| listeners.get(i)) {
            let client = match listener.accept(config.ipc_timeout) {
                Ok(client) => client,
                // Another child took the connection, or the client left
                // before we got to it: wait again, keeping the idle time.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    log(format_args!("warning: {}: accept connection: {e}", config.service));
                    accept_errors += 1;
                    if accept_errors >= ACCEPT_ERROR_LIMIT {
                        return Err(format!("too many accept errors, the last: {e}"));
                    }
                    continue;
                }
            };
            served += 1;
            if !serve_client(config, sink, &client, served)? {
                return Ok("master disconnect");
            }
            idle_until = deadline(config.max_idle);
            // Back to poll: the use limit may have been reached.
            break;
        }
    }
}

/// Serves one accepted client between `TAKEN` and `AVAIL`. Returns whether
/// the master is still there.
fn serve_client(config: &Config, sink: &impl StatusSink, client: &Client, number: u64) -> Result<bool, String> {
    // As Postfix: a failed TAKEN is ignored, since the client was accepted
    // already and dropping it "would be rude"; the AVAIL after it fails
    // the same way and ends the process.
    if let Err(e) = sink.notify(Status::TAKEN)
        && config.verbose > 0
    {
        log(format_args!("{}: notify TAKEN: {e}", config.service));
    }
    let peer = client.peer();
    let (echoed, result) = client.serve(config.line_limit);
    if config.verbose > 0 {
        let outcome = match &result {
            Ok(()) => "done".to_owned(),
            Err(e) => format!("error: {e}"),
        };
        log(format_args!(
            "{}: client {number} from {peer}: {} lines, {} bytes, {outcome}",
            config.service, echoed.lines, echoed.bytes
        ));
    } else if let Err(e) = &result {
        log(format_args!("warning: {}: client from {peer}: {e}", config.service));
    }
    match sink.notify(Status::AVAIL) {
        Ok(()) => Ok(true),
        Err(NotifyError::Disconnected) => Ok(false),
        Err(e) => Err(format!("notify AVAIL: {e}")),
    }
}

/// The moment `idle` from now, or `None` for no limit.
fn deadline(idle: Duration) -> Option<Instant> {
    if idle.is_zero() { None } else { Instant::now().checked_add(idle) }
}
