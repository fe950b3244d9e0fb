//! Byte-exactness of the duplex transport with Postfix's C `MASTER_STATUS` struct, checked against C code compiled at test time.
//!
//! Two tiny C programs, built with the system C compiler (`$CC`, else `cc`)
//! into a temporary directory, play the two Postfix roles:
//!
//! - `notify` does what Postfix's `master_notify()` does: it writes the
//!   struct `{ int pid; unsigned gen; int avail; }` filled with `getpid()`,
//!   `GENERATION` read in octal, and each status given as an argument to
//!   fd 5, one `write(2)` per record. Run under a [`Duplex`] channel, the
//!   master's [`StatusSource`] must decode exactly those updates.
//! - `reader` does what `master_status_event()` does: it `read(2)`s
//!   `sizeof(stat)` bytes at a time from its standard input and prints
//!   `pid gen avail` per record. Fed by a [`DuplexSink`] through a
//!   socketpair, it must print exactly what was sent, extreme values
//!   included.
//!
//! Both print `sizeof(MASTER_STATUS)`, which must be [`WIRE_SIZE`].

mod common;

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Collector, TempDir, poll_timeout};
use master_proto::{ChildFds, Received, Status, StatusSink, StatusSource, StatusUpdate, Transport, WIRE_SIZE};
use master_proto_pipe::{Duplex, DuplexSink};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

/// The bound on every wait here: longer than the shared [`common::WAIT`],
/// since it covers compiling C on a loaded CI machine.
const WAIT: Duration = Duration::from_secs(60);

/// Postfix's `master_proto.h` struct and `master_notify()`, writing one
/// record per status argument.
const NOTIFY_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MASTER_STATUS_FD 5

typedef struct {
    int     pid;
    unsigned gen;
    int     avail;
} MASTER_STATUS;

static int master_notify(int pid, unsigned generation, int status)
{
    MASTER_STATUS stat;

    stat.pid = pid;
    stat.gen = generation;
    stat.avail = status;
    if (write(MASTER_STATUS_FD, (void *) &stat, sizeof(stat)) != sizeof(stat))
        return (-1);
    return (0);
}

int main(int argc, char **argv)
{
    const char *generation = getenv("GENERATION");
    unsigned gen;
    int i;

    if (generation == 0) {
        fprintf(stderr, "GENERATION is not set\n");
        return (3);
    }
    gen = strtoul(generation, 0, 8);
    for (i = 1; i < argc; i++) {
        if (master_notify(getpid(), gen, atoi(argv[i])) < 0) {
            perror("master_notify");
            return (4);
        }
    }
    printf("sizeof %lu\npid %d\n", (unsigned long) sizeof(MASTER_STATUS), (int) getpid());
    return (0);
}
"#;

/// Postfix's reading of one record, as in `master_status_event()`, on
/// standard input until EOF.
const READER_C: &str = r#"
#include <stdio.h>
#include <unistd.h>

typedef struct {
    int     pid;
    unsigned gen;
    int     avail;
} MASTER_STATUS;

int main(void)
{
    MASTER_STATUS stat;
    ssize_t n;

    printf("sizeof %lu\n", (unsigned long) sizeof(stat));
    while ((n = read(0, (void *) &stat, sizeof(stat))) != 0) {
        if (n < 0) {
            perror("read");
            return (1);
        }
        if (n != sizeof(stat)) {
            printf("partial %ld\n", (long) n);
            continue;
        }
        printf("%d %u %d\n", stat.pid, stat.gen, stat.avail);
    }
    return (0);
}
"#;

// ---------------------------------------------------------------------------
// Bounded waiting and running.

/// What a finished child printed, and how it ended.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// A running child whose stdout and stderr are collected; killed and
/// reaped if the test ends early.
struct Running {
    child: Child,
    what: String,
}

impl Running {
    /// Spawns `cmd` with its stdout and stderr piped to the test.
    fn spawn(mut cmd: Command, what: &str) -> io::Result<Running> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn()?;
        // Dropping `cmd` closes the test's copies of the child's fds.
        drop(cmd);
        Ok(Running { child, what: what.to_owned() })
    }

    fn start(cmd: Command, what: &str) -> Running {
        Running::spawn(cmd, what).unwrap_or_else(|e| panic!("cannot start {what}: {e}"))
    }

    /// Collects stdout and stderr until both reach EOF, then reaps the
    /// child; all within [`WAIT`].
    fn finish(mut self) -> Finished {
        let deadline = Instant::now() + WAIT;
        let mut out = Collector::new(self.child.stdout.take());
        let mut err = Collector::new(self.child.stderr.take());
        while !(out.is_eof() && err.is_eof()) {
            let mut fds: Vec<PollFd<'_>> =
                [out.fd(), err.fd()].into_iter().flatten().map(|fd| PollFd::new(fd, PollFlags::POLLIN)).collect();
            let left = deadline.saturating_duration_since(Instant::now());
            match poll(&mut fds, poll_timeout(left)) {
                Ok(0) => panic!(
                    "timed out after {WAIT:?} awaiting the end of {}; stdout so far: {:?}, stderr: {:?}",
                    self.what,
                    out.text(),
                    err.text()
                ),
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => panic!("poll: {e}"),
            }
            drop(fds);
            // Reading a pipe that poll did not report blocks: read only the
            // ready ones, checked again with a zero timeout.
            out.read_if_ready();
            err.read_if_ready();
        }
        let Some(status) = common::try_wait_until(&mut self.child, deadline) else {
            panic!("{} closed its output but was not reaped within {WAIT:?}", self.what)
        };
        Finished { status, stdout: out.text(), stderr: err.text() }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        common::kill_and_reap(&mut self.child);
    }
}

/// Compiles `source` into `dir/name` with the system C compiler.
fn compile(dir: &Path, name: &str, source: &str) -> PathBuf {
    let c_file = dir.join(format!("{name}.c"));
    let exe = dir.join(name);
    std::fs::write(&c_file, source).unwrap_or_else(|e| panic!("writing {}: {e}", c_file.display()));
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let mut cmd = Command::new(&cc);
    cmd.arg("-std=c99")
        .arg("-D_POSIX_C_SOURCE=200809L")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-o")
        .arg(&exe)
        .arg(&c_file)
        .stdin(Stdio::null());
    let cc_name = cc.to_string_lossy().into_owned();
    let compiler = match Running::spawn(cmd, &format!("`{cc_name}` compiling {name}.c")) {
        Ok(compiler) => compiler,
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "no C compiler: `{cc_name}` is not on PATH. This test compiles C code that mirrors Postfix's \
             master_notify(); install one (CI installs gcc), or point $CC at one"
        ),
        Err(e) => panic!("cannot run the C compiler `{cc_name}`: {e}"),
    };
    let done = compiler.finish();
    assert!(done.status.success(), "`{cc_name}` failed on {name}.c ({}):\n{}{}", done.status, done.stdout, done.stderr);
    exe
}

/// The value of the line `key <value>` that a C program printed.
fn printed<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("the C program printed no {key:?} line: {stdout:?}"))
}

// ---------------------------------------------------------------------------
// Cases.

/// Runs the C `notify` child under a [`Duplex`] channel with `generation`
/// and the given statuses; checks what the master's source decodes.
fn c_child_notifies(notify: &Path, generation: u32, statuses: &[i32]) {
    let mut source = Duplex.open().expect("open a duplex channel");
    let end = Duplex.child_end(&mut source, generation).expect("child end");
    let mut cmd = Command::new(notify);
    cmd.args(statuses.iter().map(i32::to_string)).stdin(Stdio::null());
    ChildFds::new(end, generation).install(&mut cmd).expect("install the standard environment");
    let child = Running::start(cmd, "the C master_notify() child");
    let pid = common::pid_of(&child.child);
    let done = child.finish();
    assert_eq!(done.status.code(), Some(0), "the C child failed ({}); stderr: {}", done.status, done.stderr);
    assert_eq!(printed(&done.stdout, "sizeof"), WIRE_SIZE.to_string(), "sizeof(MASTER_STATUS) in C");
    assert_eq!(printed(&done.stdout, "pid"), pid.to_string(), "the pid the C child reports");

    // The child has exited, so all its records are queued already.
    let mut got = Vec::new();
    while let Some(item) = source.try_recv().expect("try_recv") {
        match item {
            Received::Update { update, .. } => got.push(update),
            Received::Malformed(m) => panic!("the C child's records decoded as malformed input: {m}"),
        }
    }
    let expected: Vec<StatusUpdate> =
        statuses.iter().map(|&s| StatusUpdate { pid, generation, status: Status(s) }).collect();
    assert_eq!(got, expected, "the updates a C master_notify() child sent (GENERATION {generation:o})");
}

#[test]
fn records_from_a_c_master_notify_child_decode_exactly() {
    let dir = TempDir::new("postfix_wire-test");
    let notify = compile(dir.path(), "notify", NOTIFY_C);
    let statuses = [0, 1, 7, 0, -1, i32::MAX, i32::MIN, 1];
    c_child_notifies(&notify, 0o1234567, &statuses);
    c_child_notifies(&notify, 0, &[1, 0]);
    c_child_notifies(&notify, u32::MAX, &[0, 1, 2]);
}

#[test]
fn a_c_master_status_reader_reads_our_records_exactly() {
    let dir = TempDir::new("postfix_wire-test");
    let reader = compile(dir.path(), "reader", READER_C);
    let (ours, theirs): (OwnedFd, OwnedFd) =
        socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC).expect("socketpair");

    let mut cmd = Command::new(reader);
    cmd.stdin(Stdio::from(theirs));
    let child = Running::start(cmd, "the C master_status_event() reader");

    let sent = [
        (-5, u32::MAX, Status(7)),
        (i32::MIN, 0, Status::TAKEN),
        (i32::MAX, 1, Status::AVAIL),
        (12345, 0o1234567, Status(-1)),
        (-1, 0x8000_0000, Status(i32::MIN)),
        (1, 0xdead_beef, Status(i32::MAX)),
    ];
    for (pid, generation, status) in sent {
        let fd = ours.try_clone().expect("dup our end");
        DuplexSink::new(fd, pid, generation)
            .notify(status)
            .unwrap_or_else(|e| panic!("notify {status} as pid {pid}: {e}"));
    }
    // EOF for the reader: close every copy of our end.
    drop(ours);

    let done = child.finish();
    assert_eq!(done.status.code(), Some(0), "the C reader failed ({}); stderr: {}", done.status, done.stderr);
    let mut lines = done.stdout.lines();
    assert_eq!(
        lines.next(),
        Some(format!("sizeof {WIRE_SIZE}").as_str()),
        "sizeof(MASTER_STATUS) in C; stdout: {:?}",
        done.stdout
    );
    let records: Vec<&str> = lines.collect();
    let expected: Vec<String> =
        sent.iter().map(|(pid, generation, status)| format!("{pid} {generation} {}", status.0)).collect();
    assert_eq!(records, expected, "what the C reader decoded from our records");
}
