//! The [`Scoreboard`] transport: how a channel is opened and each child's
//! end made.

use std::io;

use master_proto::env::ChildEnv;
use master_proto::{BackPressure, Caps, Delivery, EndFds, EnvError, Framing, Identity, Transport};

use crate::sink::ScoreboardSink;
use crate::source::ScoreboardSource;

/// Name of the auxiliary descriptor that carries the control area (a memfd
/// the child can only map read-only).
pub const CONTROL: &str = "control";
/// Name of the auxiliary descriptor that carries the child's own doorbell
/// (an eventfd in the master's epoll).
pub const DOORBELL: &str = "doorbell";
pub use master_proto::lifeline::LIFELINE;

/// Control word: 1 if the master issues `membarrier` on its way to sleep,
/// so registered children need only a compiler fence after publishing.
pub(crate) const FENCE: usize = 1;
/// Control word: 1 if the death word is on a robust futex list (the kernel
/// marks it when the master dies); 0 if children must look at their
/// lifeline instead.
pub(crate) const ARMED: usize = 2;
/// Words of the control area that are used (the death word is word 3).
pub(crate) const CONTROL_WORDS: usize = master_proto::shm::LIFE + 1;

/// Latest-state slots, one per child, in sealed memfds: `notify` never
/// blocks and, while the master watches the child's slot, makes no system
/// call.
///
/// See the [crate documentation](crate) for the layout and the protocol.
///
/// # Examples
///
/// ```
/// use master_proto::{StatusSource, Transport};
/// use master_proto_scoreboard::Scoreboard;
/// let mut source = Scoreboard.open()?;
/// let end = Scoreboard.child_end(&mut source, 1)?;
/// let names: Vec<&str> = end.aux.iter().map(|(name, _)| *name).collect();
/// assert_eq!(names, ["control", "doorbell", "lifeline"]);
/// assert_eq!(source.try_recv(), Ok(None));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scoreboard;

impl Transport for Scoreboard {
    type Source = ScoreboardSource;
    type Sink = ScoreboardSink;

    fn name(&self) -> &'static str {
        "scoreboard"
    }

    /// Each child's latest state, in its order with gaps where it
    /// overwrote, named by the child's own slot; `notify` never waits (a
    /// newer state replaces an unread one). Threads of a child may share
    /// its sink (they take turns).
    fn caps(&self) -> Caps {
        Caps::new(Delivery::LatestState, Identity::Channel, Framing::Packet, BackPressure::Overwrite)
            .with_thread_safe_sink(true)
    }

    fn open(&self) -> io::Result<ScoreboardSource> {
        ScoreboardSource::open()
    }

    fn end_fds(&self, source: &mut ScoreboardSource, generation: u32) -> io::Result<EndFds> {
        source.new_child(generation)
    }

    fn register_child(&self, source: &mut ScoreboardSource, generation: u32, pid: i32) -> io::Result<()> {
        source.register(generation, pid)
    }

    fn forget_child(&self, source: &mut ScoreboardSource, pid: i32) -> io::Result<()> {
        source.forget(pid);
        Ok(())
    }

    fn open_sink(&self, env: &mut ChildEnv) -> Result<ScoreboardSink, EnvError> {
        let control = env.take_aux(CONTROL)?;
        let doorbell = env.take_aux(DOORBELL)?;
        let lifeline = master_proto::lifeline::take(env)?;
        let slot = env.take_status()?;
        ScoreboardSink::new(slot, control, doorbell, lifeline, env.pid, env.generation)
    }
}
