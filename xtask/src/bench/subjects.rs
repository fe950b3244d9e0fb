//! What the bench measures: every transport, the raw floor of each
//! mechanism, and (feature `peers`) other IPC crates, behind one small pair
//! of traits ([`Master`], [`Sender`]) that the workloads drive.
//!
//! Transports come from the facade's list
//! (`master_proto_transports::with_transports!`), so a transport added to
//! it is measured with no change here: each as its concrete type, and as
//! the facade's [`AnyTransport`] (subject `any:NAME`, notify and fan-in),
//! to show what the run-time choice costs. A floor
//! does the same job with bare system calls: one 12-byte `write(2)` to a
//! pipe, one `send(2)` on a socketpair of each type, one eventfd write, or
//! one bare system call (`getppid`) with no channel at all. The death
//! workloads have floors of their own: a pipe end closed by one process,
//! seen as hang-up by the other (`floor:close_hangup`), and a child
//! SIGKILLed, seen as its pidfd becoming readable (`floor:kill_pidfd`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use master_proto::lifeline::{self, Lifeline};
use master_proto::tokio::AsyncSource;
use master_proto::{
    BackPressure, ChildEnd, ChildEnv, Delivery, Identity, Received, RecvError, Status, StatusSink, StatusSource,
    StatusUpdate, Transport, WIRE_SIZE,
};
use master_proto_transports::AnyTransport;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};

use crate::sys;

/// One workload of the bench. The names are the `workload` field of the
/// JSON rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Workload {
    /// One child notifies as fast as it can; ns per notify, child side.
    NotifyCost,
    /// The same with the master stopped (not reading at all, asleep on the
    /// channel): for subjects whose notify never waits.
    NotifyStopped,
    /// The master asleep in poll; one update at a time; wake-up latency.
    WakeLatency,
    /// Many children each send a fixed number of updates; updates/s.
    FanIn,
    /// The master closes its end; the child's disconnect fd fires.
    DeathMasterToChild,
    /// The child is SIGKILLed; the master learns it (SIGCHLD, waitpid).
    DeathChildToMaster,
    /// Many children, all idle but one, which sends an update every
    /// millisecond; the master's CPU time per update and wake latency.
    Sparse,
}

impl Workload {
    /// Every workload, in the order they are reported.
    pub(crate) const ALL: [Workload; 7] = [
        Workload::NotifyCost,
        Workload::NotifyStopped,
        Workload::WakeLatency,
        Workload::FanIn,
        Workload::DeathMasterToChild,
        Workload::DeathChildToMaster,
        Workload::Sparse,
    ];

    /// The workload's fixed name.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Workload::NotifyCost => "notify_cost",
            Workload::NotifyStopped => "notify_stopped",
            Workload::WakeLatency => "wake_latency",
            Workload::FanIn => "fan_in",
            Workload::DeathMasterToChild => "death_master_to_child",
            Workload::DeathChildToMaster => "death_child_to_master",
            Workload::Sparse => "sparse",
        }
    }

    /// The workload with this name.
    pub(crate) fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// What kind of subject a row is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A transport of this project.
    Transport,
    /// Bare system calls: the floor of a mechanism.
    Floor,
    /// Another IPC crate.
    Peer,
}

/// One item the master's side of a channel produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    /// A whole update.
    Update(StatusUpdate),
    /// Input that was not a whole update (torn, short, oversized).
    Malformed,
    /// A number of wake-ups that carry no data (an eventfd counter).
    Count(u64),
}

/// How a master-side channel prepares one child.
#[derive(Debug, Default)]
pub(crate) struct ChildSetup {
    /// The descriptors of the standard environment, if the subject uses it.
    pub(crate) end: Option<ChildEnd>,
    /// Environment variables the child needs (a peer's channel name).
    pub(crate) env: Vec<(String, String)>,
}

/// The master's end of one subject's channel.
pub(crate) trait Master {
    /// Waits until something may be pending, at most `timeout`; whether it
    /// may.
    fn wait(&mut self, timeout: Duration) -> io::Result<bool>;
    /// Reads everything pending without blocking, handing the items to `f`
    /// in batches (one call per batch keeps the measurement's own cost per
    /// update low); returns whether the channel reported that every sender
    /// is gone.
    fn drain(&mut self, f: &mut dyn FnMut(&[Item])) -> io::Result<bool>;
    /// Makes what one child with `generation` needs.
    fn child(&mut self, generation: u32) -> io::Result<ChildSetup>;
    /// The child with `generation` was spawned as `pid`.
    fn spawned(&mut self, generation: u32, pid: i32) -> io::Result<()> {
        let _ = (generation, pid);
        Ok(())
    }
    /// The child `pid` was reaped.
    fn reaped(&mut self, pid: i32) {
        let _ = pid;
    }
}

/// The child's end of one subject's channel.
pub(crate) trait Sender {
    /// Sends one update (or, for `floor:syscall`, makes one bare system
    /// call).
    fn send(&mut self, status: Status) -> io::Result<()>;
    /// The descriptor that becomes readable when the master is gone, if the
    /// subject has one.
    fn disconnect_fd(&self) -> Option<BorrowedFd<'_>>;
}

/// A subject: its name, what it can be measured on, and how to build its
/// two ends.
#[derive(Clone, Copy)]
pub(crate) struct Subject {
    /// The `subject` field of the JSON rows.
    pub(crate) name: &'static str,
    /// Transport, floor or peer.
    pub(crate) kind: Kind,
    /// Whether every update must arrive (so lost, torn and duplicated must
    /// be 0), as opposed to coalescing to each child's latest state.
    pub(crate) every_update: bool,
    /// Whether the master's side yields the updates themselves (not just a
    /// count), so delivery can be verified update by update.
    pub(crate) carries_updates: bool,
    /// The workloads that apply.
    pub(crate) workloads: &'static [Workload],
    /// Opens the master's end.
    pub(crate) open: fn() -> io::Result<Box<dyn Master>>,
    /// Builds the child's end, in the child.
    pub(crate) sender: fn() -> io::Result<Box<dyn Sender>>,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

// ---------------------------------------------------------------- transports

/// Items a transport's master hands over at once.
const BATCH: usize = 256;

/// A transport's source, as a [`Master`].
struct TransportMaster<T: Transport> {
    transport: T,
    source: T::Source,
}

/// What the bench keeps of a received item.
fn item_of(received: Received) -> Item {
    match received {
        Received::Update { update, .. } => Item::Update(update),
        Received::Malformed(_) => Item::Malformed,
    }
}

/// Drains `source`, handing the items to `f` in batches; whether the
/// channel reported that every sender is gone.
fn drain_batched<S: StatusSource>(source: &mut S, f: &mut dyn FnMut(&[Item])) -> io::Result<bool> {
    let mut batch = [Item::Malformed; BATCH];
    let mut len = 0;
    let mut take = |received| {
        batch[len] = item_of(received);
        len += 1;
        if len == BATCH {
            f(&batch);
            len = 0;
        }
    };
    let drained = source.drain(&mut take);
    f(&batch[..len]);
    match drained {
        Ok(_) => Ok(false),
        Err(RecvError::Closed) => Ok(true),
        Err(RecvError::Io(e)) => Err(e.into()),
        Err(e) => Err(io::Error::other(e)),
    }
}

impl<T: Transport> Master for TransportMaster<T> {
    fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        sys::wait_readable(self.source.as_fd(), timeout)
    }

    fn drain(&mut self, f: &mut dyn FnMut(&[Item])) -> io::Result<bool> {
        drain_batched(&mut self.source, f)
    }

    fn child(&mut self, generation: u32) -> io::Result<ChildSetup> {
        Ok(ChildSetup { end: Some(self.transport.child_end(&mut self.source, generation)?), env: Vec::new() })
    }

    fn spawned(&mut self, generation: u32, pid: i32) -> io::Result<()> {
        self.transport.register_child(&mut self.source, generation, pid)
    }

    fn reaped(&mut self, pid: i32) {
        // A failure here cannot change a measurement: the child is gone.
        let _ = self.transport.forget_child(&mut self.source, pid);
    }
}

/// A transport's source on tokio's reactor (a current-thread runtime of
/// its own), as a [`Master`], read the way an async master reads one:
/// `wait` is [`AsyncSource::drain`] (tokio's readiness, edge-triggered, then
/// the source's own drain, then readiness cleared), keeping the items;
/// `drain` hands them over.
struct TokioMaster<T: Transport> {
    transport: T,
    runtime: tokio::runtime::Runtime,
    source: AsyncSource<T::Source>,
    /// The items `wait` took.
    taken: Vec<Item>,
    /// `wait` saw the channel report that every sender is gone.
    closed: bool,
}

impl<T: Transport> Master for TokioMaster<T> {
    fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        if !self.taken.is_empty() || self.closed {
            return Ok(true);
        }
        let (source, taken) = (&mut self.source, &mut self.taken);
        let drained = source.drain(|received| taken.push(item_of(received)));
        match self.runtime.block_on(async { tokio::time::timeout(timeout, drained).await }) {
            Err(_) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(RecvError::Closed)) => {
                self.closed = true;
                Ok(true)
            }
            Ok(Err(RecvError::Io(e))) => Err(e.into()),
            Ok(Err(e)) => Err(io::Error::other(e)),
        }
    }

    fn drain(&mut self, f: &mut dyn FnMut(&[Item])) -> io::Result<bool> {
        for batch in self.taken.chunks(BATCH) {
            f(batch);
        }
        self.taken.clear();
        Ok(self.closed)
    }

    fn child(&mut self, generation: u32) -> io::Result<ChildSetup> {
        Ok(ChildSetup { end: Some(self.transport.child_end(self.source.get_mut(), generation)?), env: Vec::new() })
    }

    fn spawned(&mut self, generation: u32, pid: i32) -> io::Result<()> {
        self.transport.register_child(self.source.get_mut(), generation, pid)
    }

    fn reaped(&mut self, pid: i32) {
        let _ = self.transport.forget_child(self.source.get_mut(), pid);
    }
}

fn open_tokio<T: Transport + Default + 'static>() -> io::Result<Box<dyn Master>> {
    let transport = T::default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let source = {
        let _reactor = runtime.enter();
        AsyncSource::new(transport.open()?).map_err(|e| e.into_parts().1)?
    };
    Ok(Box::new(TokioMaster { transport, runtime, source, taken: Vec::new(), closed: false }))
}

/// A transport's sink, as a [`Sender`].
struct TransportSender<S: StatusSink>(S);

impl<S: StatusSink> Sender for TransportSender<S> {
    fn send(&mut self, status: Status) -> io::Result<()> {
        self.0.notify(status).map_err(io::Error::from)
    }

    fn disconnect_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.0.disconnect_fd())
    }
}

/// `T`'s master end, or, with `ANY`, that of `T` chosen through the facade.
fn open_transport<T: Transport + Default + Into<AnyTransport> + 'static, const ANY: bool>()
-> io::Result<Box<dyn Master>> {
    fn open<T: Transport + 'static>(transport: T) -> io::Result<Box<dyn Master>> {
        let source = transport.open()?;
        Ok(Box::new(TransportMaster { transport, source }))
    }
    if ANY { open(T::default().into()) } else { open(T::default()) }
}

/// `T`'s sink, or, with `ANY`, the facade's sink for whatever the master
/// chose ([`master_proto_transports::sink_from_env`]).
fn transport_sender<T: Transport + Default + 'static, const ANY: bool>() -> io::Result<Box<dyn Sender>> {
    let mut env = ChildEnv::from_process().map_err(io::Error::other)?;
    if ANY {
        let sink = master_proto_transports::sink_from_env(&mut env).map_err(io::Error::other)?;
        Ok(Box::new(TransportSender(sink)))
    } else {
        let sink = T::default().sink(&mut env).map_err(io::Error::other)?;
        Ok(Box::new(TransportSender(sink)))
    }
}

fn every_update<T: Transport + Default>() -> bool {
    T::default().caps().delivery == Delivery::EveryUpdate
}

/// Every workload but [`Workload::NotifyStopped`], which would block the
/// child of a subject whose notify waits for room.
const ALL_BUT_STOPPED: [Workload; 6] = [
    Workload::NotifyCost,
    Workload::WakeLatency,
    Workload::FanIn,
    Workload::DeathMasterToChild,
    Workload::DeathChildToMaster,
    Workload::Sparse,
];

/// The workloads a transport is measured on: all of them where its
/// notify never waits ([`BackPressure::Overwrite`]), all but
/// `notify_stopped` otherwise.
fn transport_workloads<T: Transport + Default>() -> &'static [Workload] {
    if T::default().caps().back_pressure == BackPressure::Overwrite { &Workload::ALL } else { &ALL_BUT_STOPPED }
}

/// The prefix of the subjects that measure a transport through
/// [`AnyTransport`].
pub(crate) const ANY_PREFIX: &str = "any:";

/// What the `any:` subjects are measured on: the hot paths.
const ANY_WORKLOADS: &[Workload] = &[Workload::NotifyCost, Workload::FanIn];

/// The suffix of the subjects whose master waits on tokio's reactor.
pub(crate) const TOKIO_SUFFIX: &str = "+tokio";

/// What the `+tokio` subjects are measured on: the master's side.
const TOKIO_WORKLOADS: &[Workload] = &[Workload::WakeLatency, Workload::FanIn];

macro_rules! transport_subjects {
    ($($name:ident => $ty:path,)*) => {
        // Each transport with its tokio master and through the facade, one
        // after the other: a row is compared with the concrete one, and the
        // bench runs them in this order, seconds apart.
        vec![
            $(
                Subject {
                    name: stringify!($name),
                    kind: Kind::Transport,
                    every_update: every_update::<$ty>(),
                    carries_updates: true,
                    workloads: transport_workloads::<$ty>(),
                    open: open_transport::<$ty, false>,
                    sender: transport_sender::<$ty, false>,
                },
                Subject {
                    name: concat!(stringify!($name), "+tokio"),
                    kind: Kind::Transport,
                    every_update: every_update::<$ty>(),
                    carries_updates: true,
                    workloads: TOKIO_WORKLOADS,
                    open: open_tokio::<$ty>,
                    sender: transport_sender::<$ty, false>,
                },
                Subject {
                    name: concat!("any:", stringify!($name)),
                    kind: Kind::Transport,
                    every_update: every_update::<$ty>(),
                    carries_updates: true,
                    workloads: ANY_WORKLOADS,
                    open: open_transport::<$ty, true>,
                    sender: transport_sender::<$ty, true>,
                },
            )*
        ]
    };
}

// ---------------------------------------------------------------- floors

/// The mechanism of a floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mechanism {
    Syscall,
    Pipe,
    Stream,
    Dgram,
    Seqpacket,
    Eventfd,
    /// A pipe written with `pwritev2(RWF_NOSIGNAL)` (Linux): the cheapest
    /// write that cannot raise `SIGPIPE`, as the `pipe` transport's notify
    /// makes; not a transport's `÷ floor`, shown beside `floor:pipe_write`.
    PipeNoSignal,
    /// A datagram socketpair whose receiving end asks for the sender's
    /// credentials (`SO_PASSCRED`), which it receives with each message,
    /// as the `dgram` transport's master does; shown beside
    /// `floor:dgram_send`.
    DgramCredentials,
    /// The same, and before each send the child looks at a lifeline (a
    /// pipe whose write end the master holds: a zero-timeout poll), as a
    /// `dgram` child does so that no notify succeeds once its disconnect
    /// fd has fired; shown beside `floor:dgram_credentials`.
    DgramLifeline,
}

impl Mechanism {
    const fn subject(self) -> &'static str {
        match self {
            Mechanism::Syscall => "floor:syscall",
            Mechanism::Pipe => "floor:pipe_write",
            Mechanism::Stream => "floor:stream_send",
            Mechanism::Dgram => "floor:dgram_send",
            Mechanism::Seqpacket => "floor:seqpacket_send",
            Mechanism::Eventfd => "floor:eventfd_write",
            Mechanism::PipeNoSignal => "floor:pipe_pwritev2",
            Mechanism::DgramCredentials => "floor:dgram_credentials",
            Mechanism::DgramLifeline => "floor:dgram_lifeline",
        }
    }

    fn from_subject(name: &str) -> Option<Mechanism> {
        [
            Mechanism::Syscall,
            Mechanism::Pipe,
            Mechanism::Stream,
            Mechanism::Dgram,
            Mechanism::Seqpacket,
            Mechanism::Eventfd,
            Mechanism::PipeNoSignal,
            Mechanism::DgramCredentials,
            Mechanism::DgramLifeline,
        ]
        .into_iter()
        .find(|m| m.subject() == name)
    }

    /// Creates the channel: (master's end, child's end), both close-on-exec.
    fn channel(self) -> io::Result<(OwnedFd, OwnedFd)> {
        let socket = |ty| -> io::Result<(OwnedFd, OwnedFd)> {
            Ok(socketpair(AddressFamily::Unix, ty, None, SockFlag::SOCK_CLOEXEC)?)
        };
        match self {
            Mechanism::Syscall | Mechanism::Pipe | Mechanism::PipeNoSignal => Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?),
            Mechanism::Stream => socket(SockType::Stream),
            Mechanism::Dgram => socket(SockType::Datagram),
            Mechanism::DgramCredentials | Mechanism::DgramLifeline => {
                let (master, child) = socket(SockType::Datagram)?;
                nix::sys::socket::setsockopt(&master, nix::sys::socket::sockopt::PassCred, &true)?;
                Ok((master, child))
            }
            Mechanism::Seqpacket => socket(SockType::SeqPacket),
            Mechanism::Eventfd => {
                let master = OwnedFd::from(EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?);
                let child = master.try_clone()?;
                Ok((master, child))
            }
        }
    }
}

/// The master's end of a floor: bare reads of the channel. A byte stream
/// is read as the stream transports read it: after a read that returned
/// less than it asked for (it emptied the stream), a zero-timeout poll
/// decides whether to read again, since a pipe reader that comes straight
/// back to the pipe's lock slows its writers (see `master_proto_pipe`'s
/// source).
struct FloorMaster {
    mechanism: Mechanism,
    master: OwnedFd,
    child: OwnedFd,
    /// A partial record carried between reads of a byte stream.
    partial: Vec<u8>,
    buf: Vec<u8>,
    /// The write end of the children's lifeline, if the mechanism has one.
    lifeline: Option<Lifeline>,
}

impl Master for FloorMaster {
    fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        sys::wait_readable(self.master.as_fd(), timeout)
    }

    fn drain(&mut self, f: &mut dyn FnMut(&[Item])) -> io::Result<bool> {
        let fd = self.master.as_raw_fd();
        loop {
            let n = match self.mechanism {
                Mechanism::Syscall => return Ok(false),
                Mechanism::Eventfd => match nix::unistd::read(&self.master, &mut self.buf[..8]) {
                    Ok(8) => {
                        f(&[Item::Count(u64::from_ne_bytes(self.buf[..8].try_into().unwrap_or([0; 8])))]);
                        continue;
                    }
                    Ok(n) => return Err(io::Error::other(format!("eventfd read returned {n} bytes"))),
                    Err(Errno::EAGAIN) => return Ok(false),
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                },
                Mechanism::Pipe | Mechanism::PipeNoSignal => nix::unistd::read(&self.master, &mut self.buf),
                Mechanism::Stream | Mechanism::Dgram | Mechanism::Seqpacket => {
                    recv(fd, &mut self.buf, MsgFlags::MSG_DONTWAIT)
                }
                Mechanism::DgramCredentials | Mechanism::DgramLifeline => {
                    let mut control = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
                    let mut iov = [std::io::IoSliceMut::new(&mut self.buf)];
                    nix::sys::socket::recvmsg::<()>(fd, &mut iov, Some(&mut control), MsgFlags::MSG_DONTWAIT)
                        .map(|msg| msg.bytes)
                }
            };
            let stream = matches!(self.mechanism, Mechanism::Pipe | Mechanism::PipeNoSignal | Mechanism::Stream);
            match n {
                Ok(0) if stream => {
                    if !self.partial.is_empty() {
                        self.partial.clear();
                        f(&[Item::Malformed]);
                    }
                    return Ok(true);
                }
                Ok(n) if stream => {
                    self.partial.extend_from_slice(&self.buf[..n]);
                    let whole = self.partial.len() / WIRE_SIZE * WIRE_SIZE;
                    for record in self.partial[..whole].chunks_exact(WIRE_SIZE) {
                        f(&[Item::Update(StatusUpdate::decode(record.try_into().unwrap_or(&[0; WIRE_SIZE])))]);
                    }
                    self.partial.drain(..whole);
                    if n < self.buf.len() && !sys::wait_readable(self.master.as_fd(), Duration::ZERO)? {
                        return Ok(false);
                    }
                }
                Ok(n) => match StatusUpdate::decode_packet(&self.buf[..n]) {
                    Ok(update) => f(&[Item::Update(update)]),
                    Err(_) => f(&[Item::Malformed]),
                },
                Err(Errno::EAGAIN) => return Ok(false),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn child(&mut self, _generation: u32) -> io::Result<ChildSetup> {
        let aux = self.lifeline.as_ref().map(Lifeline::aux).transpose()?.into_iter().collect();
        let end = ChildEnd { transport: self.mechanism.subject(), status: self.child.try_clone()?, aux };
        Ok(ChildSetup { end: Some(end), env: Vec::new() })
    }
}

/// The child's end of a floor: one bare system call per update.
struct FloorSender {
    mechanism: Mechanism,
    fd: OwnedFd,
    /// The lifeline's read end, looked at before each send.
    lifeline: Option<OwnedFd>,
    pid: i32,
    generation: u32,
}

impl Sender for FloorSender {
    fn send(&mut self, status: Status) -> io::Result<()> {
        let record = StatusUpdate { pid: self.pid, generation: self.generation, status }.encode();
        let raw = self.fd.as_raw_fd();
        if let Some(l) = &self.lifeline
            && sys::wait_readable(l.as_fd(), Duration::ZERO)?
        {
            return Err(io::Error::other("the lifeline fired"));
        }
        loop {
            let sent = match self.mechanism {
                Mechanism::Syscall => {
                    std::hint::black_box(nix::unistd::getppid());
                    return Ok(());
                }
                Mechanism::Pipe => nix::unistd::write(&self.fd, &record),
                Mechanism::PipeNoSignal => sys::pwrite_nosignal(self.fd.as_fd(), &record),
                Mechanism::Eventfd => nix::unistd::write(&self.fd, &1u64.to_ne_bytes()),
                Mechanism::Stream
                | Mechanism::Dgram
                | Mechanism::Seqpacket
                | Mechanism::DgramCredentials
                | Mechanism::DgramLifeline => send(raw, &record, MsgFlags::MSG_NOSIGNAL),
            };
            match sent {
                Ok(n) if n == record.len() || (self.mechanism == Mechanism::Eventfd && n == 8) => return Ok(()),
                Ok(n) => return Err(io::Error::other(format!("short write: {n} bytes"))),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn disconnect_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

fn open_floor(name: &str) -> io::Result<Box<dyn Master>> {
    let mechanism = Mechanism::from_subject(name).ok_or_else(|| io::Error::other(format!("no floor {name}")))?;
    let (master, child) = mechanism.channel()?;
    // For an eventfd both ends are one open file, so the child's writes are
    // non-blocking too; a write to an eventfd only blocks near a counter of
    // u64::MAX, which a run never reaches.
    nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    let lifeline = (mechanism == Mechanism::DgramLifeline).then(Lifeline::new).transpose()?;
    Ok(Box::new(FloorMaster { mechanism, master, child, partial: Vec::new(), buf: vec![0; 64 * 1024], lifeline }))
}

fn floor_sender(name: &str) -> io::Result<Box<dyn Sender>> {
    let mechanism = Mechanism::from_subject(name).ok_or_else(|| io::Error::other(format!("no floor {name}")))?;
    let mut env = ChildEnv::from_process().map_err(io::Error::other)?;
    let fd = env.take_status().map_err(io::Error::other)?;
    let lifeline = (mechanism == Mechanism::DgramLifeline)
        .then(|| lifeline::take(&mut env))
        .transpose()
        .map_err(io::Error::other)?;
    Ok(Box::new(FloorSender { mechanism, fd, lifeline, pid: env.pid, generation: env.generation }))
}

macro_rules! floors {
    ($($fn_open:ident, $fn_sender:ident, $mechanism:expr, $workloads:expr;)*) => {
        $(
            fn $fn_open() -> io::Result<Box<dyn Master>> {
                open_floor($mechanism.subject())
            }
            fn $fn_sender() -> io::Result<Box<dyn Sender>> {
                floor_sender($mechanism.subject())
            }
        )*
        fn floor_subjects() -> Vec<Subject> {
            vec![$(Subject {
                name: $mechanism.subject(),
                kind: Kind::Floor,
                every_update: true,
                carries_updates: $mechanism != Mechanism::Eventfd,
                workloads: $workloads,
                open: $fn_open,
                sender: $fn_sender,
            },)*]
        }
    };
}

/// The workloads a floor with a channel applies to (no death detection:
/// a floor has no lifeline of its own).
const CHANNEL_FLOOR: &[Workload] = &[Workload::NotifyCost, Workload::WakeLatency, Workload::FanIn];

floors! {
    open_syscall, sender_syscall, Mechanism::Syscall, &[Workload::NotifyCost];
    open_pipe, sender_pipe, Mechanism::Pipe, CHANNEL_FLOOR;
    open_stream, sender_stream, Mechanism::Stream, CHANNEL_FLOOR;
    open_dgram, sender_dgram, Mechanism::Dgram, CHANNEL_FLOOR;
    open_seqpacket, sender_seqpacket, Mechanism::Seqpacket, CHANNEL_FLOOR;
    open_eventfd, sender_eventfd, Mechanism::Eventfd, CHANNEL_FLOOR;
    open_pipe_nosignal, sender_pipe_nosignal, Mechanism::PipeNoSignal, &[Workload::NotifyCost, Workload::FanIn];
    open_dgram_credentials, sender_dgram_credentials, Mechanism::DgramCredentials, &[Workload::NotifyCost, Workload::FanIn];
    open_dgram_lifeline, sender_dgram_lifeline, Mechanism::DgramLifeline, &[Workload::NotifyCost, Workload::FanIn];
}

/// The floor of `death_master_to_child`: the master's end of a pipe closed
/// (or its process killed), seen as hang-up on the child's end.
pub(crate) const CLOSE_HANGUP: &str = "floor:close_hangup";

/// [`CLOSE_HANGUP`] from a master with one more thread, parked for ever:
/// the floor of a master that keeps a thread of its own (a death watch).
/// A process dies when its last thread has; each thread's exit is work of
/// its own before the files of the process are released.
pub(crate) const CLOSE_HANGUP_THREADED: &str = "floor:close_hangup_threaded";

/// [`CLOSE_HANGUP`] from a master that also holds a death word (proto's
/// `shm::ControlArea`, as the shared-memory transports do): the parked
/// thread is the death watch, whose exit the kernel marks in the word
/// before the process's files are released.
pub(crate) const CLOSE_HANGUP_WATCHED: &str = "floor:close_hangup_watched";

/// The floor of `death_child_to_master`: the child SIGKILLed, seen as its
/// pidfd becoming readable in the master (which then reaps it).
pub(crate) const KILL_PIDFD: &str = "floor:kill_pidfd";

/// The master's end of a death floor: the write end of one pipe per child,
/// whose read end is the child's fd 5; never written, only closed (when
/// the master is dropped or its process dies).
struct DeathFloorMaster {
    name: &'static str,
    ends: Vec<OwnedFd>,
    /// The death word, for [`CLOSE_HANGUP_WATCHED`].
    #[cfg(target_os = "linux")]
    _death: Option<master_proto::shm::ControlArea>,
}

impl DeathFloorMaster {
    fn new(name: &'static str) -> DeathFloorMaster {
        DeathFloorMaster {
            name,
            ends: Vec::new(),
            #[cfg(target_os = "linux")]
            _death: None,
        }
    }
}

impl Master for DeathFloorMaster {
    fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        // Nothing is ever pending: the whole timeout passes.
        std::thread::sleep(timeout);
        Ok(false)
    }

    fn drain(&mut self, _f: &mut dyn FnMut(&[Item])) -> io::Result<bool> {
        Ok(false)
    }

    fn child(&mut self, _generation: u32) -> io::Result<ChildSetup> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        self.ends.push(write);
        Ok(ChildSetup { end: Some(ChildEnd { transport: self.name, status: read, aux: Vec::new() }), env: Vec::new() })
    }
}

/// The child's end of a death floor: its fd 5, the read end of the pipe,
/// which reports hang-up once the master's end is closed.
struct DeathFloorSender(OwnedFd);

impl Sender for DeathFloorSender {
    fn send(&mut self, _status: Status) -> io::Result<()> {
        Err(io::Error::other("a death floor carries no updates"))
    }

    fn disconnect_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.0.as_fd())
    }
}

fn open_close_hangup() -> io::Result<Box<dyn Master>> {
    Ok(Box::new(DeathFloorMaster::new(CLOSE_HANGUP)))
}

fn open_close_hangup_threaded() -> io::Result<Box<dyn Master>> {
    // One parked thread per process, however many channels it opens (as
    // the death watch is).
    static PARKED: std::sync::Once = std::sync::Once::new();
    let mut spawned = Ok(());
    PARKED.call_once(|| {
        spawned = std::thread::Builder::new()
            .name("parked".into())
            .spawn(|| {
                loop {
                    std::thread::park()
                }
            })
            .map(drop);
    });
    spawned?;
    Ok(Box::new(DeathFloorMaster::new(CLOSE_HANGUP_THREADED)))
}

#[cfg(target_os = "linux")]
fn open_close_hangup_watched() -> io::Result<Box<dyn Master>> {
    let death = master_proto::shm::ControlArea::new(|words, watch| {
        if let Some((word, tid)) = words.get(master_proto::shm::LIFE).zip(watch) {
            word.store(tid, std::sync::atomic::Ordering::Relaxed);
        }
    })?;
    Ok(Box::new(DeathFloorMaster { _death: Some(death), ..DeathFloorMaster::new(CLOSE_HANGUP_WATCHED) }))
}

fn open_kill_pidfd() -> io::Result<Box<dyn Master>> {
    Ok(Box::new(DeathFloorMaster::new(KILL_PIDFD)))
}

fn death_floor_sender() -> io::Result<Box<dyn Sender>> {
    let mut env = ChildEnv::from_process().map_err(io::Error::other)?;
    Ok(Box::new(DeathFloorSender(env.take_status().map_err(io::Error::other)?)))
}

/// The death floors, built alike: what differs is how the master learns
/// of a death (see `roles`).
fn death_floor_subjects() -> Vec<Subject> {
    let floor = |name: &'static str, workloads: &'static [Workload], open| Subject {
        name,
        kind: Kind::Floor,
        every_update: true,
        carries_updates: false,
        workloads,
        open,
        sender: death_floor_sender,
    };
    vec![
        floor(CLOSE_HANGUP, &[Workload::DeathMasterToChild], open_close_hangup),
        floor(CLOSE_HANGUP_THREADED, &[Workload::DeathMasterToChild], open_close_hangup_threaded),
        #[cfg(target_os = "linux")]
        floor(CLOSE_HANGUP_WATCHED, &[Workload::DeathMasterToChild], open_close_hangup_watched),
        floor(KILL_PIDFD, &[Workload::DeathChildToMaster], open_kill_pidfd),
    ]
}

/// The floor a transport subject is compared with: the raw call its
/// mechanism makes per update, found from what a child end's fd 5 is (a
/// pipe, a socket of some type, or shared memory, whose only system call is
/// its eventfd doorbell); `floor:syscall` if that cannot be told.
pub(crate) fn floor_of(subject: &str) -> &'static str {
    let name = subject.strip_prefix(ANY_PREFIX).unwrap_or(subject);
    let name = name.strip_suffix(TOKIO_SUFFIX).unwrap_or(name);
    let mechanism = AnyTransport::from_name(name).ok().and_then(|t| mechanism_of(t).ok());
    mechanism.unwrap_or(Mechanism::Syscall).subject()
}

/// The floor that adds what a transport's guarantees cost the kernel, for
/// the transports whose guarantees cost more than their mechanism's bare
/// call: a pipe's notify must not raise SIGPIPE whatever the disposition
/// (`floor:pipe_pwritev2`), and a datagram transport that reports
/// kernel-verified pids and hands its children a lifeline makes the master
/// take credentials with each datagram and the child look at its lifeline
/// before each send (`floor:dgram_lifeline`). Found, as [`floor_of`] is,
/// from what a child end is, and from the transport's declared identity.
pub(crate) fn guarantees_floor_of(subject: &str) -> Option<&'static str> {
    let transport = AnyTransport::from_name(subject).ok()?;
    let mechanism = match mechanism_of(transport).ok()? {
        Mechanism::Pipe => Mechanism::PipeNoSignal,
        Mechanism::Dgram if transport.caps().identity == Identity::KernelPid => {
            let mut source = transport.open().ok()?;
            let end = transport.child_end(&mut source, 1).ok()?;
            if end.aux.iter().any(|(name, _)| *name == lifeline::LIFELINE) {
                Mechanism::DgramLifeline
            } else {
                Mechanism::DgramCredentials
            }
        }
        _ => return None,
    };
    Some(mechanism.subject())
}

/// The mechanism behind `transport`'s fd 5.
fn mechanism_of(transport: AnyTransport) -> io::Result<Mechanism> {
    use std::os::unix::fs::FileTypeExt;
    let mut source = transport.open()?;
    let end = transport.child_end(&mut source, 1)?;
    let kind = std::fs::File::from(end.status.try_clone()?).metadata()?.file_type();
    if kind.is_fifo() {
        return Ok(Mechanism::Pipe);
    }
    if !kind.is_socket() {
        return Ok(Mechanism::Eventfd);
    }
    Ok(match nix::sys::socket::getsockopt(&end.status, nix::sys::socket::sockopt::SockType)? {
        SockType::Stream => Mechanism::Stream,
        SockType::Datagram => Mechanism::Dgram,
        SockType::SeqPacket => Mechanism::Seqpacket,
        _ => Mechanism::Syscall,
    })
}

/// Every subject built here: transports, floors, then peers (feature
/// `peers`).
pub(crate) fn all() -> Vec<Subject> {
    let mut subjects: Vec<Subject> = master_proto_transports::with_transports!(transport_subjects);
    subjects.extend(floor_subjects());
    subjects.extend(death_floor_subjects());
    #[cfg(feature = "peers")]
    subjects.extend(super::peers::subjects());
    subjects
}

/// The subject with this name.
pub(crate) fn find(name: &str) -> Option<Subject> {
    all().into_iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transport_is_a_subject_with_every_workload() {
        let subjects = all();
        for name in master_proto_transports::NAMES {
            let s = subjects.iter().find(|s| s.name == *name).unwrap_or_else(|| panic!("{name} is not a subject"));
            assert_eq!(s.kind, Kind::Transport);
            let never_waits =
                AnyTransport::from_name(name).expect("built").caps().back_pressure == BackPressure::Overwrite;
            let want: &[Workload] = if never_waits { &Workload::ALL } else { &ALL_BUT_STOPPED };
            assert_eq!(s.workloads, want, "{name}");
            let any = format!("{ANY_PREFIX}{name}");
            let s = subjects.iter().find(|s| s.name == any).unwrap_or_else(|| panic!("{any} is not a subject"));
            assert_eq!(s.workloads, ANY_WORKLOADS);
            assert_eq!(floor_of(&any), floor_of(name));
            let tokio = format!("{name}{TOKIO_SUFFIX}");
            let s = subjects.iter().find(|s| s.name == tokio).unwrap_or_else(|| panic!("{tokio} is not a subject"));
            assert_eq!(s.workloads, TOKIO_WORKLOADS);
            assert_ne!(floor_of(name), Mechanism::Syscall.subject(), "{name}'s mechanism is not recognised");
        }
        let mut names: Vec<_> = subjects.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), subjects.len(), "subject names are unique");
    }

    #[test]
    fn workload_names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(Workload::from_name(w.name()), Some(w));
        }
        assert_eq!(Workload::from_name("fan-in"), None);
    }

    #[test]
    fn stream_floor_reassembles_records_split_across_reads() {
        let mut master = FloorMaster {
            mechanism: Mechanism::Pipe,
            master: OwnedFd::from(std::fs::File::open("/dev/null").expect("open /dev/null")),
            child: OwnedFd::from(std::fs::File::open("/dev/null").expect("open /dev/null")),
            partial: Vec::new(),
            buf: vec![0; 64],
            lifeline: None,
        };
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).expect("pipe");
        master.master = r;
        let a = StatusUpdate { pid: 7, generation: 9, status: Status::TAKEN }.encode();
        let b = StatusUpdate { pid: 8, generation: 10, status: Status::AVAIL }.encode();
        let mut got = Vec::new();
        nix::unistd::write(&w, &a[..5]).expect("write");
        master.drain(&mut |i| got.extend_from_slice(i)).expect("drain");
        assert!(got.is_empty(), "half a record is not an update: {got:?}");
        nix::unistd::write(&w, &a[5..]).expect("write");
        nix::unistd::write(&w, &b).expect("write");
        nix::unistd::write(&w, &b[..3]).expect("write");
        drop(w);
        let closed = master.drain(&mut |i| got.extend_from_slice(i)).expect("drain");
        assert!(closed, "end of file is reported");
        assert_eq!(
            got,
            [Item::Update(StatusUpdate::decode(&a)), Item::Update(StatusUpdate::decode(&b)), Item::Malformed]
        );
    }
}
