//! `memfd`: shared-memory status rings in sealed memfds, one per child, each
//! with an eventfd doorbell, a robust-futex death word and a lifeline
//! (Linux).
//!
//! On other platforms this crate is empty: the transport is not available
//! there, and the conformance crate's list of transports leaves it out.
//!
//! # What each side holds
//!
//! | what | made | the master maps | the child gets | the child maps |
//! |---|---|---|---|---|
//! | ring memfd, one per child | in `child_end`, sized once, sealed `SHRINK`/`GROW`/`SEAL` | read-write | fd 5 | read-write |
//! | control memfd, one per channel | in `open`, one page, sealed `SHRINK`/`GROW`/`FUTURE_WRITE`/`SEAL` after the master mapped it | read-write | aux `control` | read-only (no writable mapping is possible any more) |
//! | doorbell eventfd, one per child | in `child_end`, in the master's epoll set | — | aux `doorbell` | — |
//! | lifeline pipe, one per channel | in `open`; the write end stays in the master | — | aux `lifeline` (read end) | — |
//!
//! The master's [`StatusSource`](master_proto::StatusSource) descriptor is
//! an epoll instance holding every child's doorbell and one more eventfd
//! that only the master rings (its own bell). A child's ring is private to it: the master names its
//! updates [`Sender::Channel`](master_proto::Sender::Channel) with the pid
//! given to [`register_child`](master_proto::Transport::register_child) for
//! that ring, whatever pid the child writes.
//!
//! # Memory layout
//!
//! A ring (byte offsets; native-endian words, accessed only as atomics on
//! both sides, the header's as 32-bit words and the slots' as 64-bit ones):
//!
//! | offset | word | written by |
//! |---|---|---|
//! | 0 | `waiting`: non-zero while the child sleeps on a full ring | child |
//! | 32 | `sleep`: non-zero while the master sleeps on this ring (the child rings after publishing) | master |
//! | 64 | `tail`: index of the next record to consume (a futex word) | master |
//! | 68 | `capacity`: slots, a power of two ([`RING_SLOTS`]) | master, before the child exists |
//! | 128 + 16·k | slot k, word `rec`: `seq` (high 32 bits), `status` (low) | child |
//! | 136 + 16·k | slot k, word `who`: `generation` (high 32 bits), `pid` (low) | child |
//!
//! Indices run freely (wrapping `u32`); record `i` lives in slot
//! `i mod capacity`. Its `seq` is `2i+1` while it is being written and
//! `2i+2` once published.
//!
//! The control area (one page):
//!
//! | offset | word | meaning |
//! |---|---|---|
//! | 0 | (unused) | |
//! | 4 | `fence` | 1: the master issues `membarrier(GLOBAL_EXPEDITED)` on its way to sleep on rings |
//! | 8 | `armed` | 1: the death word is on a robust futex list |
//! | 12 | `life` | the death word: the master's watch thread's TID; bit `0x4000_0000` set once the master has gone |
//!
//! # Protocol
//!
//! **Publish** (the child's `notify`): if `life` says the master has gone,
//! return `Disconnected`. If the ring is full, block (below). Write the
//! slot: `rec` = (writing, 0), `who`, then `rec` = (published, status)
//! with release: that one 64-bit store publishes the whole record. Then a
//! fence, then read the ring's own `sleep` word; only if it is set, write
//! its doorbell. While the master watches the ring that is two loads,
//! three stores into the ring and a compiler fence: no system call, no
//! locked instruction. (A child's threads share its one ring through a
//! lock biased towards the first thread that notifies: that thread enters
//! it with plain stores; another thread revokes the bias once, with a
//! private expedited `membarrier`, after which all take a mutex private to
//! the child.)
//!
//! **Consume** (the master's `drain` or `try_recv`): a pass takes the rings
//! the master looks at (below) in turn, up to 64 records from each. For
//! each, read the `rec` word of the slot the master's own `tail` names
//! (acquire): "published, record `tail`" is a record (then `who`); "being
//! written" or the slot's previous value (zero before the ring's first
//! lap, then the previous lap's record) is nothing yet; anything else is a
//! slot the child scribbled on, reported once as
//! [`Malformed::Corrupt`](master_proto::Malformed::Corrupt): the master
//! puts the slot's previous value back (a compare-and-swap, so a store the
//! child made since is kept) and keeps its index. The master reads no index
//! of the child's: every slot offset is its own index masked by its own
//! capacity, so nothing a child writes moves where the master reads, and it
//! never gets ahead of what the child published. The master writes `tail`
//! back every quarter ring and whenever a ring runs empty. One `drain`
//! makes at most 64 passes, so children that outrun the master cannot keep
//! it there; a drain ended so rings the master's own bell (below).
//! `try_recv` makes one pass when it has nothing in hand, and hands out
//! what it took one item at a time.
//!
//! **Sleep and wake, per ring**, no wake-up lost. The master *watches* a
//! ring (`sleep` clear: it looks at it on every pass, and the child does
//! not ring) or *sleeps on* it (`sleep` set: the child rings after every
//! publish, and the master looks at the ring only once its doorbell rang).
//! A new ring is slept on. Going to sleep on rings it watched, the master
//! sets `sleep` in each, issues one full barrier for all of them
//! (`membarrier` when children registered for it, else a `SeqCst` fence on
//! both sides), and looks at each once more: either that look sees the
//! record, or the child sees `sleep` set and rings. Before it looks at a
//! ring it sleeps on, the master resets the ring's doorbell, so a record
//! the look misses rings it again; `sleep` stays set meanwhile, so that
//! look needs no barrier. The master watches a ring it sleeps on once the
//! ring yields a second record in a row (the first is returned at once: an
//! update now and then, as a prefork service's children send them, costs
//! the master a look or two at its child's ring and no barrier); it clears
//! `sleep`, first making its own bell readable so that a master that polls
//! before draining never waits on the ring's records. It goes back to
//! sleep on a ring it watches once the ring was found empty twice in a row
//! and the second time by a pass that found nothing at all (the first
//! such pass ends the call: see edge-triggered masters, below), or 32
//! times in a row while other rings keep the passes busy; the rings that
//! went idle together share the barrier. So a child producing steadily, a
//! little slower than the master drains, finds its ring watched instead of
//! ringing for every update; the price is one spurious readiness of the
//! master's descriptor after a busy period (a poll that returns at once,
//! then a call that finds nothing and goes to sleep on the rings that
//! were busy). The memory-ordering argument is in the module `ring`'s
//! docs, and its loom models check it (below).
//!
//! **Which rings a look takes**: a look at a ring reads the slot at the
//! master's `tail`, one cache line in a page of its own (a cache miss and,
//! under a hypervisor, a costly TLB miss), so a pass looks only at the
//! rings the master watches and at the rings it sleeps on that rang, or
//! yielded records and may hold more (it asks epoll which rang, then
//! resets each doorbell before looking at its ring); a ring slept on and
//! found empty leaves that set. Going to sleep looks again at the rings
//! that were busy, not at every ring: a wake-up of a master with hundreds
//! of idle children costs what it costs with one. The children's marks
//! come through the kernel, not a shared page: a page they all could write
//! would let one child clear another's mark, and lose its wake-up; and
//! each child reads only its own ring's `sleep` word, which nobody else
//! can write but the master.
//!
//! **Edge-triggered masters** (tokio, mio, `EPOLLET`; contract item 7): a
//! readable bell makes no new edge, and children of watched rings do not
//! ring. So whenever a `try_recv` or `drain` call ends a drain with some
//! ring watched, items in hand or records maybe left (`drain`'s bound),
//! the master rings its own bell, unless that same call already rang it
//! without resetting it since (the ring that made it watch a ring, in a
//! `drain`): the counter changes, which wakes the epoll instance's
//! waiters, a new edge, and the master's next wait returns at once to look
//! again (and then, finding nothing, to go to sleep on those rings, after
//! which their children ring). A ring in an earlier call does not count: a
//! reactor on another thread (tokio's multi-thread runtime) may have taken
//! that edge already, and clears the readiness it made once this call
//! says `None`. A call that ends with every ring slept on resets the own
//! bell, and needs nothing more: every later publish rings. This costs the
//! master one eventfd write per drain that ends with rings watched; the
//! child's side is unchanged (no system call, no locked instruction while
//! the master watches its ring).
//!
//! **Master gone**: a thread of the master (the death watch, one per
//! process, which sleeps for ever) has a robust futex list
//! (`set_robust_list(2)`) whose entries name the `life` word of every open
//! channel. When that thread dies, whatever killed the process, the kernel
//! sets `FUTEX_OWNER_DIED` (`0x4000_0000`) in each, and every child sees it
//! in its read-only mapping: its next `notify` returns `Disconnected`
//! without a system call. An orderly close (dropping the source) unlinks
//! the entry and sets the same bit. The list entries live in private
//! memory next to the control page, out of the children's sight. Where the
//! kernel refuses the robust list, `armed` is 0 and `notify` polls the
//! lifeline instead (one `poll(2)` per update). A child that waits without
//! sending polls its lifeline, which fires when the master's write end
//! closes.
//!
//! **Back-pressure** ([`BackPressure::Block`](master_proto::BackPressure)):
//! a child whose ring is full sets `waiting`, fences, re-reads `tail`, and
//! sleeps in `FUTEX_WAIT` on `tail` (a shared futex) for at most 20 ms at a
//! time, looking at the death word between waits. The master, after
//! writing `tail`, fences and wakes the child if `waiting` is set. Nothing
//! is lost: [`Delivery::EveryUpdate`](master_proto::Delivery).
//!
//! # What a hostile child can do
//!
//! Write anything into its own ring at any time ([`MemfdSink::scribble`]
//! does, for tests). The master then reports `Corrupt` items, or
//! updates with whatever pid and status the child wrote, all under that
//! child's [`Sender::Channel`](master_proto::Sender::Channel) pid. It can
//! set `waiting` for ever (the master then makes one `FUTEX_WAKE` per write
//! back of its `tail`), write its ring's `sleep` word (it only decides
//! whether this child rings: the master never reads it back, and keeps
//! its own account of which rings it sleeps on), ring or reset its
//! doorbell (the master wakes up for nothing, or this child's records wait
//! until it rings again, or the master forgets it), or publish without
//! ringing (the same). It holds no other child's doorbell and can write no
//! other child's `sleep` word, so it cannot strand another child's
//! records. It cannot resize or unmap any memory the master maps (sealed),
//! write another child's ring (it has no descriptor for it) or the control
//! area (sealed against writable mappings and writes), or make the master
//! block: no lock exists that a child could hold, and a child killed at any
//! instruction leaves at most one half-written record in its own ring,
//! never delivered, and reported as
//! [`Malformed::Torn`](master_proto::Malformed::Torn) when the master
//! forgets the child.
//!
//! # Proof
//!
//! The ring algorithm and the per-ring sleep/wake handshake (the private
//! module `ring`) are safe code over atomics imported from a `cfg(loom)`
//! shim. Their loom models (going to sleep on one ring and on two with one
//! barrier, a ring slept on across wake-ups, and the handshake seen by an
//! edge-triggered wait: a master that finds a watched ring empty is never
//! left asleep on a record) run with:
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p master-proto-memfd --release --lib --locked loom
//! ```
//!
//! The consumer is also fuzzed over arbitrary ring memory and hostile
//! stores (the `memfd_ring` target in the workspace's `fuzz/`), through a
//! hidden module that the feature `fuzzing` builds; it is not an API.
//!
//! # See also
//!
//! `master-proto`'s `shm` module (feature `shm`): the sealed memfds and
//! their mappings, the eventfd, futex and membarrier calls, the death watch
//! and the biased lock this crate uses; `master-proto-scoreboard`, the
//! latest-state transport that shares them.

cfg_if::cfg_if! {
    if #[cfg(all(target_os = "linux", loom))] {
        mod ring;
        #[cfg(test)]
        mod loom_models;
    } else if #[cfg(target_os = "linux")] {
        #[cfg(feature = "conformance")]
        mod hostile;
        mod ring;
        mod sink;
        mod source;
        mod sys;
        mod transport;
        #[cfg(test)]
        mod hostile_tests;
        #[cfg(feature = "fuzzing")]
        #[doc(hidden)]
        pub mod fuzz;

        #[cfg(feature = "conformance")]
        pub use hostile::Scribbler;
        pub use sink::MemfdSink;
        pub use source::{MemfdSource, RING_SLOTS};
        pub use transport::{CONTROL, DOORBELL, LIFELINE, Memfd};
    }
}
