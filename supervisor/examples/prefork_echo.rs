//! A complete prefork TCP echo server: the supervisor as master, this same program as its children.
//!
//! `prefork_echo [ADDR]` listens on ADDR (127.0.0.1:0 by default), prints
//! `listening on ADDR`, then one line per event. Children are spawned as
//! clients come (at most 8), each echoing lines and telling the master
//! TAKEN and AVAIL through the standard environment. SIGHUP reloads (old
//! children finish their client and exit); SIGTERM or SIGINT shuts down.
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use master_proto::{ChildEnv, Status, StatusSink};
use master_proto_supervisor::{ListenAddr, Service, Supervisor};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Set in a child's environment: run as the echo child.
const CHILD: &str = "PREFORK_ECHO_CHILD";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let addr: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:0").parse()?;
    let exe = std::env::current_exe()?;
    let mut supervisor = Supervisor::new()?;
    let service = Service::builder("echo").listen_tcp(addr).process_limit(8).command(move |_| {
        let mut cmd = Command::new(&exe);
        cmd.env(CHILD, "1").process_group(0); // a Ctrl-C is for the master only
        cmd
    });
    let echo = supervisor.add(service.build()?)?;
    if let Some([ListenAddr::Tcp(addr)]) = supervisor.listen_addrs(echo).as_deref() {
        println!("listening on {addr}");
    }
    // Signals are the program's: a thread turns them into requests.
    let handle = supervisor.handle();
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal == SIGHUP { handle.reload() } else { handle.shutdown() }
        }
    });
    supervisor.run(|event| println!("{event}"))?;
    Ok(())
}

/// The child: waits for a client or the master's leaving; TAKEN, echo,
/// AVAIL for each client; exits once the master has gone.
fn child() -> Result<(), Box<dyn std::error::Error>> {
    let mut env = ChildEnv::from_process()?;
    let sink = master_proto_transports::sink_from_env(&mut env)?;
    let listener = TcpListener::from(env.take_listen().remove(0));
    listener.set_nonblocking(true)?; // shared: another child may win the race
    loop {
        let mut fds =
            [PollFd::new(sink.disconnect_fd(), PollFlags::POLLIN), PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::NONE)?;
        if fds[0].any() != Some(false) {
            return Ok(()); // the master has gone (reload or shutdown)
        }
        let Ok((client, _)) = listener.accept() else { continue };
        let _ = sink.notify(Status::TAKEN);
        let mut out = client.try_clone()?;
        for line in BufReader::new(client).lines().map_while(Result::ok) {
            if writeln!(out, "{line}").is_err() {
                break;
            }
        }
        if sink.notify(Status::AVAIL).is_err() {
            return Ok(()); // retired by a reload: done after this client
        }
    }
}
