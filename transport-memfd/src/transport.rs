//! The [`Memfd`] transport: how a channel is opened and each child's end
//! made.

use std::io;

use master_proto::env::ChildEnv;
use master_proto::transport::check_transport;
use master_proto::{BackPressure, Caps, ChildEnd, Delivery, EnvError, Framing, Identity, Transport};

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
#[derive(Clone, Copy, Debug, Default)]
pub struct Memfd;

impl Transport for Memfd {
    type Source = MemfdSource;
    type Sink = MemfdSink;

    const NAME: &'static str = "memfd";

    /// Every update, in per-child order, named by the child's own ring; a
    /// full ring blocks the child in the kernel until the master reads or
    /// goes. Threads of a child may share its sink (they take turns).
    fn caps(&self) -> Caps {
        Caps {
            delivery: Delivery::EveryUpdate,
            identity: Identity::PrivateChannel,
            framing: Framing::Packet,
            back_pressure: BackPressure::Block,
            postfix_wire: false,
            thread_safe_sink: true,
        }
    }

    fn open(&self) -> io::Result<MemfdSource> {
        MemfdSource::open()
    }

    fn child_end(&self, source: &mut MemfdSource, generation: u32) -> io::Result<ChildEnd> {
        let [ring, control, doorbell, lifeline] = source.new_child(generation)?;
        Ok(ChildEnd {
            transport: Self::NAME,
            status: ring,
            aux: vec![(CONTROL, control), (DOORBELL, doorbell), (LIFELINE, lifeline)],
        })
    }

    fn register_child(&self, source: &mut MemfdSource, generation: u32, pid: i32) {
        source.register(generation, pid);
    }

    fn forget_child(&self, source: &mut MemfdSource, pid: i32) {
        source.forget(pid);
    }

    fn sink(&self, env: &mut ChildEnv) -> Result<MemfdSink, EnvError> {
        check_transport(env, Self::NAME, false)?;
        let control = env.take_aux(CONTROL)?;
        let doorbell = env.take_aux(DOORBELL)?;
        let lifeline = env.take_aux(LIFELINE)?;
        let ring = env.take_status()?;
        MemfdSink::new(ring, control, doorbell, lifeline, env.pid, env.generation)
    }
}
