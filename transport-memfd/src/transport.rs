//! The [`Memfd`] transport: how a channel is opened and each child's end
//! made.

use std::io;

use master_proto::env::ChildEnv;
use master_proto::{BackPressure, Caps, Delivery, EndFds, EnvError, Framing, Identity, Transport};

use crate::sink::MemfdSink;
use crate::source::MemfdSource;

/// Name of the auxiliary descriptor that carries the control area (a memfd
/// the child can only map read-only).
pub const CONTROL: &str = "control";
/// Name of the auxiliary descriptor that carries the doorbell (an eventfd).
pub const DOORBELL: &str = "doorbell";
pub use master_proto::lifeline::LIFELINE;

/// Shared-memory status rings, one per child, in sealed memfds.
///
/// See the [crate documentation](crate) for the layout and the protocol.
///
/// # Examples
///
/// ```
/// use master_proto::{StatusSource, Transport};
/// use master_proto_memfd::Memfd;
/// let mut source = Memfd.open()?;
/// let end = Memfd.child_end(&mut source, 1)?;
/// let names: Vec<&str> = end.aux.iter().map(|(name, _)| *name).collect();
/// assert_eq!(names, ["control", "doorbell", "lifeline"]);
/// assert_eq!(source.try_recv(), Ok(None));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Memfd;

impl Transport for Memfd {
    type Source = MemfdSource;
    type Sink = MemfdSink;

    fn name(&self) -> &'static str {
        "memfd"
    }

    /// Every update, in per-child order, named by the child's own ring; a
    /// full ring blocks the child in the kernel until the master reads or
    /// goes. Threads of a child may share its sink (they take turns).
    fn caps(&self) -> Caps {
        Caps::new(Delivery::EveryUpdate, Identity::Channel, Framing::Packet, BackPressure::Block)
            .with_thread_safe_sink(true)
    }

    fn open(&self) -> io::Result<MemfdSource> {
        MemfdSource::open()
    }

    fn end_fds(&self, source: &mut MemfdSource, generation: u32) -> io::Result<EndFds> {
        source.new_child(generation)
    }

    fn register_child(&self, source: &mut MemfdSource, generation: u32, pid: i32) -> io::Result<()> {
        source.register(generation, pid)
    }

    fn forget_child(&self, source: &mut MemfdSource, pid: i32) -> io::Result<()> {
        source.forget(pid);
        Ok(())
    }

    fn open_sink(&self, env: &mut ChildEnv) -> Result<MemfdSink, EnvError> {
        let control = env.take_aux(CONTROL)?;
        let doorbell = env.take_aux(DOORBELL)?;
        let lifeline = master_proto::lifeline::take(env)?;
        let ring = env.take_status()?;
        MemfdSink::new(ring, control, doorbell, lifeline, env.pid, env.generation)
    }
}
