//! The tokio driver (feature `tokio`): the supervisor's descriptor under tokio's `AsyncFd`, its deadlines under tokio's timer.
//!
//! [`drive`] awaits readiness of the supervisor's epoll descriptor and its
//! next deadline, and calls [`Supervisor::poll_once`] with a zero timeout
//! when either comes. tokio waits edge-triggered, so after each wake-up the
//! driver calls `poll_once` again until it reports nothing ready, and only
//! then lets tokio clear the readiness (`AsyncFdReadyGuard::try_io`, which
//! keeps a readiness that arrived in between). Signals stay the
//! application's: it calls [`Handle::reload`](crate::Handle::reload) and
//! [`Handle::shutdown`](crate::Handle::shutdown), from
//! `tokio::signal` for instance.
//!
//! Spawning a child forks and waits for its `exec` inside `poll_once`,
//! as `std::process::Command::spawn` does: a short block of the thread
//! that drives the supervisor, as any fork in async code is.
//!
//! Transports: the driver relies on each status channel's descriptor
//! becoming readable again for anything pending once a read found it empty
//! (contract item 7). Until the edge-safety fix for `seqpacket` and
//! `memfd` is on main, this driver is tested over `duplex` and `pipe`.
//!
//! # Errors
//!
//! [`PollError`] from `poll_once`, or [`PollError::Wait`] when tokio
//! cannot register the descriptor.
//!
//! # Safety
//!
//! tokio's `AsyncFd::register_with_interest` wants a descriptor that stays
//! open and the same for the life of the `AsyncFd`: the driver gives it a
//! duplicate of the epoll descriptor that it owns (an `OwnedFd`).
//!
//! # See also
//!
//! tokio's `AsyncFd`; [`Supervisor`] for the loop it drives.

#![allow(unsafe_code)] // Safety: registering a descriptor with tokio, which needs it to stay open; see `drive`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::{Event, PollError, Supervisor};

/// Drives `supervisor` on the current tokio runtime until its shutdown is
/// complete, handing every event to `on_event`.
///
/// # Errors
///
/// As [`Supervisor::poll_once`]; [`PollError::Wait`] with the errno when
/// the descriptor cannot be registered with tokio.
///
/// # Examples
///
/// ```no_run
/// # async fn demo(mut supervisor: master_proto_supervisor::Supervisor) -> Result<(), Box<dyn std::error::Error>> {
/// let handle = supervisor.handle();
/// tokio::spawn(async move {
///     // … once the application decides to stop (tokio::signal::ctrl_c(), say):
///     handle.shutdown();
/// });
/// master_proto_supervisor::tokio::drive(&mut supervisor, |event| eprintln!("{event}")).await?;
/// # Ok(()) }
/// ```
pub async fn drive(supervisor: &mut Supervisor, mut on_event: impl FnMut(Event)) -> Result<(), PollError> {
    let fd = supervisor.as_fd().try_clone_to_owned().map_err(|e| PollError::Wait(errno_of(&e)))?;
    // SAFETY: `fd` is an open descriptor that the AsyncFd owns (an OwnedFd,
    // a duplicate of the epoll descriptor): nothing else closes or replaces
    // it while the AsyncFd lives, and its raw number never changes.
    let fd: AsyncFd<OwnedFd> = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| PollError::Wait(errno_of(&e.into_parts().1)))?;
    // Whatever is ready or due before the first wait.
    drain(supervisor, &mut on_event)?;
    while !supervisor.is_done() {
        let readable = fd.readable();
        let guard = match supervisor.next_deadline() {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), readable).await.ok(),
            None => Some(readable.await),
        };
        let Some(guard) = guard else {
            // A deadline: what is due, and whatever became ready too.
            drain(supervisor, &mut on_event)?;
            continue;
        };
        let mut guard = guard.map_err(|e| PollError::Wait(errno_of(&e)))?;
        let mut failed = None;
        // Ok: something was handled, readiness kept, go round again; Err
        // (WouldBlock): nothing was ready, tokio clears the readiness
        // unless a new one came in meanwhile.
        let _ = guard.try_io(|_| match supervisor.poll_once(Some(Duration::ZERO), &mut on_event) {
            Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
            Ok(_) => Ok(()),
            Err(e) => {
                failed = Some(e);
                Ok(())
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(())
}

/// Calls `poll_once` without waiting until nothing is ready.
fn drain(supervisor: &mut Supervisor, on_event: &mut impl FnMut(Event)) -> Result<(), PollError> {
    while supervisor.poll_once(Some(Duration::ZERO), &mut *on_event)? > 0 && !supervisor.is_done() {}
    Ok(())
}

fn errno_of(e: &io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}
