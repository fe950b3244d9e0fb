//! The `postfix_echo` example under a real Postfix master(8), which must see its TAKEN and AVAIL as Postfix's own daemons send them.
//!
//! Built only with the `real-postfix` feature: it needs root and Debian's
//! `postfix` package (`/usr/lib/postfix/sbin/master`), and fails at once,
//! saying so, without them. Run it with
//!
//! ```text
//! cargo test -p master-proto-daemon --features real-postfix --test real_postfix
//! ```
//!
//! after a `cargo test -p master-proto-daemon` (or `cargo build -p master-proto-daemon --examples`) has built
//! the example: cargo builds no examples for a single named test target.
//!
//! The test sets up a private Postfix instance in a temporary directory (its
//! own `main.cf`, `master.cf`, queue, data and daemon directories, and log
//! file, so a system Postfix is neither read nor disturbed) with one
//! service, `echo`, on the UNIX-domain socket `private/echo`: the example,
//! with a process limit of 2. It starts the master in the foreground (`-d`)
//! and plays its clients:
//!
//! 1. TAKEN: client 1 is served and held open, so its child is busy. The
//!    master must then watch the socket again, and serve client 2 by
//!    spawning a second child: it spawns only when it counts no idle child,
//!    so only if it read the first child's TAKEN.
//! 2. AVAIL: with both children busy (the limit), client 3 waits; closing
//!    client 1 frees its child, which serves client 3.
//! 3. Reload: SIGHUP (`postfix reload`) closes the status channel, both
//!    idle children log `master disconnect` and are reaped, and the next
//!    client gets a new child. While that child serves, the master watches
//!    the socket; after its AVAIL it stops, counting the child idle.
//! 4. The master's log shows no warning, error, fatal or panic, nor an
//!    ignored status update.
//! 5. SIGTERM: the master passes it on to its children and exits; all of
//!    them are gone.
//!
//! Whether the master watches the socket is its own account of its
//! children (it watches exactly when none is idle and the limit allows
//! another): the test reads it from the kernel, as whether the master's
//! epoll set holds the socket (`/proc/<pid>/fdinfo`). The children log
//! with `-v` to the master's stderr, which the test collects: one line per
//! client, with its pid and the number of lines it echoed (client k sends
//! k lines, which tells the clients apart). The example writes a line in
//! several write(2) calls, so the lines of two children that log at once
//! may interleave in that shared pipe: the test lets one child log at a
//! time, except when both exit on the reload, where it counts instead.
//!
//! Every wait is bounded by [`WAIT`] and says what it awaited; the master
//! and everything it started are killed, and the directory removed, however
//! the test ends.

mod common;

use std::collections::BTreeSet;
use std::io;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Collector, Conversation, TempDir, WAIT, poll_until};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Debian's Postfix master(8).
const MASTER: &str = "/usr/lib/postfix/sbin/master";
/// Debian's postlogd(8), which writes the master's log to a file.
const POSTLOGD: &str = "/usr/lib/postfix/sbin/postlogd";
/// The echo service's socket, relative to the queue directory (as the
/// master binds it, and as `/proc/net/unix` names it).
const SERVICE_SOCKET: &str = "private/echo";
/// `-e`: the master exits by itself after this long, should the test die
/// without its guard running.
const MASTER_EXIT_TIME: Duration = Duration::from_secs(120);
/// What to do without root or without Postfix.
const HOW_TO_RUN: &str = "this test runs a real Postfix master(8): it needs Debian's postfix package \
     (`DEBIAN_FRONTEND=noninteractive apt-get install -y postfix`, as .ci/run does) and root \
     (`cargo test -p master-proto-daemon --features real-postfix --test real_postfix` as root)";

#[test]
fn postfix_echo_runs_under_a_real_postfix_master() {
    let postfix_uid = common::postfix::preflight(&[MASTER, POSTLOGD], HOW_TO_RUN);
    let mut pf = Instance::start(postfix_uid);

    // 1. TAKEN: the second client is served only by a second child, which
    //    the master spawns only once it has read the first child's TAKEN.
    let mut c1 = pf.connect("client 1");
    c1.echo("client 1, line 1");
    let a = pf.only_child("client 1 is being served");
    pf.await_watching(true, "client 1's child's TAKEN (no child is idle, and the process limit allows another)");
    let mut c2 = pf.connect("client 2");
    c2.send("client 2, line 1");
    assert!(
        c2.answers_within(WAIT),
        "client 2 was not served within {WAIT:?} while client 1 held the first child: the master did not spawn a \
         second child, so it did not take the first child's TAKEN\n{}",
        pf.diagnostics()
    );
    c2.expect_echo("client 2, line 1");
    c2.echo("client 2, line 2");
    let both = pf.echo_children();
    assert!(
        both.len() == 2 && both.contains(&a),
        "two children, the first one {a:?} among them, should serve clients 1 and 2: {both:?}\n{}",
        pf.diagnostics()
    );
    let b = *both.iter().find(|p| **p != a).expect("a second child");

    // 2. AVAIL: with both children busy, client 3 waits until client 1
    //    leaves and its child is free again.
    let mut c3 = pf.connect("client 3");
    c3.send("client 3, line 1");
    c1.finish("");
    assert!(
        c3.answers_within(WAIT),
        "client 3 was not served within {WAIT:?} after client 1 left\n{}",
        pf.diagnostics()
    );
    c3.expect_echo("client 3, line 1");
    c3.echo("client 3, line 2");
    c3.echo("client 3, line 3");
    // One child logs at a time (see the module docs): await each client's
    // log line before closing the next.
    c3.finish("");
    let third = pf.served_by(3);
    c2.finish("");
    let served = [pf.served_by(1), pf.served_by(2), third];
    assert_eq!(
        served,
        [a.pid, b.pid, a.pid],
        "clients 1, 2, 3 should be served by the first child, the second, and the first again once free\n{}",
        pf.diagnostics()
    );

    // 3. Reload: the master closes the old status channel; the idle
    //    children see it and exit, and a new child serves the next client.
    pf.signal(Signal::SIGHUP);
    // Both exit at once, so their log lines may interleave: count the
    // reason (one write of its own), which only they can log now, rather
    // than parse their lines.
    pf.await_stderr_count("master disconnect", 2, "the two old children's exits after the reload");
    assert!(
        poll_until(Instant::now() + WAIT, || !a.is_present() && !b.is_present()),
        "the old children {a:?} and {b:?} were not reaped within {WAIT:?} after the reload\n{}",
        pf.diagnostics()
    );
    pf.await_log("reload -- version", "the master's note of the reload");
    let mut c4 = pf.connect("client 4");
    for line in 1..=4 {
        c4.echo(&format!("client 4, line {line}"));
    }
    let c = pf.only_child("client 4 is being served after the reload");
    assert!(
        ![a.pid, b.pid].contains(&c.pid),
        "client 4 should be served by a new child, not {c:?}\n{}",
        pf.diagnostics()
    );
    pf.await_watching(true, "the new child's TAKEN (no child is idle, and the process limit allows another)");
    c4.finish("");
    pf.await_watching(false, "the new child's AVAIL (its only child is idle)");
    assert_eq!(pf.served_by(4), c.pid, "client 4's server\n{}", pf.diagnostics());
    assert_eq!(pf.echo_children(), BTreeSet::from([c]), "the master spawned no other child\n{}", pf.diagnostics());

    // 4. Nothing went wrong in the master's eyes. The reload's note above
    //    shows that the log is written and current.
    pf.assert_clean_log("after the reload");

    // 5. SIGTERM: the master passes it on to its process group and exits.
    pf.signal(Signal::SIGTERM);
    let status = common::try_wait_until(&mut pf.master, Instant::now() + WAIT);
    let status = status.unwrap_or_else(|| panic!("the master did not exit within {WAIT:?} of SIGTERM"));
    assert_eq!(
        status.signal().map(Signal::try_from),
        Some(Ok(Signal::SIGTERM)),
        "the master should end by its own SIGTERM after passing it on, got {status}\n{}",
        pf.diagnostics()
    );
    // Every process that inherited the master's stderr (its children,
    // postlogd) has closed it: they are all gone.
    assert!(
        pf.stderr.read_to_eof(Instant::now() + WAIT),
        "processes started by the master still hold its stderr {WAIT:?} after it exited\n{}",
        pf.diagnostics()
    );
    assert!(!c.is_running(), "the last child {c:?} outlived the master\n{}", pf.diagnostics());
    // postlogd dies with the master and may miss what the master sent
    // last; what it wrote must still be clean.
    pf.assert_clean_log("after the shutdown");
    pf.assert_clean_stderr();
}

// ---------------------------------------------------------------------------
// The private Postfix instance.

/// A running private Postfix instance; dropping it kills the master and
/// everything it started, then removes the directory.
struct Instance {
    master: Child,
    /// The master's stderr, which its children inherit with `-d`.
    stderr: Collector<ChildStderr>,
    /// Every echo child seen, to kill should one outlive a failed test.
    seen: BTreeSet<Proc>,
    /// The instance's directory: removed last, after the processes.
    dir: TempDir,
}

impl Instance {
    /// Writes the configuration and starts the master.
    fn start(postfix_uid: u32) -> Instance {
        // A UNIX-domain service: no port to race for. postlogd writes
        // maillog_file; without it the master logs to syslog, which a CI
        // machine may not have.
        let master_cf = "echo      unix  -       n       n       -       2       postfix_echo -v\n\
                         postlog   unix-dgram n  -       n       -       1       postlogd\n";
        let dir = common::postfix::private_instance(
            "real_postfix-test",
            postfix_uid,
            "{dir}/libexec",
            "maillog_file = {dir}/maillog\nmaillog_file_prefixes = {dir}\n",
            Some(master_cf),
        );
        let d = dir.path();
        std::fs::create_dir(d.join("libexec")).expect("creating libexec");
        // A copy, so that a rebuild during the test cannot change it.
        std::fs::copy(common::example("postfix_echo"), d.join("libexec/postfix_echo"))
            .expect("copying the example into the daemon directory");
        std::os::unix::fs::symlink(POSTLOGD, d.join("libexec/postlogd")).expect("linking postlogd");

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
        Instance { master, stderr, seen: BTreeSet::new(), dir }
    }

    fn master_pid(&self) -> i32 {
        common::pid_of(&self.master)
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.master_pid()), signal)
            .unwrap_or_else(|e| panic!("sending {signal} to the master: {e}"));
    }

    /// Connects a client (`who`), waiting for the service's socket to
    /// appear and listen, and failing at once should the master exit.
    fn connect(&mut self, who: &str) -> Conversation<UnixStream> {
        let path = self.dir.path().join("queue").join(SERVICE_SOCKET);
        let mut last_error = String::new();
        let mut outcome: Option<Result<UnixStream, String>> = None;
        let master = &mut self.master;
        poll_until(Instant::now() + WAIT, || {
            outcome = match common::try_unix_client(&path) {
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
                "timed out after {WAIT:?} awaiting the echo service at {} to accept {who} (last: {last_error})\n{}",
                path.display(),
                self.diagnostics()
            ),
        }
    }

    /// The master's postfix_echo children now (exec'd and not reaped).
    fn echo_children(&mut self) -> BTreeSet<Proc> {
        let master = self.master_pid();
        let children: BTreeSet<Proc> = std::fs::read_dir("/proc")
            .expect("listing /proc")
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .filter_map(|pid| Some((pid, stat(pid)?)))
            .filter(|(_, s)| s.ppid == master && s.comm == "postfix_echo")
            .map(|(pid, s)| Proc { pid, start: s.start })
            .collect();
        self.seen.extend(&children);
        children
    }

    /// The master's only child, while `why`.
    fn only_child(&mut self, why: &str) -> Proc {
        let children = self.echo_children();
        match children.iter().collect::<Vec<_>>()[..] {
            [only] => *only,
            _ => panic!("the master should have one echo child ({why}), has {children:?}\n{}", self.diagnostics()),
        }
    }

    /// Waits until the master watches the service's socket for clients
    /// (`true`) or stops (`false`), as it should after `event`.
    fn await_watching(&mut self, watching: bool, event: &str) {
        let master = self.master_pid();
        let mut last = Ok(!watching);
        let reached = poll_until(Instant::now() + WAIT, || {
            last = watches_socket(master);
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
    fn await_stderr_count(&mut self, needle: &str, n: usize, what: &str) {
        let found = self.stderr.read_until(Instant::now() + WAIT, |text| text.matches(needle).count() >= n);
        let count = self.stderr.text().matches(needle).count();
        assert!(
            found && count == n,
            "awaiting {what}: {needle:?} should occur {n} times within {WAIT:?}, occurs {count} times\n{}",
            self.diagnostics()
        );
    }

    /// The pid of the child that logged serving the client that sent
    /// `lines` lines; waits for that line.
    fn served_by(&mut self, lines: u64) -> i32 {
        let deadline = Instant::now() + WAIT;
        let found = self.stderr.read_until(deadline, |text| served(text).iter().any(|s| s.lines == lines));
        if !found {
            panic!(
                "timed out after {WAIT:?} awaiting the log line of the client with {lines} lines\n{}",
                self.diagnostics()
            );
        }
        let text = self.stderr.text();
        let matching: Vec<Served> = served(&text).into_iter().filter(|s| s.lines == lines).collect();
        match matching[..] {
            [Served { pid, done: true, .. }] => pid,
            _ => panic!(
                "one clean serving of the client with {lines} lines expected: {matching:?}\n{}",
                self.diagnostics()
            ),
        }
    }

    /// The master's log so far.
    fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Waits for `needle` in the master's log, which postlogd writes
    /// asynchronously; `what` says what it is.
    fn await_log(&mut self, needle: &str, what: &str) {
        if !poll_until(Instant::now() + WAIT, || self.maillog().contains(needle)) {
            panic!("timed out after {WAIT:?} awaiting {what} ({needle:?}) in the master's log\n{}", self.diagnostics());
        }
    }

    /// Checks that the master's log reports no problem: a malformed status
    /// update would show as a warning ("partial status update", "ignoring
    /// unknown status") or an ignored update (wrong generation).
    fn assert_clean_log(&mut self, when: &str) {
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
    fn assert_clean_stderr(&mut self) {
        let text = self.stderr.text();
        let bad: Vec<&str> =
            text.lines().filter(|l| [": warning:", ": fatal:", ": notify "].iter().any(|m| l.contains(m))).collect();
        assert!(bad.is_empty(), "the children report problems: {bad:#?}\n{}", self.diagnostics());
    }

    /// What the children logged so far and the master's log, for a failure
    /// message.
    fn diagnostics(&mut self) -> String {
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
struct Proc {
    pid: i32,
    /// Clock ticks after boot (`/proc/<pid>/stat`, field 22).
    start: u64,
}

impl Proc {
    /// Whether it still has an entry in /proc (running, or exited and not
    /// yet reaped by its parent).
    fn is_present(self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start)
    }

    /// Whether it is still running (present and not a zombie). A child
    /// orphaned by the master is reaped by init, which may take its time.
    fn is_running(self) -> bool {
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
fn watches_socket(master: i32) -> Result<bool, String> {
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
            (accepting && f.get(7) == Some(&SERVICE_SOCKET)).then(|| format!("socket:[{inode}]"))
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
    let socket_fd = socket_fd.ok_or_else(|| format!("the master holds no listening socket {SERVICE_SOCKET}"))?;
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

// ---------------------------------------------------------------------------
// The children's log lines.

/// One client a child logged with -v:
/// `postfix_echo[<pid>]: echo: client <n> from local: <lines> lines, <bytes> bytes, <outcome>`.
#[derive(Clone, Copy, Debug)]
struct Served {
    pid: i32,
    lines: u64,
    /// Whether the outcome was `done` (no error).
    done: bool,
}

/// The clients logged in `text`, from complete lines only: a line arrives
/// in pieces.
fn served(text: &str) -> Vec<Served> {
    text.split_inclusive('\n')
        .filter_map(|line| {
            let line = line.strip_suffix('\n')?;
            let rest = line.strip_prefix("postfix_echo[")?;
            let (pid, rest) = rest.split_once("]: echo: client ")?;
            let (_, counts) = rest.split_once(" from local: ")?;
            let (lines, outcome) = counts.split_once(" lines, ")?;
            Some(Served { pid: pid.parse().ok()?, lines: lines.parse().ok()?, done: outcome.ends_with(" bytes, done") })
        })
        .collect()
}
