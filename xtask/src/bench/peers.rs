//! Peers: other IPC crates doing the same job (children send the 12-byte
//! record to one master), measured beside the transports. Built with the
//! cargo feature `peers` of xtask.
//!
//! - `peer:ipmpsc`: a shared-memory ring (one file, many producers); the
//!   master sleeps in `recv_timeout`.
//! - `peer:iceoryx2`: zero-copy publish-subscribe, plus an event service
//!   for the wake-up; every publisher retries until delivered.
//! - `peer:ipc-channel`: one channel (Unix sockets underneath) whose sender
//!   every child gets through a one-shot server at start.
//!
//! Peers have no lifeline, so death detection does not apply. A peer that
//! fails at run time gets an error row in the tables and the JSON.

use std::io;
use std::time::Duration;

use iceoryx2::prelude::{BackpressureStrategy, NodeBuilder, ServiceName, ipc};
use ipc_channel::TryRecvError;
use ipc_channel::ipc::{IpcOneShotServer, IpcReceiver, IpcSender};
use master_proto::env::{GENERATION_VAR, parse_generation};
use master_proto::{Status, StatusUpdate, WIRE_SIZE};

use super::subjects::{ChildSetup, Item, Kind, Master, Sender, Subject, Workload};

type Record = [u8; WIRE_SIZE];

/// The workloads a peer takes part in.
const PEER: &[Workload] = &[Workload::NotifyCost, Workload::WakeLatency, Workload::FanIn];

/// The environment variable that names a peer's channel to the child.
const CHANNEL_VAR: &str = "MASTER_PROTO_BENCH_PEER";

/// The most children a peer's channel is sized for (fan-in goes to 512).
const MAX_CHILDREN: usize = 520;

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The peers built here.
pub(crate) fn subjects() -> Vec<Subject> {
    let peer = |name, open, sender| Subject {
        name,
        kind: Kind::Peer,
        every_update: true,
        carries_updates: true,
        workloads: PEER,
        open,
        sender,
    };
    vec![
        peer("peer:ipmpsc", open_ipmpsc as fn() -> _, sender_ipmpsc as fn() -> _),
        peer("peer:iceoryx2", open_iceoryx2, sender_iceoryx2),
        peer("peer:ipc-channel", open_ipc_channel, sender_ipc_channel),
    ]
}

/// This child's pid and generation, as a transport's sink binds them.
fn identity() -> io::Result<(i32, u32)> {
    let generation = parse_generation(std::env::var(GENERATION_VAR).ok().as_deref()).map_err(err)?;
    let pid = i32::try_from(std::process::id()).map_err(err)?;
    Ok((pid, generation))
}

fn channel_name() -> io::Result<String> {
    std::env::var(CHANNEL_VAR).map_err(|_| err(format!("{CHANNEL_VAR} is not set")))
}

fn item(record: &Record) -> Item {
    Item::Update(StatusUpdate::decode(record))
}

// ---------------------------------------------------------------- ipmpsc

struct IpmpscMaster {
    path: String,
    rx: ipmpsc::Receiver,
    pending: Option<Record>,
}

impl Master for IpmpscMaster {
    fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        if self.pending.is_none() {
            self.pending = self.rx.recv_timeout::<Record>(timeout).map_err(err)?;
        }
        Ok(self.pending.is_some())
    }

    fn drain(&mut self, f: &mut dyn FnMut(&[Item])) -> io::Result<bool> {
        if let Some(r) = self.pending.take() {
            f(&[item(&r)]);
        }
        while let Some(r) = self.rx.try_recv::<Record>().map_err(err)? {
            f(&[item(&r)]);
        }
        Ok(false)
    }

    fn child(&mut self, _generation: u32) -> io::Result<ChildSetup> {
        Ok(ChildSetup { end: None, env: vec![(CHANNEL_VAR.to_owned(), self.path.clone())] })
    }
}

fn open_ipmpsc() -> io::Result<Box<dyn Master>> {
    let (path, buffer) = ipmpsc::SharedRingBuffer::create_temp(256 * 1024).map_err(err)?;
    Ok(Box::new(IpmpscMaster { path, rx: ipmpsc::Receiver::new(buffer), pending: None }))
}

struct IpmpscSender {
    tx: ipmpsc::Sender,
    pid: i32,
    generation: u32,
}

impl Sender for IpmpscSender {
    fn send(&mut self, status: Status) -> io::Result<()> {
        let record = StatusUpdate { pid: self.pid, generation: self.generation, status }.encode();
        self.tx.send(&record).map_err(err)
    }

    fn disconnect_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

fn sender_ipmpsc() -> io::Result<Box<dyn Sender>> {
    let (pid, generation) = identity()?;
    let buffer = ipmpsc::SharedRingBuffer::open(&channel_name()?).map_err(err)?;
    Ok(Box::new(IpmpscSender { tx: ipmpsc::Sender::new(buffer), pid, generation }))
}

// ---------------------------------------------------------------- iceoryx2

type Ipc = ipc::Service;

struct IceoryxMaster {
    name: String,
    // Field order is drop order: ports before the node that owns them.
    subscriber: iceoryx2::port::subscriber::Subscriber<Ipc, Record, ()>,
    listener: iceoryx2::port::listener::Listener<Ipc>,
    _node: iceoryx2::node::Node<Ipc>,
}

impl Master for IceoryxMaster {
    fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        let mut woke = false;
        self.listener.timed_wait_all(|_| woke = true, timeout).map_err(err)?;
        Ok(woke)
    }

    fn drain(&mut self, f: &mut dyn FnMut(&[Item])) -> io::Result<bool> {
        while let Some(sample) = self.subscriber.receive().map_err(err)? {
            f(&[item(&sample)]);
        }
        Ok(false)
    }

    fn child(&mut self, _generation: u32) -> io::Result<ChildSetup> {
        Ok(ChildSetup { end: None, env: vec![(CHANNEL_VAR.to_owned(), self.name.clone())] })
    }
}

/// The publish-subscribe and event services of one channel, opened or
/// created with the same settings on both sides.
fn iceoryx_services(
    node: &iceoryx2::node::Node<Ipc>,
    name: &str,
) -> io::Result<(
    iceoryx2::service::port_factory::publish_subscribe::PortFactory<Ipc, Record, ()>,
    iceoryx2::service::port_factory::event::PortFactory<Ipc>,
)> {
    let data: ServiceName = format!("{name}/data").as_str().try_into().map_err(err)?;
    let wake: ServiceName = format!("{name}/wake").as_str().try_into().map_err(err)?;
    let pubsub = node
        .service_builder(&data)
        .publish_subscribe::<Record>()
        .max_publishers(MAX_CHILDREN)
        .max_subscribers(1)
        .max_nodes(MAX_CHILDREN + 1)
        .history_size(0)
        .subscriber_max_buffer_size(256)
        .enable_safe_overflow(false)
        .open_or_create()
        .map_err(err)?;
    let event = node
        .service_builder(&wake)
        .event()
        .max_notifiers(MAX_CHILDREN)
        .max_listeners(1)
        .max_nodes(MAX_CHILDREN + 1)
        .open_or_create()
        .map_err(err)?;
    Ok((pubsub, event))
}

/// iceoryx2 logs each notification its full socket drops, and that it found
/// no config file: errors only, so a run's output stays readable.
fn quiet_iceoryx2() {
    iceoryx2::prelude::set_log_level(iceoryx2::prelude::LogLevel::Error);
}

fn open_iceoryx2() -> io::Result<Box<dyn Master>> {
    quiet_iceoryx2();
    let node = NodeBuilder::new().create::<Ipc>().map_err(err)?;
    let name = format!("master-proto-bench/{}/{}", std::process::id(), crate::sys::mono_ns());
    let (pubsub, event) = iceoryx_services(&node, &name)?;
    let subscriber = pubsub.subscriber_builder().create().map_err(err)?;
    let listener = event.listener_builder().create().map_err(err)?;
    Ok(Box::new(IceoryxMaster { name, subscriber, listener, _node: node }))
}

struct IceoryxSender {
    publisher: iceoryx2::port::publisher::Publisher<Ipc, Record, ()>,
    notifier: iceoryx2::port::notifier::Notifier<Ipc>,
    _node: iceoryx2::node::Node<Ipc>,
    pid: i32,
    generation: u32,
}

impl Sender for IceoryxSender {
    fn send(&mut self, status: Status) -> io::Result<()> {
        let record = StatusUpdate { pid: self.pid, generation: self.generation, status }.encode();
        self.publisher.send_copy(record).map_err(err)?;
        self.notifier.notify().map_err(err)?;
        Ok(())
    }

    fn disconnect_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

fn sender_iceoryx2() -> io::Result<Box<dyn Sender>> {
    quiet_iceoryx2();
    let (pid, generation) = identity()?;
    let node = NodeBuilder::new().create::<Ipc>().map_err(err)?;
    let (pubsub, event) = iceoryx_services(&node, &channel_name()?)?;
    let publisher = pubsub
        .publisher_builder()
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()
        .map_err(err)?;
    let notifier = event.notifier_builder().create().map_err(err)?;
    Ok(Box::new(IceoryxSender { publisher, notifier, _node: node, pid, generation }))
}

// ---------------------------------------------------------------- ipc-channel

/// What a child sends the master's one-shot server: where to send it the
/// channel's sender.
type Handshake = IpcSender<IpcSender<Record>>;

struct IpcChannelMaster {
    tx: IpcSender<Record>,
    rx: IpcReceiver<Record>,
    pending: Option<Record>,
    servers: Vec<(u32, IpcOneShotServer<Handshake>)>,
}

impl Master for IpcChannelMaster {
    fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        if self.pending.is_none() {
            match self.rx.try_recv_timeout(timeout) {
                Ok(r) => self.pending = Some(r),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::IpcError(e)) => return Err(err(format!("{e:?}"))),
            }
        }
        Ok(self.pending.is_some())
    }

    fn drain(&mut self, f: &mut dyn FnMut(&[Item])) -> io::Result<bool> {
        if let Some(r) = self.pending.take() {
            f(&[item(&r)]);
        }
        loop {
            match self.rx.try_recv() {
                Ok(r) => f(&[item(&r)]),
                Err(TryRecvError::Empty) => return Ok(false),
                Err(TryRecvError::IpcError(e)) => return Err(err(format!("{e:?}"))),
            }
        }
    }

    fn child(&mut self, generation: u32) -> io::Result<ChildSetup> {
        let (server, name) = IpcOneShotServer::<Handshake>::new()?;
        self.servers.push((generation, server));
        Ok(ChildSetup { end: None, env: vec![(CHANNEL_VAR.to_owned(), name)] })
    }

    fn spawned(&mut self, generation: u32, _pid: i32) -> io::Result<()> {
        let at = self.servers.iter().position(|(g, _)| *g == generation).ok_or_else(|| err("no one-shot server"))?;
        let (_, server) = self.servers.swap_remove(at);
        // Blocks until the child connects: a child that dies first closes
        // its end, which ends the accept with an error.
        let (_, reply) = server.accept().map_err(|e| err(format!("{e:?}")))?;
        reply.send(self.tx.clone()).map_err(|e| err(format!("{e:?}")))
    }
}

fn open_ipc_channel() -> io::Result<Box<dyn Master>> {
    let (tx, rx) = ipc_channel::ipc::channel::<Record>()?;
    Ok(Box::new(IpcChannelMaster { tx, rx, pending: None, servers: Vec::new() }))
}

struct IpcChannelSender {
    tx: IpcSender<Record>,
    pid: i32,
    generation: u32,
}

impl Sender for IpcChannelSender {
    fn send(&mut self, status: Status) -> io::Result<()> {
        let record = StatusUpdate { pid: self.pid, generation: self.generation, status }.encode();
        self.tx.send(record).map_err(|e| err(format!("{e:?}")))
    }

    fn disconnect_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

fn sender_ipc_channel() -> io::Result<Box<dyn Sender>> {
    let (pid, generation) = identity()?;
    let server = IpcSender::<Handshake>::connect(channel_name()?)?;
    let (reply_tx, reply_rx) = ipc_channel::ipc::channel::<IpcSender<Record>>()?;
    server.send(reply_tx).map_err(|e| err(format!("{e:?}")))?;
    let tx = reply_rx.recv().map_err(|e| err(format!("{e:?}")))?;
    Ok(Box::new(IpcChannelSender { tx, pid, generation }))
}
