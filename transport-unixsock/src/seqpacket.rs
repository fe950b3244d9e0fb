//! `seqpacket`: one private `AF_UNIX SOCK_SEQPACKET` socketpair per child,
//! gathered behind one epoll descriptor.
//!
//! Each spawn gets a socketpair of its own: the child sends 12-byte records
//! on its end at fd 5, the master keeps the other. Once
//! [`Transport::register_child`] has named the child's pid, every record on
//! that channel is reported with [`Sender::Channel`]`(pid)`: the channel
//! names the child whatever it writes, so the sans-IO master rejects a
//! claimed pid that differs as [`Outcome::ForgedPid`]. The source's one
//! descriptor is an epoll instance holding every registered channel, so it
//! is readable whenever any child's update is pending.
//!
//! # One channel per child, not one shared
//!
//! What a private channel buys over the shared channel of `dgram` (and of
//! Postfix):
//!
//! - identity without kernel credentials, and without the exception the
//!   kernel makes for senders with `CAP_SYS_ADMIN`;
//! - isolation: a child that floods fills only its own socket's buffer, and
//!   one that shuts its socket down (`shutdown(2)` acts on the socket, which
//!   a shared channel shares) ends only its own channel;
//! - the master's exit, a reload, or [`Transport::forget_child`] is seen on
//!   fd 5 itself (EOF and hang-up; the next `send` fails with `EPIPE`, which
//!   `MSG_NOSIGNAL` keeps from raising `SIGPIPE`), so no lifeline is needed,
//!   and since one open file does both jobs there is no release-order race:
//!   a notify is one `send(2)`.
//!
//! What it costs: one descriptor per live child in the master (hundreds are
//! fine; the process's descriptor limit bounds it), a socketpair per spawn
//! instead of a `dup`, and the bookkeeping below.
//!
//! # Bookkeeping
//!
//! [`Transport::child_end`] makes the pair and keeps the master's end
//! *pending* under the spawn's generation; [`Transport::register_child`]
//! moves it into the epoll set under the child's pid (updates the child sent
//! in between wait in the socket and are reported then). A channel leaves
//! the set when its child's end is closed everywhere (the child exited;
//! everything it sent is reported first) or on
//! [`Transport::forget_child`] (what it still held is read first and
//! reported before anything else). A pending end whose child end was closed
//! with nothing queued (a spawn that failed, a child that died before it was
//! registered and sent nothing) is dropped at the next `child_end`.
//!
//! # Reading
//!
//! The source reads in rounds: one `epoll_wait` names the ready channels,
//! and each yields at most one *burst* of records in turn, read with one
//! `recvmmsg(2)`, so a channel that becomes readable waits for at most one
//! burst of each other one, never for a flooding child to stop. A round
//! holds at most 512 records, shared among its channels: a burst is 64
//! records when up to 8 channels are ready, down to 8 when 64 are (the
//! most one `epoll_wait` reports). So a few busy children cost the master
//! a handful of system calls per 64 records, and many still take turns
//! 8 records at a time. After a round that yielded records,
//! [`StatusSource::try_recv`] returns `None` once even if the children have
//! refilled their channels meanwhile, so a drain ends after at most 512
//! records, however fast the children send.
//!
//! Each channel sits in the epoll set one-shot (`EPOLLONESHOT`): the
//! `epoll_wait` that reports it disarms it, and the round arms it again
//! (`EPOLL_CTL_MOD`) when it is done with it. While a channel is being read
//! its child's sends wake nobody: without it, every record sent would run
//! the epoll set's wake-up, and, where the source's descriptor is itself
//! in another epoll (tokio's, mio's, the supervisor's), that one's as well,
//! on the sender's side and under locks the master's reads take. So a
//! tokio master takes as many updates a second as a poll(2) one, instead of
//! 10-15% fewer from four busy children. Arming a channel costs the master
//! one system call per channel per round, one per 8 records when 64 or
//! more channels are busy at once.
//!
//! That `None` must not strand what the round left behind (contract item
//! 7): a master that waits edge-triggered (tokio, mio, `EPOLLET`) sleeps
//! until the descriptor makes a new edge, and a descriptor that merely stays
//! readable makes none. A channel that used up its burst is armed again
//! while still readable, which puts it back on the set's ready list at once
//! and wakes whoever waits on the epoll descriptor: a new edge for an outer
//! epoll. A round whose `epoll_wait` filled all 64 slots may leave ready
//! channels it never saw, whose entries are still on the ready list and
//! make no new edge; such a round writes an eventfd that sits in the epoll
//! set, edge-triggered there, before it returns `None`: the write is the
//! edge, and the next `epoll_wait` of the source reports the eventfd once
//! (it is never read; its counter only counts these writes). The same
//! write keeps the descriptor readable when [`StatusSource::try_recv`]
//! returns a record with channels of its round still unread (they are
//! disarmed, so nothing they receive would make it readable) or with more
//! of the burst it read kept (it reads a channel's burst in one system
//! call too, and hands the records out one call at a time), once a
//! round. Anything sent later makes its own edge, as the first record
//! arriving on an armed channel wakes the epoll descriptor's waiters.
//!
//! This flavour needs epoll, so it is built on Linux and Android only.
//!
//! # See also
//!
//! `unix(7)`, `socketpair(2)`, `epoll(7)`; Postfix
//! `src/master/master_status.c`.
//!
//! [`Sender::Channel`]: master_proto::Sender::Channel
//! [`Outcome::ForgedPid`]: master_proto::master::Outcome::ForgedPid

use std::collections::{HashMap, VecDeque};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use master_proto::env::ChildEnv;
use master_proto::{Caps, EndFds, EnvError, Identity, Received, RecvError, Sender, StatusSource, Transport};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::UnixAddr;
use socket2::Socket;

use crate::packet::{PACKET_CAPS, PacketSink, item};
use crate::sys;

/// One private `SOCK_SEQPACKET` socketpair per child; the channel names the
/// sender.
///
/// # Examples
///
/// ```
/// use master_proto::{StatusSource, Transport};
/// let mut source = master_proto_unixsock::SeqPacket.open()?;
/// let end = master_proto_unixsock::SeqPacket.child_end(&mut source, 1)?;
/// assert!(end.aux.is_empty());
/// assert_eq!(source.try_recv(), Ok(None));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SeqPacket;

impl Transport for SeqPacket {
    type Source = ChannelSource;
    type Sink = PacketSink;

    fn name(&self) -> &'static str {
        "seqpacket"
    }

    fn caps(&self) -> Caps {
        PACKET_CAPS.with_identity(Identity::Channel)
    }

    fn open(&self) -> io::Result<ChannelSource> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let rearm = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        epoll.add(&rearm, EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, REARM))?;
        Ok(ChannelSource {
            epoll,
            batch: sys::Batch::naming_senders(),
            rearm,
            channels: HashMap::new(),
            pending: Vec::new(),
            ready: VecDeque::new(),
            round_over: false,
            left_behind: false,
            held: false,
            round_spans_calls: false,
            left: VecDeque::new(),
            burst: VecDeque::new(),
        })
    }

    fn end_fds(&self, source: &mut ChannelSource, generation: u32) -> io::Result<EndFds> {
        source.prune_pending();
        let (master, child) = open_channel()?;
        source.pending.push((generation, master));
        Ok(EndFds { status: OwnedFd::from(child), aux: Vec::new() })
    }

    /// Moves the channel made for `generation` into the epoll set under
    /// `pid`.
    ///
    /// # Errors
    ///
    /// No channel is pending for `generation` (`NotFound`), `pid` is not a
    /// process id (`InvalidInput`), or adding it to the epoll set failed
    /// (for want of memory); the channel is then dropped, and the child
    /// sees the master gone, as after a reload.
    fn register_child(&self, source: &mut ChannelSource, generation: u32, pid: i32) -> io::Result<()> {
        let at = source.pending.iter().position(|(g, _)| *g == generation).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no seqpacket channel is pending for generation {generation}"),
            )
        })?;
        let (_, sock) = source.pending.swap_remove(at);
        source.forget(pid);
        // The pid is the channel's key in the epoll set.
        let key = u32::try_from(pid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{pid} is not a process id")))?;
        source.epoll.add(&sock, channel_event(key))?;
        source.channels.insert(pid, sock);
        Ok(())
    }

    /// Lets the channel of the reaped child `pid` go; what it still held is
    /// delivered first.
    ///
    /// # Errors
    ///
    /// The eventfd write that makes the descriptor fire for what was kept
    /// (which cannot fail for a valid eventfd); the channel is gone either
    /// way.
    fn forget_child(&self, source: &mut ChannelSource, pid: i32) -> io::Result<()> {
        source.forget_reaped(pid)
    }

    fn open_sink(&self, env: &mut ChildEnv) -> Result<PacketSink, EnvError> {
        let status = env.take_status()?;
        Ok(PacketSink::new(status, None, env.pid, env.generation))
    }
}

/// Opens one child's channel: the master's end, non-blocking, and the
/// child's end, bound to an address the kernel picks (an abstract one, as
/// `bind(2)` with the address family alone does). Both are close-on-exec.
///
/// The address is there only so that the end of the channel can be told
/// from an empty record: both are a read of nothing, but every record
/// names its sending socket's address, which a socket keeps from its
/// `bind` until it is freed (there is no unbinding, and binding again
/// fails), while the end names none. Kernel credentials would tell them
/// apart too, at a cost to every send and every read; the channel already
/// names the child. Nobody can connect to the address: the socket is
/// connected already and does not listen.
fn open_channel() -> io::Result<(Socket, Socket)> {
    // socket2 creates both ends close-on-exec (SOCK_CLOEXEC).
    let (master, child) = Socket::pair(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None)?;
    nix::sys::socket::bind(child.as_raw_fd(), &UnixAddr::new_unnamed())?;
    // Only the master's end: the two ends are separate open files, so the
    // child keeps a blocking send.
    master.set_nonblocking(true)?;
    Ok((master, child))
}

/// A channel's entry in the epoll set: readable, one-shot, under its
/// child's pid.
fn channel_event(key: u32) -> EpollEvent {
    EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, u64::from(key))
}

/// Arms the one-shot entry of a channel the round is done with again; one
/// still readable is back on the ready list at once, which wakes whoever
/// waits on the epoll descriptor.
fn rearm_channel(epoll: &Epoll, sock: &Socket, pid: i32) -> Result<(), RecvError> {
    let key = u32::try_from(pid).unwrap_or(u32::MAX);
    epoll.modify(sock, &mut channel_event(key)).map_err(RecvError::Io)
}

/// How many ready channels one `epoll_wait` reports at most.
const EVENTS: usize = 64;

/// The epoll key of the rearm eventfd: no pid (those are `u32` keys).
const REARM: u64 = u64::MAX;

/// How many records one round yields at most, shared among its channels
/// (see [`burst`]): a drain ends after at most this many.
const ROUND: usize = EVENTS * MIN_BURST;

/// The fewest records a ready channel may yield in a round, however many
/// are ready.
const MIN_BURST: usize = 8;

/// How many records each of `ready` channels yields in a round before the
/// source moves on: the round's share, at least [`MIN_BURST`] and at most
/// what one `recvmmsg` takes. A round is one `epoll_wait`, so a channel
/// that became readable waits for at most this many records of each
/// channel already in the round. (A channel armed again while still
/// readable goes to the end of the epoll set's ready list, so more than
/// [`EVENTS`] ready channels take turns too.)
fn burst(ready: usize) -> u8 {
    u8::try_from((ROUND / ready.max(1)).clamp(MIN_BURST, sys::SLOTS)).unwrap_or(u8::MAX)
}

// A burst is counted in a u8.
const _: () = assert!(sys::SLOTS <= u8::MAX as usize);

/// The master's end of a [`SeqPacket`] channel: every child's private
/// socket, behind one epoll descriptor.
///
/// All its descriptors are close-on-exec, so none leaks into a child.
/// Dropping it closes every channel: each child's next `notify` returns
/// `Disconnected` and its fd 5 reports hang-up. This is how a reload makes
/// old children exit.
#[derive(Debug)]
pub struct ChannelSource {
    /// Registered channels by child pid (also their epoll key). First, so
    /// that dropping the source hangs up on the children before anything
    /// else.
    channels: HashMap<i32, Socket>,
    /// Master ends made for spawns not registered yet, by generation.
    pending: Vec<(u32, Socket)>,
    epoll: Epoll,
    /// The receive buffers, reused by every read.
    batch: sys::Batch,
    /// In the epoll set, edge-triggered: written when a round that may have
    /// left ready channels unseen ends, so that the epoll descriptor makes
    /// a new edge, and to keep it readable while channels of a round wait
    /// unread (see `hold_readable`).
    rearm: EventFd,
    /// This round's channels, from one `epoll_wait`, with how many records
    /// each may still yield in it, so that no child starves the others.
    ready: VecDeque<(i32, u8)>,
    /// Whether the round that just ended yielded a record: the next
    /// `try_recv` then says `None` once, so that a drain ends.
    round_over: bool,
    /// Whether this round may leave ready channels unseen: `epoll_wait`
    /// filled all [`EVENTS`] slots. (A channel that used up its [`burst`]
    /// makes its own edge when it is armed again.)
    left_behind: bool,
    /// Whether the rearm eventfd was written since the last `epoll_wait`
    /// to keep the descriptor readable (see `hold_readable`).
    held: bool,
    /// Whether the round in progress began in an earlier call of
    /// `try_recv` or `drain` (see `edge_if_pending`).
    round_spans_calls: bool,
    /// What the channels of reaped children held when they were forgotten,
    /// delivered before anything else.
    left: VecDeque<Received>,
    /// The rest of the burst [`StatusSource::try_recv`] read last, handed
    /// out before anything else.
    burst: VecDeque<Received>,
}

impl ChannelSource {
    /// Reads what the channel of the reaped child `pid` still holds into
    /// [`left`](Self::left) (its socket buffer bounds it), then drops the
    /// channel; rings the rearm eventfd if anything was kept, so that the
    /// descriptor fires for it, edge-triggered or not.
    fn forget_reaped(&mut self, pid: i32) -> io::Result<()> {
        let before = self.left.len();
        if let Some(sock) = self.channels.get(&pid) {
            // A read that fails ends the channel as its end does, and so
            // does a read of nothing that names no sender (see
            // `open_channel`).
            'channel: while let Ok(msgs) = self.batch.recv(sock.as_fd(), sys::SLOTS) {
                if msgs.is_empty() {
                    break;
                }
                for msg in msgs {
                    if msg.len == 0 && !msg.named {
                        break 'channel;
                    }
                    self.left.push_back(item(msg, Sender::Channel(pid)));
                }
            }
        }
        self.forget(pid);
        if self.left.len() > before {
            self.rearm.write(1).map_err(io::Error::from)?;
        }
        Ok(())
    }

    /// Drops the channel of `pid`, if any: its child's fd 5 reports hang-up.
    fn forget(&mut self, pid: i32) {
        if let Some(sock) = self.channels.remove(&pid) {
            // Closing the socket removes it from the epoll set (nothing else
            // holds this open file); deleting first says so explicitly, and
            // cannot fail for a registered descriptor.
            let _ = self.epoll.delete(&sock);
        }
    }

    /// Drops the pending ends whose child end is closed and that hold
    /// nothing: spawns that failed, and children that died unregistered
    /// without sending anything.
    fn prune_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let hung_up: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> =
                self.pending.iter().map(|(_, s)| PollFd::new(s.as_fd(), PollFlags::POLLIN)).collect();
            loop {
                match poll(&mut fds, PollTimeout::ZERO) {
                    Ok(_) => break,
                    Err(Errno::EINTR) => {}
                    // Pruning is housekeeping: try again at the next spawn.
                    Err(_) => return,
                }
            }
            fds.iter().map(|fd| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLHUP))).collect()
        };
        let mut hung_up = hung_up.into_iter();
        self.pending.retain(|(_, sock)| {
            if !hung_up.next().unwrap_or(false) {
                return true;
            }
            // Keep it if a record is queued: its child sent something
            // before dying, to be reported once it is registered.
            let mut byte = [MaybeUninit::<u8>::uninit(); 1];
            !matches!(sock.peek(&mut byte), Ok(0))
        });
    }

    /// Which registered child a key from epoll names.
    fn pid_of(event: &EpollEvent) -> Option<i32> {
        u32::try_from(event.data()).ok().and_then(|key| i32::try_from(key).ok())
    }
}

impl AsFd for ChannelSource {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

impl ChannelSource {
    /// Keeps the epoll descriptor readable until the source's next
    /// `epoll_wait`, for the channels this round has yet to read: epoll
    /// disarmed them when it reported them, so nothing they receive makes
    /// the descriptor readable until they are read and armed again. The
    /// rearm eventfd is written once a round; it stays on the ready list
    /// until that `epoll_wait` reports it.
    fn hold_readable(&mut self) -> Result<(), RecvError> {
        if !self.held {
            self.rearm.write(1).map_err(RecvError::Io)?;
            self.held = true;
        }
        Ok(())
    }

    /// Makes a new edge, within this call, if anything is pending as a
    /// round that began in an earlier call ends. A master that waits
    /// edge-triggered takes its readiness before each call and clears it
    /// at `None`: an edge made by an earlier call (a channel armed again
    /// while still readable, a record that arrived on a channel the round
    /// had read) may already be in that readiness, and cleared with it. (A
    /// round that begins and ends in one call, a drain's, makes every edge
    /// after the readiness its caller clears.)
    fn edge_if_pending(&mut self) -> Result<(), RecvError> {
        let mut fds = [PollFd::new(self.epoll.0.as_fd(), PollFlags::POLLIN)];
        let readable = loop {
            match poll(&mut fds, PollTimeout::ZERO) {
                Ok(n) => break n > 0,
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(RecvError::Io(errno)),
            }
        };
        if readable {
            self.rearm.write(1).map_err(RecvError::Io)?;
        }
        Ok(())
    }

    /// The next records of this round, at most `max` and at most what is
    /// left of their channel's burst, read in one system call: the
    /// channel's pid and how many records there are (the first messages
    /// [`sys::Batch::received`] holds), or `None` once a round that yielded
    /// records is over, or when no channel is ready.
    fn next_records(&mut self, max: usize) -> Result<Option<(i32, usize)>, RecvError> {
        loop {
            while let Some(&(pid, burst)) = self.ready.front() {
                let Some(sock) = self.channels.get(&pid) else {
                    // Forgotten since epoll reported it.
                    self.ready.pop_front();
                    continue;
                };
                let want = max.min(usize::from(burst));
                let msgs = match self.batch.recv(sock.as_fd(), want) {
                    Ok(msgs) => msgs,
                    // The child's end went away with an error to report:
                    // the channel is over, as at its end.
                    Err(Errno::ECONNRESET) => {
                        self.ready.pop_front();
                        self.forget(pid);
                        continue;
                    }
                    Err(errno) => {
                        // The channels of this round wait disarmed in
                        // `ready`: the descriptor must stay readable for
                        // them. The read's error is the one to report.
                        let _ = self.hold_readable();
                        return Err(RecvError::Io(errno));
                    }
                };
                // A read of nothing that names no sender is the end of this
                // child's channel (see `open_channel`): it exited (all its
                // records were read before this), or shut its socket down;
                // nothing more can come from it. (The kernel reports the end
                // again for every slot left in the batch.)
                let records = msgs.iter().position(|m| m.len == 0 && !m.named).unwrap_or(msgs.len());
                let ended = records < msgs.len();
                let taken = msgs.len();
                // At most `burst` (a u8) records were asked for.
                let left = burst.saturating_sub(u8::try_from(records).unwrap_or(u8::MAX));
                if ended || taken < want || left == 0 {
                    // Done with this channel for the round: it ended, it
                    // had no more (the kernel stopped short), or it used up
                    // its burst and may have more.
                    self.ready.pop_front();
                    if !ended {
                        rearm_channel(&self.epoll, sock, pid)?;
                    }
                } else if let Some(front) = self.ready.front_mut() {
                    front.1 = left;
                }
                if ended {
                    self.forget(pid);
                }
                if records == 0 {
                    continue;
                }
                self.round_over = self.ready.is_empty();
                return Ok(Some((pid, records)));
            }
            if std::mem::take(&mut self.round_over) {
                // The end of a round that yielded records: a drain stops
                // here even if children refilled their channels meanwhile,
                // so that children sending as fast as the master reads
                // cannot keep it from its other work. What the round left
                // behind gets a new edge (see the module docs). The write
                // cannot fail: the counter would need 2^64 rounds to fill.
                if std::mem::take(&mut self.left_behind) {
                    self.rearm.write(1).map_err(RecvError::Io)?;
                } else if self.round_spans_calls {
                    self.edge_if_pending()?;
                }
                return Ok(None);
            }
            let mut events = [EpollEvent::empty(); EVENTS];
            let n = loop {
                match self.epoll.wait(&mut events, PollTimeout::ZERO) {
                    Ok(n) => break n,
                    Err(Errno::EINTR) => {}
                    Err(errno) => return Err(RecvError::Io(errno)),
                }
            };
            // The eventfd, if it was written to hold the descriptor
            // readable, was reported (and so taken) by this wait.
            self.held = false;
            self.round_spans_calls = false;
            if n == 0 {
                return Ok(None);
            }
            self.left_behind = n == EVENTS;
            // The rearm eventfd has no pid: it only made the edge that
            // brought the master here.
            let channels = || events.iter().take(n).filter_map(Self::pid_of);
            let burst = burst(channels().count());
            self.ready.extend(channels().map(|pid| (pid, burst)));
        }
    }
}

impl StatusSource for ChannelSource {
    /// Reads a channel's burst in one system call, as
    /// [`drain`](StatusSource::drain) does, and hands its records out one
    /// call at a time.
    fn try_recv(&mut self) -> Result<Option<Received>, RecvError> {
        // What was read first goes first: a channel's records kept here
        // came before what its forget found in it.
        let next = match self.burst.pop_front() {
            Some(item) => item,
            None => match self.left.pop_front() {
                Some(item) => return Ok(Some(item)),
                None => {
                    self.round_spans_calls = true;
                    let Some((pid, records)) = self.next_records(sys::SLOTS)? else { return Ok(None) };
                    let mut msgs =
                        self.batch.received().iter().take(records).map(|msg| item(msg, Sender::Channel(pid)));
                    let Some(first) = msgs.next() else { return Ok(None) };
                    self.burst.extend(msgs);
                    first
                }
            },
        };
        // The caller may wait now, with records kept here or channels of
        // the round unread.
        if !self.burst.is_empty() || !self.ready.is_empty() {
            self.hold_readable()?;
        }
        Ok(Some(next))
    }

    /// What [`try_recv`](StatusSource::try_recv) kept of a burst, what
    /// reaped children left, then one round, as
    /// [`try_recv`](StatusSource::try_recv) until `None`, but each
    /// channel's burst is one system call (`recvmmsg(2)`).
    fn drain(&mut self, mut f: impl FnMut(Received)) -> Result<usize, RecvError> {
        self.round_spans_calls = true;
        let mut n = self.burst.len() + self.left.len();
        self.burst.drain(..).for_each(&mut f);
        self.left.drain(..).for_each(&mut f);
        while let Some((pid, records)) = self.next_records(sys::SLOTS)? {
            for msg in self.batch.received().iter().take(records) {
                f(item(msg, Sender::Channel(pid)));
            }
            n += records;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use master_proto::{Status, StatusUpdate};
    use nix::sys::socket::{MsgFlags, send};

    use super::*;

    /// A source with one registered channel per pid; the child ends.
    fn source_with(pids: &[i32]) -> (ChannelSource, Vec<OwnedFd>) {
        let mut source = SeqPacket.open().expect("open");
        let mut ends = Vec::new();
        for (generation, &pid) in (1..).zip(pids) {
            ends.push(SeqPacket.child_end(&mut source, generation).expect("child_end").status);
            SeqPacket.register_child(&mut source, generation, pid).expect("register");
        }
        (source, ends)
    }

    fn send_update(end: &OwnedFd, pid: i32, status: Status) {
        let record = StatusUpdate { pid, generation: 1, status }.encode();
        assert_eq!(send(end.as_raw_fd(), &record, MsgFlags::MSG_DONTWAIT), Ok(record.len()));
    }

    fn readable(fd: BorrowedFd<'_>) -> bool {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).expect("poll") > 0
    }

    /// A source with one channel, `pid`'s, holding more records than one
    /// burst, under an edge-triggered epoll as tokio's or mio's; how many
    /// records were sent.
    fn flooded_under_epoll(pid: i32) -> (ChannelSource, Vec<OwnedFd>, Epoll, usize) {
        let (source, ends) = source_with(&[pid]);
        let outer = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll");
        outer.add(source.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 7)).expect("add");
        let sent = sys::SLOTS + 5;
        for _ in 0..sent {
            send_update(&ends[0], pid, Status::TAKEN);
        }
        (source, ends, outer, sent)
    }

    fn sender_of(item: Option<Received>) -> Sender {
        match item {
            Some(Received::Update { sender, .. }) => sender,
            other => panic!("not an update: {other:?}"),
        }
    }

    /// epoll disarms the channels it reports: one `try_recv` that leaves a
    /// channel of its round unread keeps the descriptor readable (a
    /// level-triggered master may wait now), and what is sent meanwhile to
    /// the channel it read is reported after the round, with a wake-up.
    #[test]
    fn a_round_read_one_record_at_a_time_keeps_the_descriptor_readable() {
        let (mut source, ends) = source_with(&[41, 42]);
        send_update(&ends[0], 41, Status::TAKEN);
        send_update(&ends[1], 42, Status::TAKEN);
        let first = sender_of(source.try_recv().expect("read"));
        assert!(readable(source.as_fd()), "a channel of the round is unread");
        let second = sender_of(source.try_recv().expect("read"));
        let mut senders = [first, second];
        senders.sort_by_key(|s| format!("{s:?}"));
        assert_eq!(senders, [Sender::Channel(41), Sender::Channel(42)]);
        // Both channels are armed again: a record sent now wakes the
        // descriptor and is read.
        assert_eq!(source.try_recv(), Ok(None));
        while source.try_recv().expect("read").is_some() {}
        send_update(&ends[0], 41, Status::AVAIL);
        assert!(readable(source.as_fd()), "a record on a channel armed again");
        assert_eq!(sender_of(source.try_recv().expect("read")), Sender::Channel(41));
    }

    /// A master that waits edge-triggered and reads with `try_recv` (or
    /// one `try_recv`, then `drain`) takes readiness before each call: the
    /// edge made when the first call armed a still readable channel again
    /// may be taken then, and cleared at the round's `None`. The `None`
    /// of a round that spanned calls makes a new edge if anything is
    /// pending, and none when nothing is.
    #[test]
    fn a_round_over_several_calls_ends_with_an_edge_for_what_is_pending() {
        for then_drain in [false, true] {
            let (mut source, ends, outer, sent) = flooded_under_epoll(44);
            let mut events = [EpollEvent::empty(); 4];
            let mut got = usize::from(source.try_recv().expect("read").is_some());
            // The edges so far, taken as a reactor takes them between calls.
            while outer.wait(&mut events, PollTimeout::ZERO) == Ok(1) {}
            if then_drain {
                got += source.drain(|_| {}).expect("drain");
            } else {
                while source.try_recv().expect("read").is_some() {
                    got += 1;
                }
            }
            assert!(got < sent, "one round: {got}");
            assert_eq!(
                outer.wait(&mut events, PollTimeout::ZERO),
                Ok(1),
                "then_drain {then_drain}: no edge for the rest"
            );
            got += source.drain(|_| {}).expect("drain");
            assert_eq!(got, sent);
            // Nothing pending: a round that spanned calls makes no edge.
            let _ = source.try_recv().expect("read");
            while outer.wait(&mut events, PollTimeout::ZERO) == Ok(1) {}
            send_update(&ends[0], 44, Status::AVAIL);
            assert!(source.try_recv().expect("read").is_some());
            while outer.wait(&mut events, PollTimeout::ZERO) == Ok(1) {}
            assert_eq!(source.try_recv(), Ok(None));
            assert_eq!(outer.wait(&mut events, PollTimeout::ZERO), Ok(0), "an edge with nothing pending");
        }
    }

    /// A drain that ends with a channel's burst used up leaves an edge for
    /// an edge-triggered master above: the channel, armed again while
    /// readable, wakes it, and the rest is read next.
    #[test]
    fn a_burst_used_up_makes_a_new_edge_for_an_outer_epoll() {
        let (mut source, _ends, outer, sent) = flooded_under_epoll(43);
        let mut events = [EpollEvent::empty(); 4];
        assert_eq!(outer.wait(&mut events, PollTimeout::ZERO), Ok(1));
        let first = source.drain(|_| {}).expect("drain");
        assert!(first < sent, "one round reads one burst: {first}");
        assert_eq!(outer.wait(&mut events, PollTimeout::ZERO), Ok(1), "no new edge for the rest");
        let rest = source.drain(|_| {}).expect("drain");
        assert_eq!(first + rest, sent);
    }
}
