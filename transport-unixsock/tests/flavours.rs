//! Both packet flavours in real processes, where they go beyond the
//! conformance suite: verified pids against a forgery, malformed datagrams
//! (short, oversized, with a descriptor attached, with more descriptors
//! than the master's control buffer has room for), a blocking fd 5,
//! back-pressure that holds when a child makes it non-blocking, signals
//! aimed at a blocked send; then what
//! only one flavour has: `dgram`'s lifeline, `seqpacket`'s per-child
//! channels (shutdown, forget, fairness, registration).
//!
//! What every transport must do (round trip, fan-in, close and kill
//! disconnects, blocked children released, fd hygiene, threads sharing a
//! sink, the `EINTR` storm) is the conformance suite's, run against both
//! flavours in `master-proto-conformance`. Every test here is both the
//! master and, re-executed, the child, through the suite's harness
//! ([`master_proto_conformance::harness`]): the parent runs this test binary
//! again with only the same test selected and a role set, installed through
//! the standard environment (fd 5, listen fd 6, `GENERATION`), and the test
//! body takes the child's branch when it finds the role. No `fork()` inside
//! the threaded harness. Every wait is bounded and says what it waited for.
//! Linux only: the identity cases expect `SCM_CREDENTIALS`, and blocked
//! children are found in `/proc`.

#![cfg(target_os = "linux")]
#![allow(unsafe_code)] // Safety: the child roles borrow fd 5 by number.

use std::collections::HashMap;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use std::time::Instant;

use master_proto::master::{Config, Master, Outcome};
use master_proto::{
    BackPressure, ChildEnv, Framing, Identity, Malformed, NotifyError, Received, Sender, Status, StatusSink,
    StatusSource, StatusUpdate, Transport,
};
use master_proto_conformance::harness::{
    Ctx, Kid, Spawn, WAIT, await_poke, child_sink, fail, poll_until, receive, say, thread_blocked_writing,
    wait_readable,
};
use master_proto_unixsock::{Dgram, SeqPacket};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

/// Instantiates the cases for one flavour, under a module named after its
/// short name: the generic ones for `$transport`, then the ones written for
/// this flavour alone.
macro_rules! flavour {
    ($name:ident, $transport:ty; $($generic:ident),*; $($only:ident),* $(,)?) => {
        mod $name {
            use super::*;

            fn ctx(case: &str) -> Ctx {
                Ctx::new(module_path!(), case)
            }

            $(
                #[test]
                fn $generic() {
                    super::$generic::<$transport>(&ctx(stringify!($generic)));
                }
            )*

            $(
                #[test]
                fn $only() {
                    super::$only(&ctx(stringify!($only)));
                }
            )*
        }
    };
}

flavour!(
    dgram, Dgram;
    declares_its_capabilities, forged_pid_is_rejected, malformed_packets_are_reported,
    descriptors_beyond_the_control_buffer, status_fd_blocks, flood_blocks_then_delivers_everything, eintr_is_retried;
    lifeline_wins_over_a_live_socket,
);
flavour!(
    seqpacket, SeqPacket;
    declares_its_capabilities, forged_pid_is_rejected, malformed_packets_are_reported,
    descriptors_beyond_the_control_buffer, status_fd_blocks, flood_blocks_then_delivers_everything, eintr_is_retried;
    shutdown_ends_only_that_channel, forget_child_disconnects_it, flooder_does_not_starve_others,
    update_before_registration_is_kept, empty_records_then_the_end, forget_child_delivers_what_it_held,
);

// ---------------------------------------------------------------- helpers

/// Child role: notifies each of `statuses` in turn, then exits 0.
fn notify_and_exit<T: Transport + Default>(statuses: impl IntoIterator<Item = Status>) -> ! {
    let sink = child_sink::<T>();
    for status in statuses {
        sink.notify(status).unwrap_or_else(|e| fail(format_args!("notify {status:?}: {e}")));
    }
    std::process::exit(0)
}

/// Spawns a child in `role` with the transport's end of `source` and one
/// listen socket, registered under its pid; stdin and stdout null.
fn spawn<T: Transport>(ctx: &Ctx, t: &T, source: &mut T::Source, role: &str, generation: u32) -> Kid {
    Spawn::new(ctx, role, generation).listen(1).spawn_registered(t, source)
}

/// The sender the transport vouches for when `pid` sends: the kernel's word
/// or the child's private channel, as it declares.
fn vouched<T: Transport + Default>(pid: i32) -> Sender {
    match T::default().caps().identity {
        Identity::KernelPid => Sender::KernelPid(pid),
        Identity::Channel => Sender::Channel(pid),
        Identity::Claimed => Sender::Claimed,
    }
}

/// Receives one item, polling the source's fd; panics with `what` if none
/// arrives within the bound.
fn next_item<S: StatusSource>(source: &mut S, what: &str) -> Received {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(item) = source.try_recv().expect("read the source") {
            return item;
        }
        assert!(wait_readable(source.as_fd(), deadline), "waited {WAIT:?} for {what}");
    }
}

/// The raw channel at fd 5, for roles that send what no sink would.
fn raw_fd5() -> BorrowedFd<'static> {
    let env = ChildEnv::from_process().unwrap_or_else(|e| fail(e));
    let fd = env.status_fd().unwrap_or_else(|| fail("no fd 5")).as_raw_fd();
    // The environment owns fd 5; leak it so that the borrow stays valid for
    // the rest of this short-lived role.
    std::mem::forget(env);
    // SAFETY: fd 5 is open (ChildEnv checked it) and is never closed: its
    // owner was leaked above.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Sends `bytes` as one datagram on `fd`, as a hostile child would.
fn send_raw(fd: BorrowedFd<'_>, bytes: &[u8]) {
    match nix::sys::socket::send(fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
        Ok(n) if n == bytes.len() => {}
        other => fail(format_args!("raw send of {} bytes: {other:?}", bytes.len())),
    }
}

/// Child role: wait for the master to go, then check notify says so.
/// Exits 0 only if the disconnect fd fired without sending and the next
/// notify returned `Disconnected`.
fn await_disconnect(sink: &impl StatusSink) -> ! {
    if !wait_readable(sink.disconnect_fd(), Instant::now() + WAIT) {
        fail("the disconnect fd did not fire");
    }
    match sink.notify(Status::TAKEN) {
        Err(NotifyError::Disconnected) => std::process::exit(0),
        other => fail(format_args!("notify after disconnect returned {other:?}")),
    }
}

/// The updates among `items`, with the pid the kernel vouched for; panics
/// on anything else.
fn updates(items: &[Received]) -> Vec<(i32, u32, Status, Sender)> {
    items
        .iter()
        .map(|item| match item {
            Received::Update { update, sender } => (update.pid, update.generation, update.status, *sender),
            Received::Malformed(m) => panic!("unexpected malformed input {m:?}"),
        })
        .collect()
}

/// Whether some thread of `pid` is blocked sending on fd 5, or in `poll`
/// (where `notify` waits for room on a socket made non-blocking).
fn blocked_on_channel(pid: i32) -> bool {
    thread_blocked_writing(pid, 5).is_some() || in_poll(pid)
}

/// Whether some thread of `pid` is in `poll` (a child role's bounded wait
/// for a descriptor).
fn in_poll(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.filter_map(Result::ok).any(|task| {
        let text = std::fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
        let nr: i64 = text.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(-1);
        nr == nix::libc::SYS_poll || nr == nix::libc::SYS_ppoll
    })
}

// ---------------------------------------------------------------- cases

/// The declared capabilities: packets, a verified sender, blocking.
fn declares_its_capabilities<T: Transport + Default>(_ctx: &Ctx) {
    let caps = T::default().caps();
    assert_eq!(caps.framing, Framing::Packet);
    assert_ne!(caps.identity, Identity::Claimed);
    assert_eq!(caps.back_pressure, BackPressure::Block);
    assert!(!caps.postfix_wire);
}

/// A child sends a record claiming another child's pid and generation: the
/// transport names the real sender, and the sans-IO master rejects it as
/// `ForgedPid` without touching the victim's state, while both children's
/// honest updates are accepted.
fn forged_pid_is_rejected<T: Transport + Default>(ctx: &Ctx) {
    match ctx.role().as_deref() {
        Some("victim") => {
            notify_and_exit::<T>([Status::TAKEN]);
        }
        Some("forger") => {
            let mut env = ChildEnv::from_process().unwrap_or_else(|e| fail(e));
            let victim = ctx.arg().and_then(|a| a.parse().ok()).unwrap_or_else(|| fail("no victim pid"));
            let generation = env.generation.wrapping_sub(1);
            let sink = T::default().sink(&mut env).unwrap_or_else(|e| fail(e));
            // The victim's pid and generation, on the forger's own fd 5.
            let lie = StatusUpdate { pid: victim, generation, status: Status::AVAIL }.encode();
            // SAFETY: fd 5 is the sink's socket, open for the sink's life,
            // which outlasts this borrow.
            let fd5 = unsafe { BorrowedFd::borrow_raw(5) };
            send_raw(fd5, &lie);
            sink.notify(Status::TAKEN).unwrap_or_else(|e| fail(e));
            std::process::exit(0);
        }
        Some(other) => fail(format_args!("unknown role {other}")),
        None => {}
    }
    let t = T::default();
    let mut source = t.open().expect("open");
    let mut master = Master::new(Config::default());
    let now = Instant::now();
    let g_victim = master.begin_spawn(now).expect("begin spawn");
    let mut victim = spawn(ctx, &t, &mut source, "victim", g_victim);
    let victim_pid = victim.pid();
    master.spawned(victim_pid, g_victim).expect("register the victim");
    // The victim's TAKEN first, so that a forged AVAIL would change its state.
    let got = receive(&mut source, 1, "the victim's TAKEN");
    assert_eq!(got.iter().map(|item| master.receive(item)).collect::<Vec<_>>(), vec![Outcome::Taken]);
    let g_forger = master.begin_spawn(now).expect("begin spawn");
    assert_eq!(g_forger, g_victim + 1, "the forger computes the victim's generation from its own");
    let mut forger = Spawn::new(ctx, "forger", g_forger).listen(1).arg(victim_pid).spawn_registered(&t, &mut source);
    let forger_pid = forger.pid();
    master.spawned(forger_pid, g_forger).expect("register the forger");
    let got = receive(&mut source, 2, "the forgery and the forger's honest TAKEN");
    let outcomes: Vec<Outcome> = got.iter().map(|item| master.receive(item)).collect();
    assert_eq!(outcomes, vec![Outcome::ForgedPid { claimed: victim_pid, verified: forger_pid }, Outcome::Taken]);
    assert_eq!(master.child(victim_pid).map(|c| c.status), Some(Status::TAKEN), "the forgery changed nothing");
    assert_eq!(master.counters().forged_pid, 1);
    victim.expect_success("the victim");
    forger.expect_success("the forger");
}

/// A child sends datagrams of the wrong length, one with a descriptor
/// attached, then an honest update: each bad one is reported as what it is,
/// in order, the attached descriptor is closed by the master, and the
/// honest update after them arrives whole.
fn malformed_packets_are_reported<T: Transport + Default>(ctx: &Ctx) {
    if ctx.role().is_some() {
        let fd5 = raw_fd5();
        send_raw(fd5, &[]);
        send_raw(fd5, &[0xAB; 5]);
        send_raw(fd5, &[0xCD; 13]);
        // A pipe's write end rides along with 4096 bytes: once the master
        // has closed it, the read end kept here sees EOF.
        let (reader, writer) = std::io::pipe().unwrap_or_else(|e| fail(e));
        let big = [0xEF; 4096];
        let fds = [writer.as_fd().as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        match sendmsg::<()>(fd5.as_raw_fd(), &[IoSlice::new(&big)], &cmsg, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(4096) => {}
            other => fail(format_args!("sendmsg with a descriptor: {other:?}")),
        }
        drop(writer);
        let update =
            StatusUpdate { pid: std::process::id().try_into().unwrap_or(0), generation: 3, status: Status::AVAIL };
        send_raw(fd5, &update.encode());
        if !wait_readable(reader.as_fd(), Instant::now() + WAIT) {
            fail("the master kept the descriptor attached to a datagram");
        }
        std::process::exit(0);
    }
    let t = T::default();
    let mut source = t.open().expect("open");
    let mut child = spawn(ctx, &t, &mut source, "hostile", 3);
    let got = receive(&mut source, 5, "four malformed datagrams and an update");
    let pid = child.pid();
    let update = StatusUpdate { pid, generation: 3, status: Status::AVAIL };
    assert_eq!(
        got,
        vec![
            Received::Malformed(Malformed::Short(0)),
            Received::Malformed(Malformed::Short(5)),
            Received::Malformed(Malformed::Oversized(13)),
            Received::Malformed(Malformed::Oversized(4096)),
            Received::Update { update, sender: vouched::<T>(pid) },
        ]
    );
    let status = child.wait_exit("the hostile child");
    assert_eq!(status.code(), Some(0), "the attached descriptor must be closed by the master, got {status}");
    assert_eq!(source.try_recv(), Ok(None), "nothing more arrives");
}

/// The most descriptors the kernel passes in one message (`SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;

/// A child attaches the kernel's most descriptors (253, far more than the
/// master's control buffer has room for) to a whole record and to an
/// oversized datagram, among other datagrams queued together: they are
/// read in order, each as what it is, and each record from the sender the
/// transport vouches for (the kernel's credentials come whole before the
/// descriptors that did not fit); and no descriptor stays in the master,
/// neither the first of each message (installed by the kernel, closed by
/// the source) nor the last (dropped by the kernel, never installed).
fn descriptors_beyond_the_control_buffer<T: Transport + Default>(ctx: &Ctx) {
    if ctx.role().is_some() {
        let fd5 = raw_fd5();
        let null = std::fs::File::open("/dev/null").unwrap_or_else(|e| fail(e));
        let (first_read, first_write) = std::io::pipe().unwrap_or_else(|e| fail(e));
        let (last_read, last_write) = std::io::pipe().unwrap_or_else(|e| fail(e));
        let send_with_fds = |bytes: &[u8]| {
            let middle: Vec<std::fs::File> =
                (2..SCM_MAX_FD).map(|_| null.try_clone().unwrap_or_else(|e| fail(e))).collect();
            let mut fds = vec![first_write.as_fd().as_raw_fd()];
            fds.extend(middle.iter().map(AsRawFd::as_raw_fd));
            fds.push(last_write.as_fd().as_raw_fd());
            let cmsg = [ControlMessage::ScmRights(&fds)];
            match sendmsg::<()>(fd5.as_raw_fd(), &[IoSlice::new(bytes)], &cmsg, MsgFlags::MSG_NOSIGNAL, None) {
                Ok(n) if n == bytes.len() => {}
                other => fail(format_args!("sendmsg with {} descriptors: {other:?}", fds.len())),
            }
        };
        let pid = std::process::id().try_into().unwrap_or(0);
        send_with_fds(&StatusUpdate { pid, generation: 4, status: Status::TAKEN }.encode());
        send_raw(fd5, &[0x11; 3]);
        send_with_fds(&[0x22; 100]);
        send_raw(fd5, &StatusUpdate { pid, generation: 4, status: Status::AVAIL }.encode());
        drop((first_write, last_write));
        let deadline = Instant::now() + WAIT;
        if !wait_readable(first_read.as_fd(), deadline) {
            fail("the master kept a descriptor the kernel installed");
        }
        if !wait_readable(last_read.as_fd(), deadline) {
            fail("a descriptor that did not fit the control buffer stayed open");
        }
        std::process::exit(0);
    }
    let t = T::default();
    let mut source = t.open().expect("open");
    let mut child = spawn(ctx, &t, &mut source, "hostile", 4);
    // Best effort, so that the four are queued together and read in one
    // batch: the child has sent them all once it waits for the ends of
    // its pipes.
    let pid = child.pid();
    poll_until(Instant::now() + WAIT, || in_poll(pid));
    let got = receive(&mut source, 4, "a record and a datagram with 253 descriptors each, among others");
    let update =
        |status| Received::Update { update: StatusUpdate { pid, generation: 4, status }, sender: vouched::<T>(pid) };
    assert_eq!(
        got,
        vec![
            update(Status::TAKEN),
            Received::Malformed(Malformed::Short(3)),
            Received::Malformed(Malformed::Oversized(100)),
            update(Status::AVAIL),
        ]
    );
    let status = child.wait_exit("the hostile child");
    assert_eq!(status.code(), Some(0), "every attached descriptor must be gone from the master, got {status}");
    assert_eq!(source.try_recv(), Ok(None), "nothing more arrives");
}

/// fd 5 is left in blocking mode for the child (a sink's back-pressure
/// rests on it); which descriptors a child holds is the suite's
/// `fd_hygiene`.
fn status_fd_blocks<T: Transport + Default>(ctx: &Ctx) {
    if ctx.role().is_some() {
        let flags = nix::fcntl::fcntl(raw_fd5(), nix::fcntl::FcntlArg::F_GETFL).unwrap_or_else(|e| fail(e));
        say(format_args!("blocking5={}", flags & nix::libc::O_NONBLOCK == 0));
        std::process::exit(0);
    }
    let t = T::default();
    let mut source = t.open().expect("open");
    let mut child = Spawn::new(ctx, "fds", 1).listen(1).stdout().spawn_registered(&t, &mut source);
    assert_eq!(child.expect_line("blocking5="), "blocking5=true");
    child.expect_success("the child");
}

/// Signals aimed at the child's thread blocked in its `send(2)` on fd 5:
/// every one interrupts a send in progress, `notify` retries, nothing is
/// lost. The case is the conformance crate's, shared with the pipe
/// flavours; the suite's own storm (case 12) does not aim.
fn eintr_is_retried<T: Transport + Default>(ctx: &Ctx) {
    master_proto_conformance::cases::eintr_in_blocked_write::<T>(ctx);
}

/// Children flood the channel while the master does not read: they block
/// (the declared back-pressure), also the one that made the shared socket
/// non-blocking first; nothing is lost when the master reads again, and
/// every child's records arrive whole and in order.
fn flood_blocks_then_delivers_everything<T: Transport + Default>(ctx: &Ctx) {
    const PER_CHILD: i32 = 5_000;
    const CHILDREN: usize = 4;
    if let Some(role) = ctx.role() {
        let sink = child_sink::<T>();
        if role == "flood-nonblocking" {
            // fd 5's open file is shared with the other children: this
            // makes every child's socket non-blocking.
            // SAFETY: fd 5 is the sink's socket, open for the sink's life.
            let fd5 = unsafe { BorrowedFd::borrow_raw(5) };
            nix::fcntl::fcntl(fd5, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
                .unwrap_or_else(|e| fail(e));
        }
        // The status value carries a sequence number: the transport does
        // not judge values, so per-child order is visible at the master.
        for seq in 2..2 + PER_CHILD {
            sink.notify(Status(seq)).unwrap_or_else(|e| fail(format_args!("notify {seq}: {e}")));
        }
        std::process::exit(0);
    }
    let t = T::default();
    let mut source = t.open().expect("open");
    let mut children: Vec<Kid> = (0..CHILDREN)
        .map(|i| {
            let role = if i == 0 { "flood-nonblocking" } else { "flood" };
            spawn(ctx, &t, &mut source, role, 9)
        })
        .collect();
    // 20,000 datagrams are far more than the socket's buffer holds: every
    // child must end up blocked sending (or waiting for room) on fd 5.
    let deadline = Instant::now() + WAIT;
    for child in &children {
        assert!(
            poll_until(deadline, || blocked_on_channel(child.pid())),
            "waited {WAIT:?} for child {} to block on fd 5",
            child.pid()
        );
    }
    let total = CHILDREN * usize::try_from(PER_CHILD).expect("fits");
    let got = receive(&mut source, total, "every flooded record");
    let mut next: HashMap<i32, i32> = children.iter().map(|c| (c.pid(), 2)).collect();
    for (pid, generation, status, sender) in updates(&got) {
        assert_eq!((generation, sender), (9, vouched::<T>(pid)));
        let want = next.get_mut(&pid).unwrap_or_else(|| panic!("record from unknown pid {pid}"));
        assert_eq!(status, Status(*want), "child {pid}: out of order, lost or duplicated");
        *want += 1;
    }
    assert!(next.values().all(|&n| n == 2 + PER_CHILD));
    for child in &mut children {
        let status = child.wait_exit("a flooding child");
        assert!(status.success(), "a flooding child failed: {status}");
    }
}

/// The release-order race of a dying master, held still: the lifeline's
/// write end is closed (the source is dropped) while the master's socket
/// lives on in a duplicate, so the socket still takes datagrams. The child's
/// disconnect fd fires, and its next notify must say `Disconnected` rather
/// than send into a socket nobody will read.
fn lifeline_wins_over_a_live_socket(ctx: &Ctx) {
    if ctx.role().is_some() {
        let sink = child_sink::<master_proto_unixsock::Dgram>();
        sink.notify(Status::AVAIL).unwrap_or_else(|e| fail(e));
        await_disconnect(&sink);
    }
    let t = master_proto_unixsock::Dgram;
    let mut source = t.open().expect("open");
    let mut child = spawn(ctx, &t, &mut source, "lifeline", 2);
    receive(&mut source, 1, "the child's AVAIL");
    let socket = source.as_fd().try_clone_to_owned().expect("duplicate the master's socket");
    drop(source);
    let status = child.wait_exit("the child after the lifeline fired");
    assert_eq!(status.code(), Some(0), "notify after the lifeline fired must be Disconnected, got {status}");
    drop(socket);
}

/// A child shuts its private `SOCK_SEQPACKET` channel down: that channel
/// ends (the source drops it and is not left readable), and another
/// child's update still arrives.
fn shutdown_ends_only_that_channel(ctx: &Ctx) {
    match ctx.role().as_deref() {
        Some("shutdown") => {
            let fd5 = raw_fd5();
            nix::sys::socket::shutdown(fd5.as_raw_fd(), nix::sys::socket::Shutdown::Write).unwrap_or_else(|e| fail(e));
            // Stay alive, holding fd 5, until the master drops the channel.
            if !wait_readable(fd5, Instant::now() + WAIT) {
                fail("the master kept the shut-down channel");
            }
            std::process::exit(0);
        }
        Some(_) => {
            notify_and_exit::<SeqPacket>([Status::TAKEN]);
        }
        None => {}
    }
    let t = SeqPacket;
    let mut source = t.open().expect("open");
    let mut hostile = spawn(ctx, &t, &mut source, "shutdown", 1);
    // The end of the hostile child's channel makes the source readable;
    // reading it yields nothing and drops the channel, while the child
    // still holds its end.
    assert!(wait_readable(source.as_fd(), Instant::now() + WAIT), "waited {WAIT:?} for the end of the channel");
    assert_eq!(source.try_recv(), Ok(None));
    assert!(!wait_readable(source.as_fd(), Instant::now()), "an ended channel left the source readable");
    let status = hostile.wait_exit("the child that shut its channel down");
    assert_eq!(status.code(), Some(0), "its fd 5 must report the dropped channel, got {status}");
    let mut honest = spawn(ctx, &t, &mut source, "honest", 2);
    let got = receive(&mut source, 1, "the honest child's TAKEN");
    let pid = honest.pid();
    assert_eq!(updates(&got), vec![(pid, 2, Status::TAKEN, Sender::Channel(pid))]);
    honest.expect_success("the honest child");
}

/// `forget_child` drops that child's channel: the child's fd 5 fires and
/// its next notify says `Disconnected`, while another child's channel
/// carries on.
fn forget_child_disconnects_it(ctx: &Ctx) {
    if let Some(role) = ctx.role() {
        let sink = child_sink::<SeqPacket>();
        sink.notify(Status::TAKEN).unwrap_or_else(|e| fail(e));
        if role == "forgotten" {
            await_disconnect(&sink);
        }
        // The kept child: once the test says so on stdin (after forgetting
        // its sibling), its channel must still carry an update.
        if !await_poke() {
            fail("stdin closed before the go");
        }
        sink.notify(Status::AVAIL).unwrap_or_else(|e| fail(e));
        std::process::exit(0);
    }
    let t = SeqPacket;
    let mut source = t.open().expect("open");
    let mut forgotten = spawn(ctx, &t, &mut source, "forgotten", 1);
    let mut kept = Spawn::new(ctx, "kept", 2).listen(1).stdin().spawn_registered(&t, &mut source);
    let got = receive(&mut source, 2, "both children's TAKEN");
    assert_eq!(got.len(), 2);
    t.forget_child(&mut source, forgotten.pid()).expect("forget_child");
    let status = forgotten.wait_exit("the forgotten child");
    assert_eq!(status.code(), Some(0), "the forgotten child must see Disconnected, got {status}");
    kept.poke();
    let got = receive(&mut source, 1, "the kept child's AVAIL");
    let pid = kept.pid();
    assert_eq!(updates(&got), vec![(pid, 2, Status::AVAIL, Sender::Channel(pid))]);
    kept.expect_success("the kept child");
}

/// A child flooding its private channel neither keeps a drain going nor
/// starves another: one drain yields one round, and once the quiet child's
/// update is queued, it is among the next few items read, not behind
/// everything the flooder can send.
fn flooder_does_not_starve_others(ctx: &Ctx) {
    const FLOOD: i32 = 5_000;
    // What a channel yields in a round while at most 8 are ready.
    const BURST: usize = 64;
    match ctx.role().as_deref() {
        Some("flooder") => {
            notify_and_exit::<SeqPacket>((2..2 + FLOOD).map(Status));
        }
        Some(_) => {
            notify_and_exit::<SeqPacket>([Status::TAKEN]);
        }
        None => {}
    }
    let t = SeqPacket;
    let mut source = t.open().expect("open");
    let mut flooder = spawn(ctx, &t, &mut source, "flooder", 1);
    assert!(
        poll_until(Instant::now() + WAIT, || thread_blocked_writing(flooder.pid(), 5).is_some()),
        "waited {WAIT:?} for the flooder to fill its channel"
    );
    // Its first record is read now, so that its channel is the one the
    // source is busy with when the quiet child's update comes in.
    // One drain is one round: the flooder's full channel, alone in it,
    // yields one burst (64 records, the most a lone channel gets), then the
    // drain ends although the flooder refills it at once.
    let mut first = Vec::new();
    let n = source.drain(|item| first.push(item)).expect("read the source");
    assert_eq!(n, BURST, "one drain of one full channel");
    assert_eq!(updates(&first).iter().map(|u| u.2.0).collect::<Vec<_>>(), (2..).take(BURST).collect::<Vec<_>>());
    let mut quiet = spawn(ctx, &t, &mut source, "quiet", 2);
    assert!(quiet.wait_exit("the quiet child").success(), "the quiet child's update is queued");
    let quiet_pid = quiet.pid();
    let mut before = 0;
    while !matches!(next_item(&mut source, "the quiet child's update"), Received::Update { update, .. } if update.pid == quiet_pid)
    {
        before += 1;
    }
    // The source reads at most one burst of a channel before it looks for
    // other ready channels (64 records while few are ready): at most the
    // rest of one burst and one more.
    assert!(before <= 2 * BURST, "{before} of the flooder's records came before the quiet child's queued update");
    receive(&mut source, usize::try_from(FLOOD).expect("fits") - n - before, "the rest of the flood");
    flooder.expect_success("the flooder");
}

/// Empty records are not the end of a channel, though both are a read of
/// nothing: a child's two empty records, the last thing it sends before it
/// exits, are reported as what they are, and then the channel's end as
/// nothing (not as more empty records).
fn empty_records_then_the_end(ctx: &Ctx) {
    if ctx.role().is_some() {
        let fd5 = raw_fd5();
        send_raw(fd5, &[]);
        send_raw(fd5, &[]);
        std::process::exit(0);
    }
    let t = SeqPacket;
    let mut source = t.open().expect("open");
    let mut child = spawn(ctx, &t, &mut source, "empty", 1);
    child.expect_success("the child");
    let got = receive(&mut source, 2, "two empty records");
    assert_eq!(got, vec![Received::Malformed(Malformed::Short(0)); 2]);
    for _ in 0..2 {
        assert_eq!(source.try_recv(), Ok(None), "the end of the channel is no record");
    }
}

/// A child that sent its update and exited before the master registered it
/// keeps its channel through another spawn (which drops pending channels
/// that are closed and empty): once registered, its update is reported
/// with its pid.
fn update_before_registration_is_kept(ctx: &Ctx) {
    if ctx.role().is_some() {
        notify_and_exit::<SeqPacket>([Status::TAKEN]);
    }
    let t = SeqPacket;
    let mut source = t.open().expect("open");
    let mut early = Spawn::new(ctx, "early", 1).listen(1).spawn(&t, &mut source);
    early.expect_success("the early child");
    assert_eq!(source.try_recv(), Ok(None), "an unregistered channel is not read");
    let mut later = spawn(ctx, &t, &mut source, "later", 2);
    let got = receive(&mut source, 1, "the later child's TAKEN");
    let later_pid = later.pid();
    assert_eq!(updates(&got), vec![(later_pid, 2, Status::TAKEN, Sender::Channel(later_pid))]);
    let early_pid = early.pid();
    t.register_child(&mut source, 1, early_pid).expect("register_child");
    let got = receive(&mut source, 1, "the early child's TAKEN, once registered");
    assert_eq!(updates(&got), vec![(early_pid, 1, Status::TAKEN, Sender::Channel(early_pid))]);
    later.expect_success("the later child");
}

/// A reaped child's channel forgotten before the master read it: what the
/// child sent (more records than one batch takes, an empty record among
/// them) is delivered, in order, before `None`, and the channel's end is
/// not mistaken for an empty record.
fn forget_child_delivers_what_it_held(ctx: &Ctx) {
    const RECORDS: i32 = 100;
    if ctx.role().is_some() {
        let sink = child_sink::<SeqPacket>();
        // SAFETY: fd 5 is the sink's socket, open for the sink's life,
        // which outlasts this borrow.
        let fd5 = unsafe { BorrowedFd::borrow_raw(5) };
        for n in 0..RECORDS {
            if n == RECORDS / 2 {
                send_raw(fd5, &[]);
            }
            sink.notify(Status(2 + n)).unwrap_or_else(|e| fail(e));
        }
        std::process::exit(0);
    }
    let t = SeqPacket;
    let mut source = t.open().expect("open");
    let mut child = spawn(ctx, &t, &mut source, "reaped", 1);
    let pid = child.pid();
    child.expect_success("the child");
    t.forget_child(&mut source, pid).expect("forget_child");
    assert!(wait_readable(source.as_fd(), Instant::now()), "what was kept leaves the source readable");
    let mut got = Vec::new();
    while let Some(item) = source.try_recv().expect("read the source") {
        got.push(item);
    }
    let mut want: Vec<Received> = (0..RECORDS)
        .map(|n| Received::Update {
            update: StatusUpdate { pid, generation: 1, status: Status(2 + n) },
            sender: Sender::Channel(pid),
        })
        .collect();
    want.insert(usize::try_from(RECORDS / 2).expect("fits"), Received::Malformed(Malformed::Short(0)));
    assert_eq!(got, want);
    assert_eq!(source.try_recv(), Ok(None), "nothing more arrives");
}
