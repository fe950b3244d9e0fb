//! `scoreboard`: each child's latest status in a slot of its own, in a
//! sealed memfd; `notify` never blocks, and makes no system call while the
//! master watches the slot (Linux).
//!
//! On other platforms this crate is empty: the transport is not available
//! there, and the facade's list of transports leaves it out.
//!
//! A master only ever needs each child's latest state (its bookkeeping
//! ignores a redundant update), which is what Apache's scoreboard keeps;
//! but Apache's master polls it once a second. Here the master learns of a
//! change promptly and cheaply: while it watches a slot it looks at it on
//! every pass, and when it sleeps on a slot the child rings its own
//! doorbell once, which the master's epoll names. A child's `notify` is
//! one plain store and never waits, whether the master reads or not:
//! a stuck master cannot stall its children in the middle of serving a
//! client.
//!
//! # What each side holds
//!
//! | what | made | the master maps or holds | the child gets | the child maps |
//! |---|---|---|---|---|
//! | slot memfd, one per child | in `child_end`, one page, sealed `SHRINK`/`GROW`/`SEAL` | read-write | fd 5 | read-write |
//! | doorbell eventfd, one per child | in `child_end`; the master's copy is in its epoll | its copy | aux `doorbell` | — |
//! | control memfd, one per channel | in `open`, one page, sealed `SHRINK`/`GROW`/`FUTURE_WRITE`/`SEAL` after the master mapped it | read-write | aux `control` | read-only (no writable mapping is possible any more) |
//! | epoll, one per channel | in `open`: every child's doorbell and the master's own eventfd, edge-triggered | the source's descriptor | — | — |
//! | lifeline pipe, one per channel | in `open`; the write end stays in the master | — | aux `lifeline` (read end) | — |
//!
//! The master's [`StatusSource`](master_proto::StatusSource) descriptor is
//! the epoll, which no child holds. A child's slot and doorbell are its
//! own: the master names its states
//! [`Sender::Channel`](master_proto::Sender::Channel) with the pid given to
//! [`register_child`](master_proto::Transport::register_child) for that
//! slot, whatever pid the child writes.
//!
//! # Memory layout
//!
//! A slot (byte offsets; native-endian 64-bit words, accessed only as
//! atomics on both sides):
//!
//! | offset | word | written by |
//! |---|---|---|
//! | 0 | `state`: `seq` (high 32 bits; odd, `2n - 1` for the child's `n`-th state, wrapping), `status` (low 32 bits) | child |
//! | 8 | `who`: `generation` (high 32 bits), `pid` (low 32 bits) | child |
//! | 64 | `sleep`: the master's epoch for this slot, even while it watches the slot, odd while it sleeps on it | master |
//!
//! The rest of the page is unused. The control area (one page, 32-bit
//! words):
//!
//! | offset | word | meaning |
//! |---|---|---|
//! | 4 | `fence` | 1: the master issues `membarrier(GLOBAL_EXPEDITED)` on its way to sleep |
//! | 8 | `armed` | 1: the death word is on a robust futex list |
//! | 12 | `life` | the death word: the master's watch thread's TID; bit `0x4000_0000` set once the master has gone |
//!
//! # Protocol
//!
//! **Publish** (the child's `notify`): if `life` says the master has gone,
//! return `Disconnected`. Store the new `state` word, `seq + 2` and the
//! status, with release: one 64-bit store, so a child killed at any
//! instruction leaves its previous state or its new one, whole, and the
//! master reads a state with one load, never waiting for a writer however
//! fast it writes. (`who` is written once, before the first state; only a
//! child that lies about its pid or generation writes it again, and then
//! before the state that goes with it.) Then a fence, then read `sleep`:
//! only if it is odd and the child has not rung for that epoch yet does it
//! ring its doorbell (one eventfd write), and it remembers the epoch in its
//! own memory. So while the master watches the slot a `notify` is two
//! loads (the death word, `sleep`), one store (`state`) and a compiler
//! fence, besides the plain loads and stores of the lock its threads share
//! (biased towards the first, as memfd's): no system call, no locked
//! instruction; and while the master sleeps on
//! it, or is stopped, only the first `notify` of each of the master's
//! sleeps makes one. It never waits and never fails but for
//! `Disconnected` ([`BackPressure::Overwrite`](master_proto::BackPressure)):
//! a newer state replaces an unread one.
//!
//! **Read** (the master's `drain` or `try_recv`): the master keeps the set
//! of slots it watches. A pass first takes the epoll's pending events when
//! it sleeps on any slot (each child that rang has its slot watched again:
//! a new even `sleep` epoch), then looks once at each watched slot: a
//! `state` word (acquire) equal to the one it looked at last is nothing
//! new; one with an even `seq` is a slot the child scribbled on, reported
//! once as [`Malformed::Corrupt`](master_proto::Malformed::Corrupt); else
//! it is the child's newest state, delivered with the pid and generation
//! of `who`, and the states its `seq` skipped are counted as overwritten.
//! The master reads only the slots it watches and the doorbells the kernel
//! reports, so its work per wake grows with the number of children that
//! changed, not with the number of children.
//!
//! **What a master sees**: of each child, states in the order it published
//! them, with gaps where it published faster than the master looked
//! ([`Delivery::LatestState`](master_proto::Delivery)); never a state
//! twice, never an older state after a newer one (a look reports the word
//! the slot holds now, which is the child's newest), never a mix of two
//! states; and once the child stops, its last state.
//!
//! **Sleep and wake**, per slot, no wake-up lost: a slot that two looks in
//! a row found unchanged is put to sleep at the end of the pass, with every
//! other slot that went idle in it: a new odd `sleep` epoch in each, one
//! barrier for all (`membarrier` when children registered for it, else a
//! `SeqCst` fence on both sides), and one more look at each. A child
//! publishes, then reads `sleep`: either the master's last look sees the
//! state (the slot is watched again), or the child sees the odd epoch and
//! rings. Epochs are 64-bit and never reused, so "rung for this epoch
//! already" is never mistaken for an old one.
//!
//! **Edge-triggered masters** (tokio, mio, `EPOLLET`; contract item 7):
//! children whose slot is watched do not ring. So whenever a call returns
//! with items in hand, with slots watched, or with a drain cut short by its
//! bound, the master rings its own eventfd in the epoll: a new edge, and
//! the master's next wait returns at once to look again. Every call that
//! ends a read (`None` from `try_recv`, the end of a `drain`) rings anew,
//! whatever an earlier call rang: an edge-triggered wait may have taken
//! that edge since (registering a child rings too, and a reactor's wait
//! after it takes the edge); a `try_recv` that returns an item rings only
//! if no ring is on the epoll's ready list yet. A drain
//! that ends with every slot slept on needs nothing: each child's next
//! state rings. A drain makes at most 64 passes, so children that change
//! state as fast as the master reads cannot keep it there.
//!
//! **Master gone**, as in memfd (the death watch is the same, from
//! `master-proto`'s `shm` module): a thread of the master, one per process,
//! has a robust futex list that names the `life` word of every open
//! channel; when it dies, whatever killed the process, the kernel sets
//! `FUTEX_OWNER_DIED` (`0x4000_0000`) there, and every child's next
//! `notify` returns `Disconnected` without a system call. An orderly close
//! (dropping the source) unlinks the entry and sets the same bit. Where the
//! kernel refuses the robust list, `armed` is 0 and `notify` polls the
//! lifeline instead. A child that waits without sending polls its
//! lifeline, which fires when the master's write end closes.
//!
//! # What a hostile child can do
//!
//! Write anything into its own slot at any time
//! ([`ScoreboardSink::scribble`] does, for tests). The master then reports
//! `Corrupt` items, or states with whatever pid and status the child wrote,
//! all under that child's [`Sender::Channel`](master_proto::Sender::Channel)
//! pid, which the master's bookkeeping judges (a forged pid, a wrong
//! generation); a state it publishes with a new `who` may be reported with
//! the `who` of the one after it, which is nothing it could not have
//! written itself. It can overwrite the master's `sleep` word (it then rings when it need not, or not when it
//! should: its own states wait for the master's next look), ring its
//! doorbell for nothing (the master wakes up for nothing, counted as a
//! spurious ring), or change state as fast as it can (one state a pass).
//! It cannot touch another child's state: every child's slot and doorbell
//! are its own (it has no descriptor for another's), there is no change
//! set or bitmap shared between children that it could clear (the kernel's
//! epoll ready list is the set of children that rang, and only a child's
//! own doorbell puts it there), the control area is sealed against
//! writable mappings, and no memory is resized under the master (sealed).
//! Nor can it make the master or another child block: the master takes no
//! lock a child could hold and never waits for a child, and a child killed
//! at any instruction leaves its own slot with its previous state or its
//! new one, never a mix.
//!
//! # Proof
//!
//! The slot protocol and the sleep/wake handshake (the private module
//! `slot`) are safe code over atomics imported from a `cfg(loom)` shim.
//! Their loom models (states in order, whole and ending with the last, by a
//! master that looks while a child publishes or dies publishing; no lost
//! wake-up when the master goes to sleep, nor across several sleeps; an
//! edge-triggered master never left asleep on a state)
//! run with:
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p master-proto-scoreboard --release --lib --locked loom
//! ```
//!
//! The master's reader is also fuzzed over arbitrary slot memory, hostile
//! stores and sleep declarations beside an honest slot (the
//! `scoreboard_slot` target in the workspace's `fuzz/`), through a hidden
//! module that the feature `fuzzing` builds; it is not an API.
//!
//! # See also
//!
//! `master-proto-memfd`, the every-update shared-memory transport this one
//! shares its machinery with; Apache httpd's `scoreboard.h`.

cfg_if::cfg_if! {
    if #[cfg(all(target_os = "linux", loom))] {
        mod slot;
        #[cfg(test)]
        mod loom_models;
    } else if #[cfg(target_os = "linux")] {
        #[cfg(feature = "conformance")]
        mod hostile;
        mod sink;
        mod slot;
        mod source;
        mod transport;
        #[cfg(test)]
        mod hostile_tests;
        #[cfg(feature = "fuzzing")]
        #[doc(hidden)]
        pub mod fuzz;

        #[cfg(feature = "conformance")]
        pub use hostile::Scribbler;
        pub use sink::ScoreboardSink;
        pub use source::{Counters, ScoreboardSource};
        pub use transport::{CONTROL, DOORBELL, LIFELINE, Scoreboard};
    }
}
