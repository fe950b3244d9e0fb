//! The command line of `cargo xtask demo`, parsed with lexopt.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;
use master_proto_transports::AnyTransport;

/// The transport when `--transport` is not given: Postfix's own duplex
/// pipe, which real Postfix daemons speak too.
pub(super) const DEFAULT_TRANSPORT: AnyTransport = AnyTransport::postfix();

/// The help text: every option, with its default.
pub(super) const HELP: &str = "\
cargo xtask demo: a prefork master for one service, as Postfix's master(8) runs one

usage: cargo xtask demo [OPTIONS] [--service COMMAND [ARGS...]]

The master listens on a socket, spawns children with the standard environment
(status channel on fd 5, the listening socket on fd 6, GENERATION in octal)
when no child is available, reads their TAKEN/AVAIL updates, reaps them,
throttles after a child that dies before serving anyone, and on reload opens a
new status channel while the old children finish their client and exit. A
built-in load generator keeps the children busy; a live view shows them.

Options:
  --transport NAME      status transport: {TRANSPORTS} (default: {DEFAULT})
  --max-children N      process limit of the service; 0 = no limit (default: 4)
  --listen tcp[:ADDR]   listen on TCP, ADDR defaults to 127.0.0.1:0 (the default)
  --listen unix:PATH    listen on a Unix-domain socket at PATH (created, removed at exit)
  --clients N           concurrent load-generator clients; 0 = none (default: 8)
  --duration S          run for S seconds, then stop the load and shut down;
                        0 = until SIGINT/SIGTERM (default: 10)
  --hold S              how long a client keeps its connection (and a child
                        busy) after its echo, varied by up to +-50% (default: 0.1)
  --reload-after S      reload after S seconds, as SIGHUP does (default: never)
  --throttle S          how long spawning stops after a child dies before
                        serving anyone (default: 5; Postfix says 60)
  --gossip              built-in children also send the undefined status 7 after
                        each client: the master shows and counts it, and goes on
  --plain               one line per event instead of the live view (the
                        default when standard output is not a terminal)
  --service COMMAND [ARGS...]
                        run COMMAND -n NAME -t inet|unix [ARGS...] as the child
                        instead of the built-in echo service, as Postfix runs a
                        daemon from master.cf; requires the duplex transport.
                        Must come last.
  -h, --help            this text

Signals: SIGHUP reloads; SIGINT (Ctrl-C) and SIGTERM shut down cleanly (the
status channel is closed so children exit, all are reaped, stragglers are
killed after a bound).

Plain output, one line each:
  listen tcp|unix ADDRESS transport=NAME
  spawn pid=P gen=G children=N
  pid=P gen=G status=TAKEN|AVAIL|other(n) outcome=OUTCOME
  malformed what=\"...\" outcome=malformed
  reap pid=P gen=G exit=\"...\" uses=N outcome=reaped|reaped-throttle|unknown-pid
  reload epoch=E retired=P,P,...
  throttle seconds=S
  shutdown reason=...
  summary spawned=N reaped=N ... (every counter, key=value)";

/// Where the master listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ListenSpec {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix-domain socket path.
    Unix(PathBuf),
}

/// What the command line asks for.
#[derive(Debug)]
pub(super) struct Options {
    /// `--transport`.
    pub(super) transport: AnyTransport,
    /// `--max-children`.
    pub(super) max_children: usize,
    /// `--listen`.
    pub(super) listen: ListenSpec,
    /// `--clients`.
    pub(super) clients: usize,
    /// `--duration`; `None` runs until a signal.
    pub(super) duration: Option<Duration>,
    /// `--hold`.
    pub(super) hold: Duration,
    /// `--reload-after`.
    pub(super) reload_after: Option<Duration>,
    /// `--throttle`.
    pub(super) throttle: Duration,
    /// `--gossip`.
    pub(super) gossip: bool,
    /// `--plain`.
    pub(super) plain: bool,
    /// `--service`: the command and its arguments.
    pub(super) service: Option<(OsString, Vec<OsString>)>,
}

/// What parsing the command line came to.
#[derive(Debug)]
pub(super) enum Parsed {
    /// Run with these options.
    Run(Options),
    /// Print the help text.
    Help,
}

/// Parses the arguments after `demo`.
pub(super) fn parse(args: Vec<OsString>) -> Result<Parsed, String> {
    let mut options = Options {
        transport: DEFAULT_TRANSPORT,
        max_children: 4,
        listen: ListenSpec::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))),
        clients: 8,
        duration: Some(Duration::from_secs(10)),
        hold: Duration::from_millis(100),
        reload_after: None,
        throttle: Duration::from_secs(5),
        gossip: false,
        plain: false,
        service: None,
    };
    let mut transport_given = false;
    let mut parser = lexopt::Parser::from_args(args);
    let err = |e: lexopt::Error| e.to_string();
    while let Some(arg) = parser.next().map_err(err)? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("transport") => {
                let name: String = parser.value().map_err(err)?.string().map_err(err)?;
                options.transport = AnyTransport::from_name(&name).map_err(|e| e.to_string())?;
                transport_given = true;
            }
            Long("max-children") => options.max_children = parser.value().map_err(err)?.parse().map_err(err)?,
            Long("clients") => options.clients = parser.value().map_err(err)?.parse().map_err(err)?,
            Long("listen") => options.listen = listen_spec(&parser.value().map_err(err)?.string().map_err(err)?)?,
            Long("duration") => {
                let seconds = seconds("--duration", &parser.value().map_err(err)?)?;
                options.duration = Some(seconds).filter(|d| !d.is_zero());
            }
            Long("hold") => options.hold = seconds("--hold", &parser.value().map_err(err)?)?,
            Long("reload-after") => {
                options.reload_after = Some(seconds("--reload-after", &parser.value().map_err(err)?)?)
            }
            Long("throttle") => options.throttle = seconds("--throttle", &parser.value().map_err(err)?)?,
            Long("gossip") => options.gossip = true,
            Long("plain") => options.plain = true,
            Long("service") => {
                let mut rest = parser.raw_args().map_err(err)?;
                let command = rest.next().ok_or("--service needs a COMMAND")?;
                options.service = Some((command, rest.collect()));
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    if options.service.is_some() {
        // Postfix's daemons speak Postfix's wire: whichever transport
        // declares it (the duplex pipe).
        let postfix =
            AnyTransport::unnamed().ok_or("--service needs Postfix's wire, and no transport built here speaks it")?;
        if transport_given && options.transport != postfix {
            return Err(format!(
                "--service runs a Postfix-style daemon, which speaks Postfix's wire: \
                 --transport {} cannot be used with it (leave --transport out, or say {postfix})",
                options.transport
            ));
        }
        options.transport = postfix;
        if options.gossip {
            return Err("--gossip applies to the built-in children, not to a --service command".to_owned());
        }
    }
    Ok(Parsed::Run(options))
}

/// `tcp`, `tcp:ADDR` or `unix:PATH`.
fn listen_spec(value: &str) -> Result<ListenSpec, String> {
    if value == "tcp" {
        return Ok(ListenSpec::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))));
    }
    if let Some(addr) = value.strip_prefix("tcp:") {
        return addr
            .parse()
            .map(ListenSpec::Tcp)
            .map_err(|e| format!("--listen {value}: {addr:?} is not an address such as 127.0.0.1:7777 ({e})"));
    }
    if let Some(path) = value.strip_prefix("unix:").filter(|p| !p.is_empty()) {
        return Ok(ListenSpec::Unix(PathBuf::from(path)));
    }
    Err(format!("--listen {value}: expected tcp, tcp:ADDR or unix:PATH"))
}

/// A non-negative number of seconds, fractions allowed.
fn seconds(option: &str, value: &std::ffi::OsStr) -> Result<Duration, String> {
    let text = value.to_str().ok_or_else(|| format!("{option}: {value:?} is not UTF-8"))?;
    text.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{option}: {text:?} is not a number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, String> {
        match parse(args.iter().map(OsString::from).collect())? {
            Parsed::Run(options) => Ok(options),
            Parsed::Help => Err("help".to_owned()),
        }
    }

    #[test]
    fn service_takes_the_rest_and_forces_duplex() {
        let o = run(&["--clients", "2", "--service", "/bin/echo", "-v", "--plain"]).unwrap();
        assert_eq!(
            o.service,
            Some((OsString::from("/bin/echo"), vec![OsString::from("-v"), OsString::from("--plain")]))
        );
        assert_eq!(o.transport.name(), "duplex");
        assert!(!o.plain, "--plain after --service belongs to the command");
        let e = run(&["--transport", "pipe", "--service", "x"]).unwrap_err();
        assert!(e.contains("duplex"), "{e}");
    }

    #[test]
    fn listen_and_durations() {
        assert_eq!(listen_spec("unix:/tmp/x"), Ok(ListenSpec::Unix("/tmp/x".into())));
        assert_eq!(listen_spec("tcp:127.0.0.1:7"), Ok(ListenSpec::Tcp("127.0.0.1:7".parse().unwrap())));
        assert!(listen_spec("udp").is_err() && listen_spec("unix:").is_err());
        let o = run(&["--duration", "0", "--hold", "0.25"]).unwrap();
        assert_eq!((o.duration, o.hold), (None, Duration::from_millis(250)));
        assert!(run(&["--duration", "-1"]).is_err());
        assert!(run(&["--transport", "carrier-pigeon"]).unwrap_err().contains("unknown transport"));
    }
}
