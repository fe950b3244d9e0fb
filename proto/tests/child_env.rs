//! The standard environment end to end: installed by the master into a real
//! child, read back by the child, and the child's diagnostics when it is
//! incomplete.
//!
//! The child is this test binary, re-executed with only the same test
//! selected and `ROLE` set; it prints what it found on stdout.

#![allow(unsafe_code)] // Safety: taking ownership of descriptors made or installed for the test.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use master_proto::env::{ChildEnd, ChildEnv, ChildFds, InstallError};

const ROLE: &str = "CHILD_ENV_TEST_ROLE";
/// Tells the child role to read the descriptor at this number too.
const FIXED: &str = "CHILD_ENV_TEST_FIXED";

/// In a re-executed child: report what `ChildEnv::from_process` says, with
/// the bytes found behind each descriptor, and exit.
fn child_role() {
    if std::env::var_os(ROLE).is_none() {
        return;
    }
    let report = match ChildEnv::from_process() {
        Ok(mut env) => {
            // A second claim in one process is refused.
            assert_eq!(ChildEnv::from_process().map(|_| ()), Err(master_proto::EnvError::AlreadyClaimed));
            let status = env.take_status().expect("fd 5");
            let aux = env.take_aux("extra").map(read_all);
            let listen: Vec<String> = env.take_listen().into_iter().map(read_all).collect();
            let fixed = match std::env::var(FIXED) {
                // SAFETY: the master installed a descriptor at this number
                // for this test alone; nothing else in the process owns it.
                Ok(n) => format!(" fixed={}", read_all(unsafe { OwnedFd::from_raw_fd(n.parse().expect("fd")) })),
                Err(_) => String::new(),
            };
            format!(
                "ok gen={:o} pid_ok={} status={} listen={listen:?} aux={aux:?}{fixed}",
                env.generation,
                env.pid == i32::try_from(std::process::id()).expect("pid"),
                read_all(status),
            )
        }
        Err(e) => format!("err {e:?}"),
    };
    println!("{report}");
    std::process::exit(0);
}

fn read_all(fd: OwnedFd) -> String {
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s).expect("read");
    s
}

/// A pipe whose read end the child gets, with `text` already in it.
fn pipe_with(text: &str) -> OwnedFd {
    let (r, mut w) = std::io::pipe().expect("pipe");
    std::io::Write::write_all(&mut w, text.as_bytes()).expect("write");
    r.into()
}

fn run(test: &str, setup: impl FnOnce(&mut Command)) -> String {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE, "1")
        .env_remove("GENERATION")
        .env_remove("MASTER_LISTEN_FDS")
        .env_remove("MASTER_STATUS_AUX")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    setup(&mut cmd);
    let out = cmd.output().expect("run the child");
    assert!(out.status.success(), "child failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.lines().find(|l| l.starts_with("ok ") || l.starts_with("err ")).expect("a report line").to_owned()
}

/// `fd` moved to a number at least `min`, clear of the standard ones.
fn above(fd: OwnedFd, min: i32) -> OwnedFd {
    use nix::fcntl::{FcntlArg, fcntl};
    let raw = fcntl(fd.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(min)).expect("dup");
    // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor, which
    // nothing else owns.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

fn end(status: OwnedFd, aux: Vec<(&'static str, OwnedFd)>) -> ChildEnd {
    ChildEnd { transport: "test", status, aux }
}

#[test]
fn installed_environment_reads_back_in_the_child() {
    child_role();
    let report = run("installed_environment_reads_back_in_the_child", |cmd| {
        ChildFds::new(end(pipe_with("five"), vec![("extra", pipe_with("aux"))]), 0o4711)
            .listen(pipe_with("six"))
            .listen(pipe_with("seven"))
            .install(cmd)
            .expect("install");
    });
    assert_eq!(report, r#"ok gen=4711 pid_ok=true status=five listen=["six", "seven"] aux=Ok("aux")"#);
}

#[test]
fn missing_generation_is_reported() {
    child_role();
    let report = run("missing_generation_is_reported", |_| {});
    assert_eq!(report, "err NoGeneration");
}

#[test]
fn generation_that_is_not_octal_is_reported() {
    child_role();
    let report = run("generation_that_is_not_octal_is_reported", |cmd| {
        cmd.env("GENERATION", "129");
    });
    assert_eq!(report, r#"err BadGeneration("129")"#);
}

#[test]
fn missing_fd_5_is_reported() {
    child_role();
    let report = run("missing_fd_5_is_reported", |cmd| {
        cmd.env("GENERATION", "1").env("MASTER_LISTEN_FDS", "0");
    });
    assert_eq!(report, "err MissingFd(5)");
}

#[test]
fn missing_listen_fd_is_reported() {
    child_role();
    let report = run("missing_listen_fd_is_reported", |cmd| {
        ChildFds::new(end(pipe_with("five"), vec![]), 1).install(cmd).expect("install");
        // The master installed no listen socket but the variable claims two.
        cmd.env("MASTER_LISTEN_FDS", "2");
    });
    assert_eq!(report, "err MissingFd(6)");
}

/// A descriptor that sits where another must go (Postfix's "file descriptor
/// collision") is moved out of the way before the moves, not clobbered.
#[test]
fn colliding_descriptor_is_moved_out_of_the_way() {
    child_role();
    let report = run("colliding_descriptor_is_moved_out_of_the_way", |cmd| {
        // `keep` is to go to fd 40, but sits at the very number where
        // `clobber` is to go first: installing must move `keep` before
        // that number is overwritten.
        let keep = above(pipe_with("kept"), 20);
        let at = keep.as_raw_fd();
        ChildFds::new(end(pipe_with("five"), vec![]), 3)
            .fixed(at, pipe_with("clobber"))
            .fixed(40, keep)
            .install(cmd)
            .expect("install");
        cmd.env("MASTER_LISTEN_FDS", "0").env(FIXED, "40");
    });
    assert_eq!(report, r#"ok gen=3 pid_ok=true status=five listen=[] aux=Err(MissingAux("extra")) fixed=kept"#);
}

#[test]
fn two_descriptors_at_one_number_are_refused() {
    let mut cmd = Command::new("true");
    let err = ChildFds::new(end(pipe_with(""), vec![]), 1).fixed(5, pipe_with("")).install(&mut cmd);
    assert_eq!(err, Err(InstallError::Overlap { target: 5 }));
}
