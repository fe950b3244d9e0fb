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
//! k lines, which tells the clients apart). Each log line is one write(2),
//! yet the test still lets one child log at a time (the order of the lines
//! of two children is not defined), except when both exit on the reload,
//! where it counts instead.
//!
//! Every wait is bounded by [`WAIT`] and says what it awaited; the master
//! and everything it started are killed, and the directory removed, however
//! the test ends.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::time::Instant;

use common::real::{DAEMONS, Instance, MASTER};
use common::{WAIT, poll_until};
use nix::sys::signal::Signal;

/// What to do without root or without Postfix.
const HOW_TO_RUN: &str = "this test runs a real Postfix master(8): it needs Debian's postfix package \
     (`DEBIAN_FRONTEND=noninteractive apt-get install -y postfix`, as .ci/run does) and root \
     (`cargo test -p master-proto-daemon --features real-postfix --test real_postfix` as root)";

#[test]
fn postfix_echo_runs_under_a_real_postfix_master() {
    let postfix_uid = common::postfix::preflight(&[MASTER, &format!("{DAEMONS}/postlogd")], HOW_TO_RUN);
    // A UNIX-domain service: no port to race for.
    let master_cf = "echo      unix  -       n       n       -       2       postfix_echo -v\n";
    let service = ("private/echo", "postfix_echo");
    let mut pf = Instance::start("real_postfix-test", postfix_uid, master_cf, "", &[], &["postfix_echo"], service);

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
    let both = pf.children();
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
    let third = served_by(&mut pf, 3);
    c2.finish("");
    let served = [served_by(&mut pf, 1), served_by(&mut pf, 2), third];
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
    assert_eq!(served_by(&mut pf, 4), c.pid, "client 4's server\n{}", pf.diagnostics());
    assert_eq!(pf.children(), BTreeSet::from([c]), "the master spawned no other child\n{}", pf.diagnostics());

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
// The echo children's log lines.

/// The pid of the child that logged serving the client that sent
/// `lines` lines; waits for that line.
fn served_by(pf: &mut Instance, lines: u64) -> i32 {
    let deadline = Instant::now() + WAIT;
    let found = pf.stderr.read_until(deadline, |text| served(text).iter().any(|s| s.lines == lines));
    if !found {
        panic!("timed out after {WAIT:?} awaiting the log line of the client with {lines} lines\n{}", pf.diagnostics());
    }
    let text = pf.stderr.text();
    let matching: Vec<Served> = served(&text).into_iter().filter(|s| s.lines == lines).collect();
    match matching[..] {
        [Served { pid, done: true, .. }] => pid,
        _ => panic!("one clean serving of the client with {lines} lines expected: {matching:?}\n{}", pf.diagnostics()),
    }
}

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
