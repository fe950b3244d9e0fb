//! `tokio_master`: a master for one service on tokio, its transport taken
//! by name from its arguments.
//!
//! ```text
//! cargo run -p master-proto-transports --example tokio_master -- [NAME [CHILDREN]]
//! ```
//!
//! It opens the channel of transport NAME (default: the platform's best),
//! wraps the source in [`AsyncSource`], and spawns CHILDREN copies (default
//! 4) of this same program with the standard environment, through tokio's
//! `process` (which reaps them). Each child builds whichever sink its
//! master chose ([`sink_from_env`]) and reports `TAKEN` then `AVAIL` 100
//! times, as fast as it can. The master awaits the updates in batches,
//! feeds them to its bookkeeping, and, as each child exits, forgets its
//! channel and reaps it there too; it prints a line per child (how many
//! TAKEN and AVAIL it took, fewer where the transport keeps only the latest
//! state, and the last state) and a summary.
//!
//! # Errors
//!
//! An unknown NAME, a channel failure, or updates missing after 30 s: a
//! message on standard error and exit status 1.

use std::collections::BTreeMap;
use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use master_proto::master::{Config, Exit, Master, Outcome};
use master_proto::tokio::AsyncSource;
use master_proto::{ChildEnv, ChildFds, Received, Status, StatusSink, StatusSource, Transport};
use master_proto_transports::{AnyTransport, sink_from_env};

/// The argument that makes the program play a child.
const CHILD: &str = "--child";
/// How many TAKEN/AVAIL pairs each child sends.
const ROUNDS: usize = 100;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run = if args.first().map(String::as_str) == Some(CHILD) { child() } else { master(&args) };
    run.map_or_else(
        |e| {
            eprintln!("tokio_master: {e}");
            ExitCode::FAILURE
        },
        |()| ExitCode::SUCCESS,
    )
}

fn child() -> Result<(), Box<dyn Error>> {
    let sink = sink_from_env(&mut ChildEnv::from_process()?)?;
    for _ in 0..ROUNDS {
        sink.notify(Status::TAKEN)?;
        sink.notify(Status::AVAIL)?;
    }
    Ok(())
}

fn master(args: &[String]) -> Result<(), Box<dyn Error>> {
    let transport = args.first().map_or(Ok(AnyTransport::platform_default()), |n| AnyTransport::from_name(n))?;
    let children: usize = args.get(1).map_or(Ok(4), |n| n.parse())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(serve(transport, children))
}

async fn serve(transport: AnyTransport, children: usize) -> Result<(), Box<dyn Error>> {
    println!("transport {transport}");
    let mut source = AsyncSource::new(transport.open()?).map_err(|e| e.into_parts().1)?;
    let mut master = Master::new(Config::default());
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..children {
        let generation = master.begin_spawn(Instant::now())?;
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.arg(CHILD);
        ChildFds::new(transport.child_end(source.get_mut(), generation)?, generation).install(&mut cmd)?;
        let mut child = tokio::process::Command::from(cmd).spawn()?;
        let pid = i32::try_from(child.id().ok_or("a child without a pid")?)?;
        master.spawned(pid, generation)?;
        transport.register_child(source.get_mut(), generation, pid)?;
        running.spawn(async move { (pid, child.wait().await) });
    }

    // Updates until every child has exited (a transport that keeps only
    // each child's latest state coalesces some), then what is left; a bound
    // on the whole.
    let mut counts: BTreeMap<i32, (usize, usize, Status)> = BTreeMap::new();
    let mut received = 0;
    let mut take = |item: Received| {
        let outcome = master.receive(&item);
        if let Received::Update { update, .. } = item {
            let count = counts.entry(update.pid).or_insert((0, 0, update.status));
            match outcome {
                Outcome::Taken => count.0 += 1,
                Outcome::Avail => count.1 += 1,
                _ => {}
            }
            count.2 = update.status;
            received += 1;
        }
    };
    let mut exits = Vec::new();
    let work = async {
        while !running.is_empty() {
            tokio::select! {
                done = running.join_next() => {
                    let (pid, status) = done.ok_or("no child left")??;
                    // What the child left is delivered before its channel goes.
                    transport.forget_child(source.get_mut(), pid)?;
                    exits.push((pid, status?));
                }
                drained = source.drain(&mut take) => {
                    drained?;
                }
            }
        }
        source.get_mut().drain(&mut take)?;
        Ok::<_, Box<dyn Error>>(())
    };
    tokio::time::timeout(Duration::from_secs(30), work).await.map_err(|_| "not done within 30 s")??;
    for (pid, status) in exits {
        let exit = status.code().map_or(Exit::Signal(0), Exit::Code);
        master.reaped(pid, exit, Instant::now());
        let (taken, avail, last) = counts.get(&pid).copied().unwrap_or((0, 0, Status::TAKEN));
        println!("pid {pid}: {taken} TAKEN, {avail} AVAIL, last {last}, {status}");
    }
    println!("{children} children, {received} updates, {} left in the table", master.total());
    Ok(())
}
