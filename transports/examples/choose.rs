//! `choose`: a master that takes its status transport by name, spawns
//! itself as the child, and prints what the child tells it.
//!
//! ```text
//! cargo run -p master-proto-transports --example choose -- [NAME]
//! ```
//!
//! With no NAME it uses [`AnyTransport::platform_default`]. The master
//! opens the channel, spawns this same program with the standard
//! environment (fd 5, `GENERATION`, the transport's name) and registers
//! the child with the source; the child builds whichever sink its master
//! chose ([`sink_from_env`]), notifies `TAKEN` then `AVAIL`, and exits.
//! The master prints each update with the sender the transport vouches
//! for, feeds it to its bookkeeping, and reaps the child.
//!
//! # Errors
//!
//! An unknown NAME (the message lists the names built here), or any
//! failure of the channel: a message on standard error and exit status 1.

use std::error::Error;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use master_proto::master::{Config, Exit, Master};
use master_proto::{ChildEnv, ChildFds, Received, Status, StatusSink, StatusSource, Transport};
use master_proto_transports::{AnyTransport, sink_from_env};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// The argument that makes the program play the child.
const CHILD: &str = "--child";

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    let run = if arg.as_deref() == Some(CHILD) { child() } else { master(arg.as_deref()) };
    run.map_or_else(
        |e| {
            eprintln!("choose: {e}");
            ExitCode::FAILURE
        },
        |()| ExitCode::SUCCESS,
    )
}

fn child() -> Result<(), Box<dyn Error>> {
    let sink = sink_from_env(&mut ChildEnv::from_process()?)?;
    sink.notify(Status::TAKEN)?;
    sink.notify(Status::AVAIL)?;
    Ok(())
}

fn master(name: Option<&str>) -> Result<(), Box<dyn Error>> {
    let transport = name.map_or(Ok(AnyTransport::platform_default()), AnyTransport::from_name)?;
    println!("transport {transport}");
    let mut source = transport.open()?;
    let mut master = Master::new(Config::default());

    let generation = master.begin_spawn(Instant::now())?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg(CHILD);
    ChildFds::new(transport.child_end(&mut source, generation)?, generation).install(&mut cmd)?;
    let mut child = cmd.spawn()?;
    drop(cmd); // closes the master's copies of the child's descriptors
    let pid = i32::try_from(child.id())?;
    master.spawned(pid, generation)?;
    transport.register_child(&mut source, generation, pid)?;

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut avail = false;
    while !avail {
        let left = deadline.checked_duration_since(Instant::now()).ok_or("no AVAIL within 30 s")?;
        let mut fds = [PollFd::new(source.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX))?;
        while let Some(item) = source.try_recv()? {
            let outcome = master.receive(&item);
            if let Received::Update { update, sender } = item {
                println!(
                    "{} from pid {} generation {} ({sender:?}): {outcome}",
                    update.status, update.pid, update.generation
                );
                avail |= update.status == Status::AVAIL;
            }
        }
    }

    let status = child.wait()?;
    transport.forget_child(&mut source, pid)?;
    let exit = status.code().map(Exit::Code).or(status.signal().map(Exit::Signal)).ok_or("no exit status")?;
    println!("pid {pid} exited: {status}; {:?}", master.reaped(pid, exit, Instant::now()));
    Ok(())
}
