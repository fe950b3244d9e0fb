//! Fuzz target `packet`: the master's end of the `dgram` and `seqpacket`
//! transports (crate `master-proto-unixsock`) fed arbitrary messages through
//! real socketpairs: any length (empty, short, 12 bytes, longer than the
//! receive buffer), credentials (none, the sender's own, another pid's, sent
//! twice) and attached descriptors (`SCM_RIGHTS`, up to the kernel's 253).
//!
//! The sending end is the child's end a transport hands out, driven with
//! `sendmsg(2)` directly, as a hostile child could. Going through the
//! kernel keeps what it does (`MSG_TRUNC`, credentials it adds or refuses,
//! descriptors it installs in the receiver) in the test instead of a model
//! of it. Checked:
//! - every message the kernel took arrives once, in order, as what it is: a
//!   12-byte message as the update its bytes encode, anything else as
//!   `Malformed::Short(len)` or `Malformed::Oversized(real len)`;
//! - the sender is the one the kernel vouches for: `KernelPid` of the
//!   credentials the kernel accepted (`dgram`), or `Channel` of the pid the
//!   master registered for that channel, whatever it sends (`seqpacket`);
//! - no descriptor a child attached stays open in the master: after every
//!   drain the process has as many open as before the messages came;
//! - a `seqpacket` channel whose child end closed reports what was queued,
//!   then nothing, and never an error.

#![no_main]

use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use master_proto::{Malformed, Received, Sender, StatusSource, StatusUpdate, Transport, WIRE_SIZE};
use master_proto_unixsock::{Dgram, SeqPacket};
use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, UnixCredentials, sendmsg};

#[derive(Arbitrary, Debug)]
struct Input {
    seqpacket: bool,
    /// The pids the master registers the two `seqpacket` channels under.
    pids: (u16, u16),
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Send {
        child: bool,
        payload: Payload,
        cmsgs: Vec<Cmsg>,
    },
    /// The master reads everything pending.
    Drain,
    /// A `seqpacket` child's end closes (its process exited).
    Close {
        child: bool,
    },
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Record { pid: i32, generation: u32, status: i32 },
    Bytes(Vec<u8>),
    Long { len: u16, byte: u8 },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Cmsg {
    /// `SCM_RIGHTS` with this many descriptors (modulo 16).
    Rights(u8),
    /// `SCM_RIGHTS` with the most the kernel allows.
    ManyRights,
    /// `SCM_CREDENTIALS`: the sender's own.
    OwnCredentials,
    /// `SCM_CREDENTIALS` naming another pid (the kernel refuses it unless
    /// the sender may, and the pid exists).
    Credentials(i32),
}

/// The kernel's `SCM_MAX_FD`.
const SCM_MAX_FD: usize = 253;

/// How many descriptors this process has open.
fn open_fds() -> usize {
    // Less the one reading the directory.
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count() - 1
}

fn own_pid() -> i32 {
    i32::try_from(std::process::id()).expect("a pid fits an i32")
}

/// What the master should report for `payload` (given its length).
fn expected(bytes: &[u8], sender: Sender) -> Received {
    match StatusUpdate::decode_packet(bytes) {
        Ok(update) => Received::Update { update, sender },
        Err(_) if bytes.len() > WIRE_SIZE => Received::Malformed(Malformed::Oversized(bytes.len())),
        Err(m) => Received::Malformed(m),
    }
}

/// Takes everything pending, as a master's loop would after a wake-up (a
/// `seqpacket` source ends a drain after a round that yielded records, so
/// look until it says nothing twice).
fn drain(source: &mut dyn FnMut() -> Option<Received>, got: &mut Vec<Received>) {
    let mut empty = 0;
    while empty < 2 {
        match source() {
            Some(item) => {
                got.push(item);
                empty = 0;
            }
            None => empty += 1,
        }
    }
}

fuzz_target!(|input: Input| {
    let before = open_fds();
    run(input);
    assert_eq!(open_fds(), before, "a descriptor leaked");
});

fn run(input: Input) {
    let null = File::open("/dev/null").expect("open /dev/null");
    let own = UnixCredentials::new();
    let pids = [i32::from(input.pids.0) + 1, i32::from(input.pids.1) + 70_000];

    // The source, and two children's ends.
    let mut dgram_source = None;
    let mut seq_source = None;
    let mut children: [Option<OwnedFd>; 2] = [None, None];
    if input.seqpacket {
        let mut source = SeqPacket.open().expect("open");
        for (k, child) in children.iter_mut().enumerate() {
            let generation = u32::try_from(k).expect("0 or 1");
            *child = Some(SeqPacket.child_end(&mut source, generation).expect("child end").status);
            SeqPacket.register_child(&mut source, generation, pids[k]).expect("register_child");
        }
        seq_source = Some(source);
    } else {
        let mut source = Dgram.open().expect("open");
        for child in &mut children {
            *child = Some(Dgram.child_end(&mut source, 1).expect("child end").status);
        }
        dgram_source = Some(source);
    }
    let mut try_recv = || -> Option<Received> {
        let item = match (&mut dgram_source, &mut seq_source) {
            (Some(source), _) => source.try_recv(),
            (_, Some(source)) => source.try_recv(),
            _ => unreachable!("one source is open"),
        };
        item.expect("a source never fails for what a child sends")
    };
    // Open now; less, once drained, two for each closed child's channel
    // (its end, and the master's end that the source then drops).
    let open = open_fds();
    let mut closed = 0;

    let (mut want, mut got) = (Vec::new(), Vec::new());
    for op in input.ops.into_iter().take(64).chain([Op::Drain]) {
        match op {
            Op::Send { child, payload, cmsgs } => {
                let k = usize::from(child);
                let Some(fd) = children[k].as_ref() else { continue };
                let bytes = match payload {
                    Payload::Record { pid, generation, status } => {
                        StatusUpdate { pid, generation, status: master_proto::Status(status) }.encode().to_vec()
                    }
                    Payload::Bytes(bytes) => bytes,
                    Payload::Long { len, byte } => vec![byte; usize::from(len % 8192)],
                };
                // The descriptors to attach, and the credentials to claim.
                let mut rights: Vec<Vec<OwnedFd>> = Vec::new();
                let mut creds: Vec<UnixCredentials> = Vec::new();
                // At most one more descriptor than the kernel takes in one
                // message, so that the limit is tried without running this
                // process out of descriptors.
                let mut budget = SCM_MAX_FD + 1;
                let mut attach = |n: usize| -> Vec<OwnedFd> {
                    let n = n.min(budget);
                    budget -= n;
                    (0..n).map(|_| null.try_clone().expect("dup").into()).collect()
                };
                for c in cmsgs.iter().take(4) {
                    match *c {
                        Cmsg::Rights(n) => rights.push(attach(usize::from(n % 16))),
                        Cmsg::ManyRights => rights.push(attach(SCM_MAX_FD)),
                        Cmsg::OwnCredentials => creds.push(own),
                        Cmsg::Credentials(pid) => {
                            creds.push(UnixCredentials::from(nix::libc::ucred { pid, uid: own.uid(), gid: own.gid() }))
                        }
                    }
                }
                let raw: Vec<Vec<RawFd>> =
                    rights.iter().map(|fds| fds.iter().map(AsRawFd::as_raw_fd).collect()).collect();
                let mut control: Vec<ControlMessage<'_>> =
                    raw.iter().map(|fds| ControlMessage::ScmRights(fds)).collect();
                control.extend(creds.iter().map(ControlMessage::ScmCredentials));
                let sent = sendmsg::<UnixAddr>(
                    fd.as_fd().as_raw_fd(),
                    &[IoSlice::new(&bytes)],
                    &control,
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                    None,
                );
                // Our copies go now; the kernel holds its own in flight.
                drop(rights);
                // Refused (no room, too many descriptors in flight,
                // credentials the sender may not claim, too long): nothing
                // was queued.
                if let Ok(n) = sent {
                    assert_eq!(n, bytes.len(), "a datagram is sent whole");
                    let sender = if input.seqpacket {
                        Sender::Channel(pids[k])
                    } else {
                        // The kernel keeps the last credentials given, or
                        // attaches the sender's own.
                        Sender::KernelPid(creds.last().map_or(own_pid(), UnixCredentials::pid))
                    };
                    want.push(expected(&bytes, sender));
                }
            }
            Op::Drain => {
                drain(&mut try_recv, &mut got);
                if input.seqpacket {
                    // Two channels: each in its own order, and between them
                    // in any (a malformed item names no channel).
                    for pid in pids {
                        let of = |items: &[Received]| -> Vec<Received> {
                            items
                                .iter()
                                .filter(
                                    |i| matches!(i, Received::Update { sender: Sender::Channel(p), .. } if *p == pid),
                                )
                                .copied()
                                .collect()
                        };
                        assert_eq!(of(&got), of(&want), "channel {pid}: not what the kernel took, in order");
                    }
                    let key = |r: &Received| format!("{r:?}");
                    let (mut g, mut w) = (got.clone(), want.clone());
                    g.sort_by_key(key);
                    w.sort_by_key(key);
                    assert_eq!(g, w, "what the master read is not what the kernel took");
                } else {
                    assert_eq!(got, want, "what the master read is not what the kernel took, in order");
                }
                assert_eq!(open_fds(), open - 2 * closed, "a descriptor a child attached is still open");
            }
            Op::Close { child } => {
                if input.seqpacket && children[usize::from(child)].take().is_some() {
                    closed += 1;
                }
            }
        }
    }
}
