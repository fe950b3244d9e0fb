//! The daemon's command line and environment, as master(8) passes them to every Postfix server.
//!
//! master(8) runs a service's command as
//! `COMMAND -n NAME -t TYPE [flags] [-o name=value ...] [args ...]`, with
//! `GENERATION` (octal) and `MAIL_CONFIG` in the environment. This module
//! parses that into a [`DaemonArgs`] the way Postfix's `single_server.c` and
//! `multi_server.c` do (getopt string `cdDi:lm:n:o:s:St:uvVz`):
//!
//! | option | meaning | here |
//! |---|---|---|
//! | `-c` | run chrooted in the queue directory | [`DaemonArgs::chroot`] (recorded, not done) |
//! | `-d` | do not detach | [`DaemonArgs::foreground`] |
//! | `-D` | run a debugger on start-up | [`DaemonArgs::debug`] |
//! | `-i t` | `-o max_idle=t` | [`Limits::max_idle`] |
//! | `-l` | the service's process limit is 1 | [`DaemonArgs::alone`] |
//! | `-m n` | `-o max_use=n` | [`Limits::max_use`] |
//! | `-n name` | the service name from master.cf | [`DaemonArgs::service_name`] (default: the program's name) |
//! | `-o name=value` | a main.cf parameter for this service (`-o name` means an empty value) | [`DaemonArgs::param`] |
//! | `-s n` | `n` listening sockets from fd 6 (a positive count) | [`DaemonArgs::sockets`] |
//! | `-S` | stand-alone: one client on stdin/stdout, no master | [`DaemonArgs::stand_alone`] |
//! | `-t type` | the service type: `unix` or `inet` (any case); required unless `-S` | [`DaemonArgs::service_type`] |
//! | `-u` | run as the mail owner | [`DaemonArgs::unprivileged`] (recorded, not done) |
//! | `-v` | verbose, repeatable | [`DaemonArgs::verbose`] |
//! | `-V` | log to standard error | [`DaemonArgs::log_stderr`] |
//! | `-z` | the service's process limit is 0 (unlimited) | [`DaemonArgs::zero_limit`] |
//!
//! Options may be clustered (`-dv`) and a value attached (`-s2`). As
//! Postfix's getopt on Linux (`+` mode), option processing stops at the
//! first argument that is not an option, or after `--`: everything from
//! there on is the service's own ([`DaemonArgs::args`]), so
//! `policy -n policy -t unix blocked@example.com` leaves
//! `["blocked@example.com"]`.
//!
//! The parameters the skeletons use are read from the `-o` overrides, with
//! Postfix's defaults: `max_idle` (100s), `max_use` (100), `ipc_timeout`
//! (3600s) ([`Limits`]). Times take Postfix's units ([`parse_time`]).
//! Unlike Postfix, whose minimum for `max_idle` and `ipc_timeout` is one
//! second, a zero here means no limit, as it does for `max_use`.
//!
//! The environment: `GENERATION` (octal, see
//! [`master_proto::env::parse_generation`]), `MAIL_CONFIG` (the
//! configuration directory), `MAIL_VERBOSE` (as `-v`) and `MAIL_DEBUG` (as
//! `-D`), read by [`DaemonArgs::from_process`].
//!
//! # Errors
//!
//! [`ArgsError`] names the option or value at fault; nothing here panics
//! on any input.
//!
//! # See also
//!
//! Postfix `src/master/single_server.c`, `src/master/multi_server.c`
//! (`single_server_main`, `multi_server_main`), `src/global/mail_server.h`,
//! `src/util/conv_time.c`, `src/master/master_ent.c` (how the master builds
//! the command line).

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The options without a value (Postfix's getopt string is
/// `cdDi:lm:n:o:s:St:uvVz`).
const FLAGS: &str = "cdDlSuvVz";
/// The options that take a value.
const WITH_VALUE: &str = "imnost";

/// A one-line usage message for a program named `program`.
#[must_use]
pub fn usage(program: &str) -> String {
    format!(
        "usage: {program} [-cdDlSuvVz] [-i max_idle] [-m max_use] [-n name] [-o name=value] [-s count] \
         [-t unix|inet] [args ...]"
    )
}

/// The kind of listening socket the master passes (`-t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServiceType {
    /// `unix`: UNIX-domain stream sockets (`private/NAME`, `public/NAME`).
    Unix,
    /// `inet`: TCP sockets.
    Inet,
}

impl ServiceType {
    /// The name master.cf gives it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            ServiceType::Unix => "unix",
            ServiceType::Inet => "inet",
        }
    }

    /// Parses a `-t` value as Postfix does (any case).
    ///
    /// # Errors
    ///
    /// [`ArgsError::UnsupportedServiceType`] for anything but `unix` and
    /// `inet` (Postfix's other types, `fifo`, `pass`, `unix-dgram`, are not
    /// for these skeletons).
    pub fn parse(value: &str) -> Result<ServiceType, ArgsError> {
        if value.eq_ignore_ascii_case("unix") {
            Ok(ServiceType::Unix)
        } else if value.eq_ignore_ascii_case("inet") {
            Ok(ServiceType::Inet)
        } else {
            Err(ArgsError::UnsupportedServiceType(value.to_owned()))
        }
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The limits the skeletons enforce, from `-o` (and `-i`, `-m`) with
/// Postfix's defaults. Zero means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// `max_idle`: exit after this long without a client (default 100 s).
    pub max_idle: Duration,
    /// `max_use`: exit after this many clients (default 100).
    pub max_use: u64,
    /// `ipc_timeout`: the bound on each read from and write to a client
    /// (default 3600 s).
    pub ipc_timeout: Duration,
}

impl Default for Limits {
    /// Postfix's defaults: `max_idle = 100s`, `max_use = 100`,
    /// `ipc_timeout = 3600s`.
    fn default() -> Limits {
        Limits { max_idle: Duration::from_secs(100), max_use: 100, ipc_timeout: Duration::from_secs(3600) }
    }
}

/// The daemon's command line and environment, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DaemonArgs {
    /// The program's name: the last component of `argv[0]` (Postfix's
    /// `var_procname`), for log lines.
    pub program: String,
    /// `-n`: the service name from master.cf; the program's name if absent.
    pub service_name: String,
    /// `-t`: the service type; `None` only with `-S`, or when a program
    /// that is not started by master(8) clears it: the skeletons then take
    /// each listening socket as TCP or UNIX-domain, whichever it is.
    pub service_type: Option<ServiceType>,
    /// `-s`: the number of listening sockets from fd 6, if given (the
    /// skeletons then take `MASTER_LISTEN_FDS`, or 1).
    pub sockets: Option<usize>,
    /// `-S`: stand-alone, serving stdin/stdout without a master.
    pub stand_alone: bool,
    /// `-v` (and `MAIL_VERBOSE`): how verbose.
    pub verbose: u32,
    /// `-c`: chroot was asked for (these skeletons do not chroot).
    pub chroot: bool,
    /// `-d`: stay in the foreground (a skeleton never detaches).
    pub foreground: bool,
    /// `-D` (and `MAIL_DEBUG`): debug on start-up.
    pub debug: bool,
    /// `-l`: the service's process limit is 1.
    pub alone: bool,
    /// `-u`: dropping privileges was asked for (these skeletons do not).
    pub unprivileged: bool,
    /// `-V`: log to standard error.
    pub log_stderr: bool,
    /// `-z`: the service's process limit is 0.
    pub zero_limit: bool,
    /// `-o name=value` (and `-i`, `-m`), in order; a later one wins.
    pub params: Vec<(String, String)>,
    /// The skeletons' limits, from `params`.
    pub limits: Limits,
    /// Everything after the options: the service's own arguments.
    pub args: Vec<String>,
    /// `MAIL_CONFIG`: the configuration directory, if set.
    pub config_dir: Option<PathBuf>,
    /// `GENERATION`, if set: the master's number for this spawn.
    pub generation: Option<u32>,
}

impl DaemonArgs {
    /// Parses a command line, `argv[0]` first, as a Postfix server does.
    /// The environment is not read (see [`from_process`](Self::from_process)).
    ///
    /// # Errors
    ///
    /// [`ArgsError`] for an unknown option, a missing or malformed value,
    /// a missing or unsupported `-t` (unless `-S`), or an argument that is
    /// not Unicode.
    ///
    /// # Examples
    ///
    /// ```
    /// use master_proto_daemon::{DaemonArgs, ServiceType};
    /// let args = DaemonArgs::parse(["/usr/libexec/policy", "-n", "policy", "-t", "unix", "-o", "max_idle=5m", "x@y"])?;
    /// assert_eq!(args.service_type, Some(ServiceType::Unix));
    /// assert_eq!(args.limits.max_idle.as_secs(), 300);
    /// assert_eq!(args.args, ["x@y"]);
    /// # Ok::<(), master_proto_daemon::ArgsError>(())
    /// ```
    pub fn parse<I>(argv: I) -> Result<DaemonArgs, ArgsError>
    where
        I: IntoIterator,
        I::Item: Into<OsString>,
    {
        let mut argv = argv
            .into_iter()
            .map(|a| a.into().into_string().map_err(|a| ArgsError::NotUnicode(a.to_string_lossy().into_owned())));
        let argv0 = argv.next().transpose()?.unwrap_or_default();
        let program = argv0.rsplit('/').next().filter(|p| !p.is_empty()).unwrap_or("daemon").to_owned();
        let mut parsed = DaemonArgs {
            service_name: program.clone(),
            program,
            service_type: None,
            sockets: None,
            stand_alone: false,
            verbose: 0,
            chroot: false,
            foreground: false,
            debug: false,
            alone: false,
            unprivileged: false,
            log_stderr: false,
            zero_limit: false,
            params: Vec::new(),
            limits: Limits::default(),
            args: Vec::new(),
            config_dir: None,
            generation: None,
        };
        let mut service_type = None;
        while let Some(arg) = argv.next().transpose()? {
            if arg == "--" {
                break;
            }
            // "-" alone, or anything not starting with '-', ends the
            // options (getopt's "+" mode).
            let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
                parsed.args.push(arg);
                break;
            };
            for (at, option) in cluster.char_indices() {
                if FLAGS.contains(option) {
                    parsed.flag(option);
                } else if WITH_VALUE.contains(option) {
                    let attached = &cluster[at + option.len_utf8()..];
                    let value = if attached.is_empty() {
                        argv.next().transpose()?.ok_or(ArgsError::MissingValue(option))?
                    } else {
                        attached.to_owned()
                    };
                    if option == 't' {
                        service_type = Some(value);
                    } else {
                        parsed.option(option, value)?;
                    }
                    break;
                } else {
                    return Err(ArgsError::UnknownOption(option));
                }
            }
        }
        for arg in argv {
            parsed.args.push(arg?);
        }
        // As Postfix: the type is required, and checked, only when serving
        // a master's sockets.
        parsed.service_type = match (service_type, parsed.stand_alone) {
            (Some(t), false) => Some(ServiceType::parse(&t)?),
            (None, false) => return Err(ArgsError::NoServiceType),
            (t, true) => t.and_then(|t| ServiceType::parse(&t).ok()),
        };
        parsed.limits = Limits {
            max_idle: parsed.time_param("max_idle", Limits::default().max_idle)?,
            max_use: parsed.count_param("max_use", Limits::default().max_use)?,
            ipc_timeout: parsed.time_param("ipc_timeout", Limits::default().ipc_timeout)?,
        };
        Ok(parsed)
    }

    /// Parses this process's command line ([`std::env::args_os`]) and reads
    /// `MAIL_CONFIG`, `MAIL_VERBOSE`, `MAIL_DEBUG` and `GENERATION`.
    ///
    /// # Errors
    ///
    /// As [`parse`](Self::parse), and [`ArgsError::BadGeneration`] for a
    /// `GENERATION` that is not octal.
    pub fn from_process() -> Result<DaemonArgs, ArgsError> {
        DaemonArgs::parse(std::env::args_os())?.with_environment(|name| std::env::var_os(name))
    }

    /// Takes the environment's part from `lookup` (a variable's value by
    /// name): `MAIL_CONFIG`, `MAIL_VERBOSE`, `MAIL_DEBUG`, `GENERATION`.
    ///
    /// # Errors
    ///
    /// [`ArgsError::BadGeneration`] for a `GENERATION` that is not octal.
    pub fn with_environment(mut self, lookup: impl Fn(&str) -> Option<OsString>) -> Result<DaemonArgs, ArgsError> {
        self.config_dir = lookup("MAIL_CONFIG").map(PathBuf::from);
        if lookup("MAIL_VERBOSE").is_some() {
            self.verbose = self.verbose.max(1);
        }
        self.debug |= lookup("MAIL_DEBUG").is_some();
        if let Some(value) = lookup(master_proto::env::GENERATION_VAR) {
            let text = value.to_string_lossy();
            let generation = master_proto::env::parse_generation(Some(&text))
                .map_err(|_| ArgsError::BadGeneration(text.clone().into_owned()))?;
            self.generation = Some(generation);
        }
        Ok(self)
    }

    /// For a program that takes no arguments of its own: refuses any.
    ///
    /// # Errors
    ///
    /// [`ArgsError::Operand`] naming the first.
    pub fn no_operands(&self) -> Result<(), ArgsError> {
        self.args.first().map_or(Ok(()), |a| Err(ArgsError::Operand(a.clone())))
    }

    /// The value of parameter `name` from the last `-o name=value`.
    #[must_use]
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Parameter `name` as a time ([`parse_time`], seconds by default), or
    /// `default` if no `-o` sets it.
    ///
    /// # Errors
    ///
    /// [`ArgsError::BadTime`] naming the parameter and its value.
    pub fn time_param(&self, name: &str, default: Duration) -> Result<Duration, ArgsError> {
        match self.param(name) {
            None => Ok(default),
            Some(value) => {
                parse_time(value).ok_or_else(|| ArgsError::BadTime { name: name.to_owned(), value: value.to_owned() })
            }
        }
    }

    /// Parameter `name` as a count, or `default` if no `-o` sets it.
    ///
    /// # Errors
    ///
    /// [`ArgsError::BadCount`] naming the parameter and its value.
    pub fn count_param(&self, name: &str, default: u64) -> Result<u64, ArgsError> {
        match self.param(name) {
            None => Ok(default),
            Some(value) => {
                value.parse().map_err(|_| ArgsError::BadCount { name: name.to_owned(), value: value.to_owned() })
            }
        }
    }

    fn flag(&mut self, option: char) {
        match option {
            'c' => self.chroot = true,
            'd' => self.foreground = true,
            'D' => self.debug = true,
            'l' => self.alone = true,
            'S' => self.stand_alone = true,
            'u' => self.unprivileged = true,
            'v' => self.verbose = self.verbose.saturating_add(1),
            'V' => self.log_stderr = true,
            // 'z', the last of FLAGS.
            _ => self.zero_limit = true,
        }
    }

    fn option(&mut self, option: char, value: String) -> Result<(), ArgsError> {
        match option {
            'i' => self.params.push(("max_idle".to_owned(), value)),
            'm' => self.params.push(("max_use".to_owned(), value)),
            'n' => self.service_name = value,
            'o' => {
                // Postfix takes `-o name` as `name=` (an empty value).
                let (name, value) = value.split_once('=').unwrap_or((&value, ""));
                self.params.push((name.trim().to_owned(), value.trim().to_owned()));
            }
            // 's', the last of WITH_VALUE but 't', which the caller takes.
            _ => match value.parse::<usize>() {
                Ok(n) if n > 0 => self.sockets = Some(n),
                _ => return Err(ArgsError::BadSocketCount(value)),
            },
        }
        Ok(())
    }
}

/// Parses a Postfix time value: digits with an optional unit, `s`
/// (seconds, the default), `m`, `h`, `d` or `w`, as `conv_time` does.
/// `None` for anything else, or a time too large to represent.
///
/// ```
/// use master_proto_daemon::args::parse_time;
/// use std::time::Duration;
/// assert_eq!(parse_time("100s"), Some(Duration::from_secs(100)));
/// assert_eq!(parse_time("5m"), Some(Duration::from_secs(300)));
/// assert_eq!(parse_time("60"), Some(Duration::from_secs(60)));
/// assert_eq!(parse_time("1.5h"), None);
/// ```
#[must_use]
pub fn parse_time(value: &str) -> Option<Duration> {
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

/// What is wrong with a daemon's command line or environment.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// An option Postfix's servers do not have.
    #[error("invalid option -- '{0}'")]
    UnknownOption(char),
    /// An option that takes a value came last.
    #[error("option -{0} requires a value")]
    MissingValue(char),
    /// `-s` with something other than a positive count.
    #[error("invalid socket_count: {0:?}")]
    BadSocketCount(String),
    /// No `-t`, and not stand-alone (`-S`).
    #[error("no transport type specified (-t unix or -t inet)")]
    NoServiceType,
    /// `-t` with a type these skeletons do not serve.
    #[error("unsupported transport type: {0}")]
    UnsupportedServiceType(String),
    /// A time parameter that is not a time.
    #[error("invalid {name} value {value:?}: expected a time such as 100s, 5m, 1h")]
    BadTime {
        /// The parameter.
        name: String,
        /// Its value.
        value: String,
    },
    /// A count parameter that is not a count.
    #[error("invalid {name} value {value:?}: expected a count")]
    BadCount {
        /// The parameter.
        name: String,
        /// Its value.
        value: String,
    },
    /// A service argument given to a program that takes none.
    #[error("unexpected argument {0:?}: this program takes no operands")]
    Operand(String),
    /// An argument that is not Unicode (shown lossily).
    #[error("argument {0:?} is not Unicode")]
    NotUnicode(String),
    /// `GENERATION` is set but not an octal number.
    #[error("GENERATION={0:?} is not an octal number")]
    BadGeneration(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<DaemonArgs, ArgsError> {
        DaemonArgs::parse(std::iter::once("/usr/libexec/postfix/echo").chain(args.iter().copied()))
    }

    #[test]
    fn the_masters_argv_is_understood() {
        // As master(8) runs `policy unix - n n - - policy blocked@example.com`.
        let a = parse(&["-n", "policy", "-t", "unix", "-u", "-z", "blocked@example.com", "-v"]).expect("parse");
        assert_eq!(a.program, "echo");
        assert_eq!(a.service_name, "policy");
        assert_eq!(a.service_type, Some(ServiceType::Unix));
        assert!(a.unprivileged && a.zero_limit && !a.chroot);
        // Options end at the first operand: the -v after it is the service's.
        assert_eq!(a.verbose, 0);
        assert_eq!(a.args, ["blocked@example.com", "-v"]);
        assert_eq!(a.limits, Limits::default());
        assert_eq!(a.sockets, None);
    }

    #[test]
    fn every_flag_is_recorded_and_clusters_and_attached_values_work() {
        let a = parse(&["-cdDlSuVz", "-vv", "-s2", "-tINET", "-n", "x"]).expect("parse");
        assert!(a.chroot && a.foreground && a.debug && a.alone && a.stand_alone);
        assert!(a.unprivileged && a.log_stderr && a.zero_limit);
        assert_eq!(a.verbose, 2);
        assert_eq!(a.sockets, Some(2));
        assert_eq!(a.service_type, Some(ServiceType::Inet), "the type is matched in any case");
        // A value ends its cluster: -vn x is -v then -n x.
        let a = parse(&["-vnfoo", "-t", "unix"]).expect("parse");
        assert_eq!((a.verbose, a.service_name.as_str()), (1, "foo"));
    }

    #[test]
    fn double_dash_ends_the_options() {
        let a = parse(&["-t", "unix", "--", "-v", "x"]).expect("parse");
        assert_eq!((a.verbose, a.args.clone()), (0, vec!["-v".to_owned(), "x".to_owned()]));
        let a = parse(&["-t", "unix", "-", "x"]).expect("parse");
        assert_eq!(a.args, ["-", "x"], "a lone dash is an operand");
    }

    #[test]
    fn overrides_set_the_limits_and_the_last_one_wins() {
        let a = parse(&[
            "-t",
            "unix",
            "-o",
            "max_idle=5m",
            "-o",
            " max_use = 7 ",
            "-i",
            "2h",
            "-o",
            "ipc_timeout=0",
            "-o",
            "syslog_name",
        ])
        .expect("parse");
        assert_eq!(a.limits.max_idle, Duration::from_secs(7200), "-i after -o max_idle wins");
        assert_eq!(a.limits.max_use, 7, "blanks around name and value are trimmed");
        assert_eq!(a.limits.ipc_timeout, Duration::ZERO);
        assert_eq!(a.param("syslog_name"), Some(""), "-o name is name=");
        assert_eq!(a.param("nothing"), None);
        let a = parse(&["-t", "unix", "-m", "3"]).expect("parse");
        assert_eq!(a.limits.max_use, 3);
    }

    #[test]
    fn times_take_postfix_units() {
        for (text, secs) in
            [("0", 0), ("7", 7), ("7s", 7), ("2m", 120), ("3h", 10_800), ("1d", 86_400), ("2w", 1_209_600)]
        {
            assert_eq!(parse_time(text), Some(Duration::from_secs(secs)), "{text}");
        }
        for bad in ["", "s", "m5", "-1", "1.5", "5x", "5ms", " 5", "99999999999999999999", "31000000000000w"] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn each_refusal_says_why() {
        let cases: [(&[&str], ArgsError); 11] = [
            (&["-t", "unix", "-Q"], ArgsError::UnknownOption('Q')),
            (&["-t", "unix", "-r"], ArgsError::UnknownOption('r')),
            (&["-t", "unix", "-s"], ArgsError::MissingValue('s')),
            (&["-t"], ArgsError::MissingValue('t')),
            (&["-t", "unix", "-s", "0"], ArgsError::BadSocketCount("0".into())),
            (&["-t", "unix", "-s", "two"], ArgsError::BadSocketCount("two".into())),
            (&["-n", "echo"], ArgsError::NoServiceType),
            (&["-t", "fifo"], ArgsError::UnsupportedServiceType("fifo".into())),
            (
                &["-t", "unix", "-o", "max_idle=soon"],
                ArgsError::BadTime { name: "max_idle".into(), value: "soon".into() },
            ),
            (&["-t", "unix", "-i", "-1"], ArgsError::BadTime { name: "max_idle".into(), value: "-1".into() }),
            (
                &["-t", "unix", "-o", "max_use=many"],
                ArgsError::BadCount { name: "max_use".into(), value: "many".into() },
            ),
        ];
        for (args, want) in cases {
            assert_eq!(parse(args), Err(want), "{args:?}");
        }
        assert_eq!(parse(&["-Q"]).map_err(|e| e.to_string()), Err("invalid option -- 'Q'".to_owned()));
    }

    #[test]
    fn stand_alone_needs_no_type() {
        let a = parse(&["-S"]).expect("parse");
        assert!(a.stand_alone);
        assert_eq!(a.service_type, None);
        // Postfix does not look at -t when stand-alone.
        assert!(parse(&["-S", "-t", "fifo"]).is_ok());
    }

    #[test]
    fn arguments_that_are_not_unicode_are_refused() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![b'-', b'n', 0xff]);
        let got = DaemonArgs::parse([OsString::from("echo"), OsString::from("-t"), OsString::from("unix"), bad]);
        assert!(matches!(got, Err(ArgsError::NotUnicode(_))), "{got:?}");
    }

    #[test]
    fn the_environment_is_read() {
        let env = |name: &str| match name {
            "MAIL_CONFIG" => Some(OsString::from("/etc/postfix-out")),
            "MAIL_VERBOSE" => Some(OsString::from("1")),
            "GENERATION" => Some(OsString::from("17")),
            _ => None,
        };
        let a = parse(&["-t", "unix"]).and_then(|a| a.with_environment(env)).expect("parse");
        assert_eq!(a.config_dir, Some(PathBuf::from("/etc/postfix-out")));
        assert_eq!((a.verbose, a.debug, a.generation), (1, false, Some(0o17)));
        let bad = |name: &str| (name == "GENERATION").then(|| OsString::from("9"));
        assert_eq!(
            parse(&["-t", "unix"]).and_then(|a| a.with_environment(bad)),
            Err(ArgsError::BadGeneration("9".into()))
        );
    }

    #[test]
    fn a_missing_argv0_still_names_the_program() {
        let a = DaemonArgs::parse(Vec::<OsString>::new().into_iter().chain(["".into(), "-S".into()])).expect("parse");
        assert_eq!(a.program, "daemon");
        let none = DaemonArgs::parse(Vec::<OsString>::new());
        assert_eq!(none, Err(ArgsError::NoServiceType));
    }
}
