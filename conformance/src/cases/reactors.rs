//! Cases 16-19: masters and children on tokio and mio (cargo features
//! `tokio` and `mio` of this crate, on by default), through master-proto's
//! adapters.
//!
//! The masters receive the bursts of case 15 ([`super::bursts`]); the
//! children wait for their master to go, orderly or killed, as in cases 5
//! and 6. Every wait is bounded; a wait that ends by its bound is judged as
//! in case 15, and any stall fails the case.

use std::collections::BTreeSet;

use master_proto::{NotifyError, Status, StatusSink};

use super::bursts::{BurstRun, burst_roles};
use crate::harness::{Ctx, Kid, Spawn, WAIT, child_sink, fail, readable_now, receive, say, spawn_plain, update_of};
use crate::hostile::Hostile;

/// How a child waits for its master to go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiter {
    /// tokio, a current-thread runtime.
    #[cfg(feature = "tokio")]
    TokioCurrentThread,
    /// tokio, a multi-thread runtime; the wait is a spawned task.
    #[cfg(feature = "tokio")]
    TokioMultiThread,
    /// mio, a `Poll` of its own.
    #[cfg(feature = "mio")]
    Mio,
}

impl Waiter {
    /// The number a child role gets as its parameter.
    fn code(self) -> u64 {
        match self {
            #[cfg(feature = "tokio")]
            Waiter::TokioCurrentThread => 0,
            #[cfg(feature = "tokio")]
            Waiter::TokioMultiThread => 1,
            #[cfg(feature = "mio")]
            Waiter::Mio => 2,
        }
    }

    fn from_code(code: u64) -> Waiter {
        match code {
            #[cfg(feature = "tokio")]
            0 => Waiter::TokioCurrentThread,
            #[cfg(feature = "tokio")]
            1 => Waiter::TokioMultiThread,
            #[cfg(feature = "mio")]
            2 => Waiter::Mio,
            other => fail(format_args!("no waiter {other} in this build")),
        }
    }
}

// ---------------------------------------------------------------------------
// tokio.

/// Bursts for each of the two runtimes of case 16.
#[cfg(feature = "tokio")]
const TOKIO_BURSTS: usize = 600;

/// tokio's two runtimes, as the masters and children here build them.
#[cfg(feature = "tokio")]
#[derive(Clone, Copy, Debug)]
enum Flavor {
    CurrentThread,
    MultiThread,
}

#[cfg(feature = "tokio")]
impl Flavor {
    fn runtime(self) -> tokio::runtime::Runtime {
        let mut builder = match self {
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            Flavor::MultiThread => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(2);
                b
            }
        };
        builder.enable_all().build().unwrap_or_else(|e| panic!("building a tokio runtime: {e}"))
    }

    fn master(self) -> &'static str {
        match self {
            Flavor::CurrentThread => "a tokio master (current-thread runtime)",
            Flavor::MultiThread => "a tokio master (multi-thread runtime)",
        }
    }
}

/// Case 16. A tokio master, on a current-thread and then on a
/// multi-thread runtime, receives the bursts of case 15 (600 on each)
/// through [`master_proto::tokio::AsyncSource`]: `recv` or the batched
/// `drain`, each half the time, each bounded by a `tokio::time::timeout`.
/// Nothing is lost, and no wait ends by its bound while a record is
/// pending.
#[cfg(feature = "tokio")]
pub fn tokio_master<T: Hostile + Default>(ctx: &Ctx) {
    if let Some(role) = ctx.role() {
        burst_roles::<T>(ctx, &role);
        fail(format_args!("unknown role {role}"));
    }
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        let t = T::default();
        let mut source = t.open().expect("open a channel");
        let run = BurstRun::start(ctx, &t, &mut source, TOKIO_BURSTS);
        let report = flavor.runtime().block_on(async move {
            let mut source = master_proto::tokio::AsyncSource::new(source)
                .unwrap_or_else(|e| panic!("registering the source: {}", e.error()));
            tokio_bursts(run, &mut source, flavor.master()).await
        });
        report.assert_no_stall(T::default().name(), flavor.master());
        println!("tokio_master {}, {}: {}", T::default().name(), flavor.master(), report.summary());
    }
}

/// The loop of a tokio master over the bursts of `run`.
#[cfg(feature = "tokio")]
async fn tokio_bursts<S: master_proto::StatusSource>(
    mut run: BurstRun,
    source: &mut master_proto::tokio::AsyncSource<S>,
    who: &str,
) -> super::bursts::Report {
    use super::bursts::{BOUND, MAX_STALLS};
    use tokio::time::timeout;

    let mut got: Vec<master_proto::Received> = Vec::new();
    'bursts: while run.next_burst() {
        while !run.burst_done() {
            run.report.waits += 1;
            let waited = if run.use_drain() {
                timeout(BOUND, source.drain(|item| got.push(item))).await.map(|r| r.map(drop))
            } else {
                timeout(BOUND, source.recv()).await.map(|r| r.map(|item| got.push(item)))
            };
            match waited {
                Ok(result) => result.unwrap_or_else(|e| panic!("{who}: {e}")),
                Err(_elapsed) => {
                    // As `BurstRun::judge`: once the child has sent what it
                    // will, a readiness edge must come, or nothing may be
                    // pending.
                    run.settled();
                    match timeout(BOUND, source.recv()).await {
                        Ok(result) => {
                            got.push(result.unwrap_or_else(|e| panic!("{who}: {e}")));
                            run.report.late += 1;
                        }
                        Err(_elapsed) => match run.pending(source.get_mut()) {
                            Some(item) => {
                                got.push(item);
                                run.stalled();
                            }
                            None => {
                                run.check_lost(|| false, who);
                                run.report.late += 1;
                            }
                        },
                    }
                }
            }
            for item in got.drain(..) {
                run.take(item);
            }
            if run.report.stalls.len() >= MAX_STALLS {
                break 'bursts;
            }
        }
    }
    run.finish(source.get_mut())
}

/// Case 17. Children wait for their master to go with
/// [`master_proto::tokio::Disconnect`], on a current-thread runtime and on
/// a multi-thread one (a spawned task): the master closes the channel, or
/// (its role in a process of its own) is killed with `SIGKILL`; each wait
/// resolves within [`WAIT`], and the child's next notify says
/// `Disconnected`, so the wait did not resolve early either.
#[cfg(feature = "tokio")]
pub fn tokio_disconnect<T: Hostile + Default>(ctx: &Ctx) {
    if let Some(role) = ctx.role() {
        waiter_roles::<T>(ctx, &role);
    }
    let waiters = [Waiter::TokioCurrentThread, Waiter::TokioMultiThread];
    close_while_waiting::<T>(ctx, &waiters);
    kill_while_waiting(ctx, &waiters);
}

/// Waits on tokio for `sink`'s master to go; `say_armed` once the wait is
/// registered. Whether it resolved within [`WAIT`].
#[cfg(feature = "tokio")]
fn tokio_wait(sink: &impl StatusSink, flavor: Flavor, say_armed: impl FnOnce()) -> bool {
    use master_proto::tokio::Disconnect;
    flavor.runtime().block_on(async {
        let gone = Disconnect::new(sink).unwrap_or_else(|e| fail(format_args!("registering the disconnect fd: {e}")));
        say_armed();
        let waited = match flavor {
            Flavor::CurrentThread => tokio::time::timeout(WAIT, gone.wait()).await,
            // A task of its own, as a server would spawn it beside its
            // accept loop (a Disconnect owns its descriptor: 'static).
            Flavor::MultiThread => {
                tokio::time::timeout(WAIT, async move {
                    tokio::spawn(async move { gone.wait().await })
                        .await
                        .unwrap_or_else(|e| fail(format_args!("the waiting task: {e}")))
                })
                .await
            }
        };
        match waited {
            Ok(Ok(())) => true,
            Ok(Err(e)) => fail(format_args!("waiting for the disconnect: {e}")),
            Err(_elapsed) => false,
        }
    })
}

// ---------------------------------------------------------------------------
// mio.

/// Bursts of case 18.
#[cfg(feature = "mio")]
const MIO_BURSTS: usize = 1000;

/// Case 18. A mio master: the source wrapped in
/// [`master_proto::mio::MioSource`], registered readable with a `Poll` of
/// its own, receives the bursts of case 15 (1,000), draining until `None`
/// (or one `drain`) after every event, each poll bounded. Nothing is lost,
/// and no poll ends by its bound while a record is pending.
#[cfg(feature = "mio")]
pub fn mio_master<T: Hostile + Default>(ctx: &Ctx) {
    use master_proto::mio::MioSource;
    use mio::{Events, Interest, Poll, Token};

    if let Some(role) = ctx.role() {
        burst_roles::<T>(ctx, &role);
        fail(format_args!("unknown role {role}"));
    }
    let t = T::default();
    let mut source = t.open().expect("open a channel");
    let run = BurstRun::start(ctx, &t, &mut source, MIO_BURSTS);
    let mut source = MioSource::new(source);
    let mut poll = Poll::new().expect("a mio Poll");
    poll.registry().register(&mut source, Token(0), Interest::READABLE).expect("registering the source");
    let mut events = Events::with_capacity(8);
    let report = super::bursts::edge_triggered_master(
        run,
        &mut source,
        |bound| mio_poll(&mut poll, &mut events, bound),
        "a mio master",
    );
    report.assert_no_stall(T::default().name(), "a mio master");
    println!("mio_master {}: {}", T::default().name(), report.summary());
}

/// Polls at most `bound`; whether an event came. `EINTR` is retried for
/// what is left of the bound.
#[cfg(feature = "mio")]
fn mio_poll(poll: &mut mio::Poll, events: &mut mio::Events, bound: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + bound;
    loop {
        match poll.poll(events, Some(deadline.saturating_duration_since(std::time::Instant::now()))) {
            Ok(()) => return !events.is_empty(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("mio poll: {e}"),
        }
    }
}

/// Case 19. Children wait for their master to go with
/// [`master_proto::mio::MioDisconnect`] in a mio `Poll`: orderly close,
/// then `SIGKILL`, as case 17.
#[cfg(feature = "mio")]
pub fn mio_disconnect<T: Hostile + Default>(ctx: &Ctx) {
    if let Some(role) = ctx.role() {
        waiter_roles::<T>(ctx, &role);
    }
    close_while_waiting::<T>(ctx, &[Waiter::Mio]);
    kill_while_waiting(ctx, &[Waiter::Mio]);
}

/// Waits in a mio `Poll` for `sink`'s master to go; `say_armed` once the
/// disconnect fd is registered. Whether it went within [`WAIT`].
#[cfg(feature = "mio")]
fn mio_wait(sink: &impl StatusSink, say_armed: impl FnOnce()) -> bool {
    use master_proto::mio::MioDisconnect;
    use mio::{Events, Interest, Poll, Token};

    let mut poll = Poll::new().unwrap_or_else(|e| fail(format_args!("a mio Poll: {e}")));
    let mut gone = MioDisconnect::new(sink);
    poll.registry()
        .register(&mut gone, Token(1), Interest::READABLE)
        .unwrap_or_else(|e| fail(format_args!("registering the disconnect fd: {e}")));
    say_armed();
    let mut events = Events::with_capacity(4);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if gone.fired().unwrap_or_else(|e| fail(format_args!("poll: {e}"))) {
            return true;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return false;
        }
        mio_poll(&mut poll, &mut events, deadline - now);
    }
}

// ---------------------------------------------------------------------------
// The disconnect cases' children and masters.

/// The child roles of cases 17 and 19 (arg: the [`Waiter`]): `waiter` and
/// `orphan-waiter` send AVAIL, wait for their master to go, then notify
/// once, which must say `Disconnected`; `waiter-master` is the master
/// killed in [`kill_while_waiting`].
fn waiter_roles<T: Hostile + Default>(ctx: &Ctx, role: &str) -> ! {
    let waiter = Waiter::from_code(ctx.arg_u64());
    match role {
        "waiter" | "orphan-waiter" => {
            let sink = child_sink::<T>();
            sink.notify(Status::AVAIL).unwrap_or_else(|e| fail(format_args!("first notify: {e}")));
            if readable_now(sink.disconnect_fd()) {
                fail("the disconnect fd fired while the master was alive");
            }
            let me = std::process::id();
            let armed = || say(format_args!("armed {me}"));
            let gone = match waiter {
                #[cfg(feature = "tokio")]
                Waiter::TokioCurrentThread => tokio_wait(&sink, Flavor::CurrentThread, armed),
                #[cfg(feature = "tokio")]
                Waiter::TokioMultiThread => tokio_wait(&sink, Flavor::MultiThread, armed),
                #[cfg(feature = "mio")]
                Waiter::Mio => mio_wait(&sink, armed),
            };
            let next = sink.notify(Status::TAKEN);
            if role == "orphan-waiter" {
                // Not the test's child: it reports on stdout instead.
                say(format_args!("orphan {me}: gone {gone}; notify {next:?}"));
            }
            if !gone {
                fail(format_args!("{waiter:?}: the master's going was not seen within {WAIT:?}"));
            }
            match next {
                Err(NotifyError::Disconnected) => std::process::exit(0),
                other => fail(format_args!("{waiter:?}: notify after the wait resolved returned {other:?}")),
            }
        }
        "waiter-master" => waiter_master::<T>(ctx, waiter),
        other => fail(format_args!("unknown role {other}")),
    }
}

/// One waiting child per waiter in `waiters`; once all are armed, the
/// master drops its source: each sees it and exits 0.
fn close_while_waiting<T: Hostile + Default>(ctx: &Ctx, waiters: &[Waiter]) {
    let t = T::default();
    let mut source = t.open().expect("open a channel");
    let mut kids: Vec<Kid> = waiters
        .iter()
        .map(|w| Spawn::new(ctx, "waiter", 2).stdout().arg(w.code()).spawn_registered(&t, &mut source))
        .collect();
    for item in receive(&mut source, kids.len(), "the waiting children's AVAIL") {
        let _ = update_of(item, "a waiting child");
    }
    for kid in &mut kids {
        kid.expect_line("armed");
    }
    drop(source);
    for (kid, waiter) in kids.iter_mut().zip(waiters) {
        kid.expect_success(&format!("a child waiting with {waiter:?} after the master closed"));
    }
}

/// The master role of [`kill_while_waiting`]: spawns two orphans that wait
/// with `waiter` and share its stdout, reads until it heard both, says so,
/// and waits to be killed.
fn waiter_master<T: Hostile + Default>(ctx: &Ctx, waiter: Waiter) -> ! {
    let t = T::default();
    let mut source = t.open().unwrap_or_else(|e| fail(format_args!("open: {e}")));
    let kids: Vec<Kid> = (0..2)
        .map(|_| {
            Spawn::new(ctx, "orphan-waiter", 3).inherit_stdout().arg(waiter.code()).spawn_registered(&t, &mut source)
        })
        .collect();
    receive(&mut source, kids.len(), "the orphans' AVAIL");
    say(format_args!("master: ready {}", kids.iter().map(|k| k.pid().to_string()).collect::<Vec<_>>().join(" ")));
    // The children must outlive this process: never drop them (which
    // would kill them).
    std::mem::forget(kids);
    let _keep = source;
    loop {
        std::thread::park();
    }
}

/// For each waiter: the master role in a process of its own, killed with
/// `SIGKILL` once its two orphans are armed; both report that the wait
/// resolved and notify said `Disconnected`.
fn kill_while_waiting(ctx: &Ctx, waiters: &[Waiter]) {
    for &waiter in waiters {
        let mut master = spawn_plain(ctx, "waiter-master", waiter.code());
        let (mut ready, mut armed) = (None, 0);
        while ready.is_none() || armed < 2 {
            let line = master.expect_line("");
            if line.starts_with("master: ready") {
                ready = Some(line);
            } else if line.starts_with("armed") {
                armed += 1;
            }
        }
        let pids: Vec<i32> =
            ready.expect("seen").split_whitespace().skip(2).map(|p| p.parse().expect("a pid")).collect();
        let status = master.kill9();
        assert!(status.code().is_none(), "the master role must die of SIGKILL, got {status}");
        let reports: BTreeSet<String> = (0..2).map(|_| master.expect_line("orphan ")).collect();
        let want: BTreeSet<String> =
            pids.iter().map(|pid| format!("orphan {pid}: gone true; notify Err(Disconnected)")).collect();
        assert_eq!(reports, want, "what the orphans waiting with {waiter:?} saw after the master was killed");
    }
}
