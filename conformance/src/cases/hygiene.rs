//! Case 11: a child's descriptors are exactly its standard ones.

use std::os::fd::{AsFd, AsRawFd};

use master_proto::env::{MASTER_LISTEN_FD, MASTER_STATUS_FD};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};

use crate::harness::{Ctx, Spawn, await_poke, fail, open_fds, say, shares_open_file};
use crate::hostile::Hostile;

/// Case 11. A child, first thing after `exec`, lists `/proc/self/fd`: it
/// holds exactly 0, 1, 2, 5, its two listen sockets (6, 7) and the
/// auxiliary descriptors its end declared (from 8), nothing else; none of
/// them is the master's end of the channel (`kcmp(2)`) except, for a
/// transport whose [`Hostile::SOURCE_SHARED_AS_AUX`] names one, a single
/// aux descriptor; and the master's end is close-on-exec.
pub fn fd_hygiene<T: Hostile + Default>(ctx: &Ctx) {
    const LISTEN: i32 = 2;
    if ctx.role().is_some() {
        let fds = open_fds();
        say(format_args!("fds={}", fds.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")));
        // Stay alive, fds untouched, until the master has compared them.
        let _ = await_poke();
        std::process::exit(0);
    }
    let t = T::default();
    let mut source = t.open().expect("open a channel");
    let flags = fcntl(source.as_fd(), FcntlArg::F_GETFD).expect("F_GETFD");
    assert!(
        FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC),
        "the master's end of the channel is not close-on-exec"
    );
    let end = t.child_end(&mut source, 1).expect("make the child's end");
    let (mut kid, aux) =
        Spawn::new(ctx, "fds", 1).listen(usize::try_from(LISTEN).expect("fits")).stdin().stdout().spawn_end(end);
    t.register_child(&mut source, 1, kid.pid()).unwrap_or_else(|e| fail(format_args!("register_child: {e}")));
    let line = kid.expect_line("fds=");
    let aux = i32::try_from(aux).expect("fits");
    let first_aux = MASTER_LISTEN_FD + LISTEN;
    let want: Vec<i32> = [0, 1, 2, MASTER_STATUS_FD]
        .into_iter()
        .chain(MASTER_LISTEN_FD..first_aux)
        .chain(first_aux..first_aux + aux)
        .collect();
    let want_line = format!("fds={}", want.iter().map(ToString::to_string).collect::<Vec<_>>().join(","));
    assert_eq!(line, want_line, "the child's open descriptors (0-2, status, {LISTEN} listen, {aux} aux)");
    // An aux descriptor may be the very file the master polls when the
    // transport says so (a doorbell that children write and the master
    // waits on, say); the status fd and the listen fds never.
    let mut shared_aux = Vec::new();
    for &fd in &want[3..] {
        match shares_open_file(kid.pid(), fd, source.as_fd()) {
            Ok(false) => {}
            Ok(true) if fd >= first_aux && T::SOURCE_SHARED_AS_AUX.is_some() => shared_aux.push(fd),
            Ok(true) => panic!(
                "the master's end of the channel (fd {}) is open in the child at fd {fd}",
                source.as_fd().as_raw_fd()
            ),
            // kcmp(2) is not available here (a sandbox, a kernel without
            // it): the exact list above is all that can be checked.
            Err(Errno::EPERM | Errno::ENOSYS | Errno::EACCES) => break,
            Err(e) => panic!("kcmp: {e}"),
        }
    }
    assert!(
        shared_aux.len() <= 1,
        "the master's pollable descriptor is open in the child at several aux fds: {shared_aux:?}"
    );
    kid.close_stdin();
    kid.expect_success("the child that listed its descriptors");
}
