//! The child's end: its own ring, the master's control area (read-only),
//! the doorbell and the lifeline.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::compiler_fence;
use std::time::Duration;

use master_proto::{EnvError, NotifyError, Status, StatusSink, StatusUpdate};

use crate::ring::{self, ARMED, CONTROL_WORDS, FENCE, Ordering, Producer, TAIL};
use crate::sys::{self, BiasedLock, Mapping, RingView};

/// How long a child blocked on a full ring sleeps in the kernel before it
/// looks at the death word again (a master that dies cannot wake it).
const FULL_WAIT: Duration = Duration::from_millis(20);

/// A child's end of a [`crate::Memfd`] channel.
///
/// `notify` writes into the child's own ring and, while the master
/// watches that ring, makes no system call and no locked instruction;
/// while the master sleeps on it, `notify` rings the ring's doorbell (one
/// `write(2)`). A ring has one
/// producer: threads of the child that share a sink take turns through a
/// lock inside it (private to this process, so no other process can hold
/// it) that is biased towards the first thread to notify: that thread
/// enters with plain stores; the first time another thread notifies, it
/// revokes the bias with one `membarrier`, and from then on every thread
/// takes a mutex.
#[derive(Debug)]
pub struct MemfdSink {
    ring: Mapping,
    control: Mapping,
    producer: BiasedLock<Producer>,
    doorbell: OwnedFd,
    lifeline: OwnedFd,
    /// Only a compiler fence after publishing: this process is registered
    /// for the master's `membarrier`.
    light_fence: bool,
    /// The death word is armed: no need to look at the lifeline.
    armed: bool,
    pid: i32,
    generation: u32,
}

impl MemfdSink {
    /// Builds the sink from the descriptors the master handed out: maps
    /// the ring read-write and the control area read-only, and registers
    /// for `membarrier` when the master uses it. The ring and control
    /// descriptors are closed once mapped.
    pub(crate) fn new(
        ring_fd: OwnedFd,
        control_fd: OwnedFd,
        doorbell: OwnedFd,
        lifeline: OwnedFd,
        pid: i32,
        generation: u32,
    ) -> Result<MemfdSink, EnvError> {
        let io = |e: std::io::Error| EnvError::from_io(&e);
        let ring_len = sys::file_size(ring_fd.as_fd()).map_err(io)?;
        if ring_len < ring::ring_bytes(2) {
            return Err(EnvError::Unusable("the ring at fd 5 is smaller than two slots"));
        }
        let ring = sys::map_ring(ring_fd.as_fd(), ring_len).map_err(io)?;
        let producer = Producer::new(ring.ring())
            .ok_or(EnvError::Unusable("the ring's capacity is not a power of two that fits its memfd"))?;
        let control_len = sys::file_size(control_fd.as_fd()).map_err(io)?;
        if control_len < CONTROL_WORDS * 4 {
            return Err(EnvError::Unusable("the control area is smaller than its words"));
        }
        let control = sys::map_control(control_fd.as_fd(), control_len).map_err(io)?;
        let words = control.words32();
        let light_fence = words[FENCE].load(Ordering::Acquire) == 1 && sys::membarrier_register();
        let armed = words[ARMED].load(Ordering::Acquire) == 1;
        Ok(MemfdSink {
            ring,
            control,
            producer: BiasedLock::new(producer),
            doorbell,
            lifeline,
            light_fence,
            armed,
            pid,
            generation,
        })
    }

    /// The length in bytes of this child's own shared region (its ring),
    /// the bound of [`scribble`](Self::scribble).
    #[must_use]
    pub fn region_len(&self) -> usize {
        self.ring.shared_len()
    }

    /// Writes `bytes` at `offset` into this child's own ring, byte by byte,
    /// each in an atomic read-modify-write of the word that holds it,
    /// ignoring what would fall past [`region_len`](Self::region_len);
    /// returns how many bytes it wrote.
    ///
    /// This exists to test a master against a hostile child: whatever is
    /// written here, the master must count and survive it, and other
    /// children's updates must stay exact. An honest child never calls it.
    pub fn scribble(&mut self, offset: usize, bytes: &[u8]) -> usize {
        let ring = self.ring.ring();
        let mut written = 0;
        for (k, &byte) in bytes.iter().enumerate() {
            let Some(at) = offset.checked_add(k) else { break };
            // One byte of the word changes (the master writes some words of
            // the ring too), each word at the size the master reads it.
            let changed = if at < ring::SLOTS_AT {
                ring.header.get(at / 4).map(|word| {
                    let _ = word.fetch_update(Ordering::Release, Ordering::Relaxed, |old| {
                        let mut now = old.to_ne_bytes();
                        now[at % 4] = byte;
                        Some(u32::from_ne_bytes(now))
                    });
                })
            } else {
                let at = at - ring::SLOTS_AT;
                ring.slots.get(at / 8).map(|word| {
                    let _ = word.fetch_update(Ordering::Release, Ordering::Relaxed, |old| {
                        let mut now = old.to_ne_bytes();
                        now[at % 8] = byte;
                        Some(u64::from_ne_bytes(now))
                    });
                })
            };
            if changed.is_none() {
                break;
            }
            written += 1;
        }
        written
    }

    /// Whether the death word says the master has gone (closed the channel
    /// or died). Reads shared memory only: no system call. `false` where
    /// the death word is not armed and the master died; the lifeline and
    /// `notify` still say so then.
    #[must_use]
    pub fn death_word_says_gone(&self) -> bool {
        ring::master_gone(self.control.words32())
    }

    /// Whether the master has gone: the death word, or the lifeline where
    /// the death word is not armed.
    fn master_gone(&self) -> Result<bool, NotifyError> {
        if ring::master_gone(self.control.words32()) {
            return Ok(true);
        }
        if !self.armed {
            return master_proto::lifeline::fired(self.lifeline.as_fd()).map_err(NotifyError::Io);
        }
        Ok(false)
    }

    /// Blocks in the kernel until the ring has room or the master has gone.
    #[cold]
    fn wait_for_room(&self, producer: &mut Producer) -> Result<(), NotifyError> {
        let ring = self.ring.ring();
        let result = loop {
            if producer.prepare_to_wait(ring) {
                break Ok(());
            }
            if self.master_gone()? {
                break Err(NotifyError::Disconnected);
            }
            sys::futex_wait(&ring.header[TAIL], producer.seen_tail(), FULL_WAIT);
        };
        Producer::set_waiting(ring, false);
        result
    }

    /// Pushes `update` into the ring, waiting for room if it is full.
    #[inline(always)]
    fn push(&self, producer: &mut Producer, update: StatusUpdate) -> Result<(), NotifyError> {
        let ring = self.ring.ring();
        if !producer.has_room(ring) {
            self.wait_for_room(producer)?;
        }
        producer.push(ring, update);
        Ok(())
    }

    /// [`push`](Self::push) by a thread without the producer's bias.
    #[cold]
    #[inline(never)]
    fn push_slow(&self, update: StatusUpdate) -> Result<(), NotifyError> {
        self.producer.with(|producer| self.push(producer, update)).map_err(NotifyError::Io)?
    }

    /// Publishes a record whose every field the caller chose, exactly as
    /// `notify` publishes its own.
    ///
    /// A child can write any pid and generation into its own ring; the
    /// master names the sender by the ring anyway
    /// ([`Sender::Channel`](master_proto::Sender::Channel)). This exists to
    /// test a master against a child that lies; an honest child calls
    /// `notify`.
    ///
    /// # Errors
    ///
    /// As [`StatusSink::notify`].
    #[inline]
    pub fn publish(&self, update: StatusUpdate) -> Result<(), NotifyError> {
        if self.master_gone()? {
            return Err(NotifyError::Disconnected);
        }
        match self.producer.try_biased() {
            Some(mut producer) => self.push(&mut producer, update)?,
            None => self.push_slow(update)?,
        }
        // Publish, then look at the ring's `SLEEP` word: a store then a
        // load, which needs a full barrier on one side. With membarrier the
        // master pays it on its way to sleep on the ring; without, this
        // fence does.
        if self.light_fence {
            compiler_fence(Ordering::SeqCst);
        } else {
            ring::fence(Ordering::SeqCst);
        }
        if ring::must_ring(self.ring.ring()) {
            sys::ring_bell(self.doorbell.as_fd()).map_err(NotifyError::Io)?;
        }
        Ok(())
    }
}

impl StatusSink for MemfdSink {
    fn notify(&self, status: Status) -> Result<(), NotifyError> {
        self.publish(StatusUpdate { pid: self.pid, generation: self.generation, status })
    }

    fn disconnect_fd(&self) -> BorrowedFd<'_> {
        self.lifeline.as_fd()
    }

    fn pid(&self) -> i32 {
        self.pid
    }

    fn generation(&self) -> u32 {
        self.generation
    }
}
