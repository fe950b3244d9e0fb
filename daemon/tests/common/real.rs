//! A private Postfix instance run by a real master(8), for the tests that run this crate's examples as Postfix services.
//!
//! Compiled into every test binary of the crate (as part of `common`), used
//! by those built with the `real-postfix` feature. The configuration is the
//! test kit's (`master_proto_conformance::postfix`); this adds the running
//! master: started in the foreground (`-d`) in its own process group, its
//! stderr (which its children inherit) collected, its log (postlogd's
//! `maillog_file`) read, whether it watches the service's socket read from
//! the kernel, and everything killed however the test ends.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::{Collector, Conversation, TempDir, WAIT, pid_of, poll_until, postfix, try_unix_client};

/// Debian's Postfix master(8).
pub(crate) const MASTER: &str = "/usr/lib/postfix/sbin/master";
/// Where Debian installs Postfix's daemons.
pub(crate) const DAEMONS: &str = "/usr/lib/postfix/sbin";
/// `-e`: the master exits by itself after this long, should the test die
/// without its guard running.
const MASTER_EXIT_TIME: Duration = Duration::from_secs(120);

/// A running private Postfix instance; dropping it kills the master and
/// everything it started, then removes the directory.
pub(crate) struct Instance {
    pub(crate) master: Child,
    /// The master's stderr, which its children inherit with `-d`.
    pub(crate) stderr: Collector<ChildStderr>,
    /// The service under test: its socket relative to the queue directory
    /// (as the master binds it, and as `/proc/net/unix` names it), and its
    /// program's name.
    socket: &'static str,
    comm: &'static str,
    /// Every child of the service seen, to kill should one outlive a
    /// failed test.
    seen: BTreeSet<Proc>,
    /// The instance's directory: removed last, after the processes.
    pub(crate) dir: TempDir,
}

impl Instance {
    /// Writes the configuration and starts the master: `name` for the
    /// directory, `master_cf` (a `postlog` line is added: postlogd writes
    /// `maillog_file`; without it the master logs to syslog, which a CI
    /// machine may not have), `main_cf_extra`, the Postfix daemons to link
    /// into the daemon directory (postlogd is added) and this crate's
    /// examples to copy there; the service under test listens on `socket`
    /// and runs program `comm`.
    pub(crate) fn start(
        name: &str,
        postfix_uid: u32,
        master_cf: &str,
        main_cf_extra: &str,
        daemons: &[&str],
        examples: &[&str],
        (socket, comm): (&'static str, &'static str),
    ) -> Instance {
        let master_cf = format!("{master_cf}postlog   unix-dgram n  -       n       -       1       postlogd\n");
        let main_cf = format!("maillog_file = {{dir}}/maillog\nmaillog_file_prefixes = {{dir}}\n{main_cf_extra}");
        let dir = postfix::private_instance(name, postfix_uid, "{dir}/libexec", &main_cf, Some(&master_cf));
        let d = dir.path();
        std::fs::create_dir(d.join("libexec")).expect("creating libexec");
        for example in examples {
            // A copy, so that a rebuild during the test cannot change it.
            std::fs::copy(super::example(example), d.join("libexec").join(example))
                .expect("copying an example into the daemon directory");
        }
        for daemon in daemons.iter().chain(&["postlogd"]) {
            std::os::unix::fs::symlink(format!("{DAEMONS}/{daemon}"), d.join("libexec").join(daemon))
                .expect("linking a Postfix daemon");
        }

        let mut cmd = Command::new(MASTER);
        cmd.arg("-c")
            .arg(d.join("conf"))
            .arg("-d")
            .arg("-e")
            .arg(MASTER_EXIT_TIME.as_secs().to_string())
            // With -d the master does not become a process group leader,
            // yet on SIGTERM it signals its own process group ("kill
            // process group: No such process" otherwise). Its own group
            // also lets the guard kill everything it started at once.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut master = cmd.spawn().unwrap_or_else(|e| panic!("starting {MASTER}: {e}"));
        let stderr = Collector::new(master.stderr.take());
        Instance { master, stderr, socket, comm, seen: BTreeSet::new(), dir }
    }

    pub(crate) fn master_pid(&self) -> i32 {
        pid_of(&self.master)
    }

    pub(crate) fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.master_pid()), signal)
            .unwrap_or_else(|e| panic!("sending {signal} to the master: {e}"));
    }

    /// Connects a client (`who`) to the service, waiting for its socket
    /// to appear and listen, and failing at once should the master exit.
    pub(crate) fn connect(&mut self, who: &str) -> Conversation<UnixStream> {
        let path = self.dir.path().join("queue").join(self.socket);
        let mut last_error = String::new();
        let mut outcome: Option<Result<UnixStream, String>> = None;
        let master = &mut self.master;
        poll_until(Instant::now() + WAIT, || {
            outcome = match try_unix_client(&path) {
                Ok(stream) => Some(Ok(stream)),
                // Not created, or not listening yet.
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
                    last_error = e.to_string();
                    match master.try_wait() {
                        // Problems found before it reads main.cf go to
                        // syslog only, which a test machine may lack.
                        Ok(Some(status)) => Some(Err(format!(
                            "the master exited ({status}); if its log below is empty, it failed before reading \
                             main.cf and said why only to syslog"
                        ))),
                        Ok(None) => None,
                        Err(e) => Some(Err(format!("try_wait on the master: {e}"))),
                    }
                }
                Err(e) => Some(Err(format!("connecting to {}: {e}", path.display()))),
            };
            outcome.is_some()
        });
        match outcome {
            Some(Ok(stream)) => Conversation::new(stream),
            Some(Err(why)) => panic!("{who} could not connect: {why}\n{}", self.diagnostics()),
            None => panic!(
                "timed out after {WAIT:?} awaiting the service at {} to accept {who} (last: {last_error})\n{}",
                path.display(),
                self.diagnostics()
            ),
        }
    }

    /// The master's children of the service now (exec'd and not reaped).
    pub(crate) fn children(&mut self) -> BTreeSet<Proc> {
        let master = self.master_pid();
        let children: BTreeSet<Proc> = std::fs::read_dir("/proc")
            .expect("listing /proc")
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .filter_map(|pid| Some((pid, stat(pid)?)))
            .filter(|(_, s)| s.ppid == master && s.comm == self.comm)
            .map(|(pid, s)| Proc { pid, start: s.start })
            .collect();
        self.seen.extend(&children);
        children
    }

    /// The master's only child, while `why`.
    pub(crate) fn only_child(&mut self, why: &str) -> Proc {
        let children = self.children();
        match children.iter().collect::<Vec<_>>()[..] {
            [only] => *only,
            _ => panic!(
                "the master should have one child of the service ({why}), has {children:?}\n{}",
                self.diagnostics()
            ),
        }
    }

    /// Waits until the master watches the service's socket for clients
    /// (`true`) or stops (`false`), as it should after `event`.
    pub(crate) fn await_watching(&mut self, watching: bool, event: &str) {
        let (master, socket) = (self.master_pid(), self.socket);
        let mut last = Ok(!watching);
        let reached = poll_until(Instant::now() + WAIT, || {
            last = watches_socket(master, socket);
            last != Ok(!watching)
        });
        match last {
            Ok(now) if reached && now == watching => {}
            Ok(now) => panic!(
                "the master {} the service's socket {WAIT:?} after {event}\n{}",
                if now { "still watches" } else { "does not watch" },
                self.diagnostics()
            ),
            Err(e) => panic!("cannot tell whether the master watches its socket: {e}\n{}", self.diagnostics()),
        }
    }

    /// Waits until `needle` occurs `n` times in the children's stderr, and
    /// checks that it does not occur more often; `what` says what it is.
    pub(crate) fn await_stderr_count(&mut self, needle: &str, n: usize, what: &str) {
        let found = self.stderr.read_until(Instant::now() + WAIT, |text| text.matches(needle).count() >= n);
        let count = self.stderr.text().matches(needle).count();
        assert!(
            found && count == n,
            "awaiting {what}: {needle:?} should occur {n} times within {WAIT:?}, occurs {count} times\n{}",
            self.diagnostics()
        );
    }

    /// The master's log so far.
    pub(crate) fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Waits for `needle` in the master's log, which postlogd writes
    /// asynchronously; `what` says what it is.
    pub(crate) fn await_log(&mut self, needle: &str, what: &str) {
        if !poll_until(Instant::now() + WAIT, || self.maillog().contains(needle)) {
            panic!("timed out after {WAIT:?} awaiting {what} ({needle:?}) in the master's log\n{}", self.diagnostics());
        }
    }

    /// Checks that the master's log reports no problem: a malformed status
    /// update would show as a warning ("partial status update", "ignoring
    /// unknown status") or an ignored update (wrong generation).
    pub(crate) fn assert_clean_log(&mut self, when: &str) {
        let log = self.maillog();
        assert!(
            log.contains("daemon started"),
            "the master's log is empty or foreign ({when})\n{}",
            self.diagnostics()
        );
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| {
                [": warning:", ": error:", ": fatal:", ": panic:", "ignoring status update"]
                    .iter()
                    .any(|m| l.contains(m))
            })
            .collect();
        assert!(bad.is_empty(), "the master's log reports problems ({when}): {bad:#?}\n{}", self.diagnostics());
    }

    /// Checks that no child reported a problem (a failed notify is logged
    /// with -v; a fatal error or warning always).
    pub(crate) fn assert_clean_stderr(&mut self) {
        let text = self.stderr.text();
        let bad: Vec<&str> =
            text.lines().filter(|l| [": warning:", ": fatal:", ": notify "].iter().any(|m| l.contains(m))).collect();
        assert!(bad.is_empty(), "the children report problems: {bad:#?}\n{}", self.diagnostics());
    }

    /// What the children logged so far and the master's log, for a failure
    /// message.
    pub(crate) fn diagnostics(&mut self) -> String {
        self.stderr.read_to_eof(Instant::now());
        format!(
            "--- children's stderr:\n{}--- master's log ({}):\n{}",
            self.stderr.text(),
            self.dir.path().join("maillog").display(),
            self.maillog()
        )
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // The master's process group holds it, its children and postlogd.
        // SIGKILL stops them all at once, and the master cannot try to
        // pass it on. Only while the master is unreaped is its pid, and so
        // the group's id, certainly still ours.
        if let Ok(None) = self.master.try_wait() {
            let _ = killpg(Pid::from_raw(self.master_pid()), Signal::SIGKILL);
            let _ = self.master.wait();
        }
        for child in &self.seen {
            if child.is_running() {
                let _ = kill(Pid::from_raw(child.pid), Signal::SIGKILL);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Processes, as /proc shows them.

/// One process: a pid and its start time, which together name it even if
/// the pid is reused later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Proc {
    pub(crate) pid: i32,
    /// Clock ticks after boot (`/proc/<pid>/stat`, field 22).
    start: u64,
}

impl Proc {
    /// Whether it still has an entry in /proc (running, or exited and not
    /// yet reaped by its parent).
    pub(crate) fn is_present(self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start)
    }

    /// Whether it is still running (present and not a zombie). A child
    /// orphaned by the master is reaped by init, which may take its time.
    pub(crate) fn is_running(self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && s.state != 'Z')
    }
}

/// What the test needs of `/proc/<pid>/stat`.
struct Stat {
    comm: String,
    state: char,
    ppid: i32,
    start: u64,
}

/// `/proc/<pid>/stat`, or `None` if there is no such process.
fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain them.
    let (head, tail) = text.rsplit_once(')')?;
    let (_, comm) = head.split_once('(')?;
    let fields: Vec<&str> = tail.split_whitespace().collect();
    // Fields counted from 1, the pid; `tail` starts at field 3, the state.
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        comm: comm.to_owned(),
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        start: field(22)?.parse().ok()?,
    })
}

/// Whether the master's epoll set holds the service's listening socket:
/// whether it watches for a client to spawn a child for.
fn watches_socket(master: i32, socket: &str) -> Result<bool, String> {
    // The listening socket by inode: /proc/net/unix lists it under the
    // path the master bound, relative to its queue directory.
    let table = std::fs::read_to_string("/proc/net/unix").map_err(|e| format!("/proc/net/unix: {e}"))?;
    let listening: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode Path
            let f: Vec<&str> = line.split_whitespace().collect();
            let accepting = f.get(3) == Some(&"00010000");
            let inode = f.get(6)?;
            (accepting && f.get(7) == Some(&socket)).then(|| format!("socket:[{inode}]"))
        })
        .collect();
    let fd_dir = format!("/proc/{master}/fd");
    let mut socket_fd = None;
    let mut epoll_fds = Vec::new();
    for entry in std::fs::read_dir(&fd_dir).map_err(|e| format!("{fd_dir}: {e}"))?.flatten() {
        // Descriptors come and go while the master spawns: skip those gone.
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        let target = target.to_string_lossy();
        let fd = entry.file_name().to_string_lossy().into_owned();
        if target == "anon_inode:[eventpoll]" {
            epoll_fds.push(fd);
        } else if listening.iter().any(|l| *l == target) {
            socket_fd = Some(fd);
        }
    }
    let socket_fd = socket_fd.ok_or_else(|| format!("the master holds no listening socket {socket}"))?;
    let [epoll_fd] = &epoll_fds[..] else {
        return Err(format!("the master should have one epoll instance, has {}", epoll_fds.len()));
    };
    let info_path = format!("/proc/{master}/fdinfo/{epoll_fd}");
    let info = std::fs::read_to_string(&info_path).map_err(|e| format!("{info_path}: {e}"))?;
    // One line per watched descriptor: "tfd: <fd> events: ...".
    Ok(info.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.next() == Some("tfd:") && f.next() == Some(socket_fd.as_str())
    }))
}
