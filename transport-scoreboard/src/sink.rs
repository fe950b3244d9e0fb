//! The child's end: its own slot, the master's control area (read-only),
//! its own doorbell and the lifeline.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::compiler_fence;

use master_proto::shm::{BiasedLock, GONE, LIFE, Mapping, file_size, membarrier};
use master_proto::{EnvError, NotifyError, Status, StatusSink, StatusUpdate};

use crate::slot::{self, Ordering, Writer};
use crate::transport::{ARMED, CONTROL_WORDS, FENCE};

/// A child's end of a [`crate::Scoreboard`] channel.
///
/// `notify` overwrites the child's slot with one plain store and never
/// waits. While the master watches the slot it makes no system call and no
/// locked instruction; while the master sleeps on it, the first `notify`
/// rings the child's doorbell (one `write(2)`) and the following ones do
/// not, until the master has looked. Threads of the child that share a
/// sink take turns through a lock inside it (private to this process) that
/// is biased towards the first thread to notify, as memfd's sink is.
#[derive(Debug)]
pub struct ScoreboardSink {
    slot: Mapping,
    control: Mapping,
    writer: BiasedLock<Writer>,
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

impl ScoreboardSink {
    /// Builds the sink from the descriptors the master handed out: maps
    /// the slot read-write and the control area read-only, and registers
    /// for `membarrier` when the master uses it. The slot and control
    /// descriptors are closed once mapped.
    pub(crate) fn new(
        slot_fd: OwnedFd,
        control_fd: OwnedFd,
        doorbell: OwnedFd,
        lifeline: OwnedFd,
        pid: i32,
        generation: u32,
    ) -> Result<ScoreboardSink, EnvError> {
        let io = |e: std::io::Error| EnvError::from_io(&e);
        let slot_len = file_size(slot_fd.as_fd()).map_err(io)?;
        if slot_len < slot::SLOT_BYTES {
            return Err(EnvError::Unusable("the slot at fd 5 is smaller than its words"));
        }
        let slot = Mapping::shared(slot_fd.as_fd(), slot_len, true, 0).map_err(io)?;
        let control_len = file_size(control_fd.as_fd()).map_err(io)?;
        if control_len < CONTROL_WORDS * 4 {
            return Err(EnvError::Unusable("the control area is smaller than its words"));
        }
        let control = Mapping::shared(control_fd.as_fd(), control_len, false, control_len).map_err(io)?;
        let words = control.words32();
        let light_fence = words[FENCE].load(std::sync::atomic::Ordering::Acquire) == 1 && membarrier::register_global();
        let armed = words[ARMED].load(std::sync::atomic::Ordering::Acquire) == 1;
        Ok(ScoreboardSink {
            slot,
            control,
            writer: BiasedLock::new(Writer::new()),
            doorbell,
            lifeline,
            light_fence,
            armed,
            pid,
            generation,
        })
    }

    /// The length in bytes of this child's own shared region (its slot),
    /// the bound of [`scribble`](Self::scribble).
    #[must_use]
    pub fn region_len(&self) -> usize {
        self.slot.shared_len()
    }

    /// Writes `bytes` at `offset` into this child's own slot, byte by byte,
    /// each in an atomic read-modify-write of the 64-bit word that holds it,
    /// ignoring what would fall past [`region_len`](Self::region_len);
    /// returns how many bytes it wrote.
    ///
    /// This exists to test a master against a hostile child: whatever is
    /// written here, the master must count and survive it, and other
    /// children's states must stay exact. An honest child never calls it.
    pub fn scribble(&mut self, offset: usize, bytes: &[u8]) -> usize {
        let words = self.slot.words64();
        let mut written = 0;
        for (k, &byte) in bytes.iter().enumerate() {
            let Some(at) = offset.checked_add(k) else { break };
            let Some(word) = words.get(at / 8) else { break };
            let _ =
                word.fetch_update(std::sync::atomic::Ordering::Release, std::sync::atomic::Ordering::Relaxed, |old| {
                    let mut now = old.to_ne_bytes();
                    now[at % 8] = byte;
                    Some(u64::from_ne_bytes(now))
                });
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
        self.control.words32()[LIFE].load(std::sync::atomic::Ordering::Acquire) & GONE != 0
    }

    /// Whether the master has gone: the death word, or the lifeline where
    /// the death word is not armed.
    #[inline]
    fn master_gone(&self) -> Result<bool, NotifyError> {
        if self.death_word_says_gone() {
            return Ok(true);
        }
        if !self.armed {
            return master_proto::lifeline::fired(self.lifeline.as_fd()).map_err(NotifyError::Io);
        }
        Ok(false)
    }

    /// Publishes `update` into the slot; whether the doorbell is due.
    #[inline(always)]
    fn write(&self, writer: &mut Writer, update: StatusUpdate) -> bool {
        let words = self.slot.words64();
        writer.publish(words, update);
        // Publish, then look at the master's epoch: a store then a load,
        // which needs a full barrier on one side. With membarrier the master
        // pays it on its way to sleep; without, this fence does.
        if self.light_fence {
            compiler_fence(Ordering::SeqCst);
        } else {
            slot::fence(Ordering::SeqCst);
        }
        writer.must_ring(words)
    }

    /// [`write`](Self::write) by a thread without the writer's bias.
    #[cold]
    #[inline(never)]
    fn write_slow(&self, update: StatusUpdate) -> Result<bool, NotifyError> {
        self.writer.with(|writer| self.write(writer, update)).map_err(NotifyError::Io)
    }

    /// Publishes a state whose every field the caller chose, exactly as
    /// `notify` publishes its own.
    ///
    /// A child can write any pid and generation into its own slot; the
    /// master names the sender by the slot anyway
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
        let ring = match self.writer.try_biased() {
            Some(mut writer) => self.write(&mut writer, update),
            None => self.write_slow(update)?,
        };
        if ring {
            self.ring()?;
        }
        Ok(())
    }

    /// Rings the doorbell: the master sleeps on this slot.
    #[cold]
    #[inline(never)]
    fn ring(&self) -> Result<(), NotifyError> {
        master_proto::shm::eventfd::ring_bell(self.doorbell.as_fd()).map_err(NotifyError::Io)
    }
}

impl StatusSink for ScoreboardSink {
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
