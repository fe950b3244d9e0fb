//! The supervisor over real child processes: spawn on demand under the process limit, reload, throttle, crash-loop guard, spare pool, two services, shutdown, and the polling fallback.
//!
//! The children are this test binary, re-executed in a role (see
//! `common`). Each test drives its own supervisor in its own thread; since
//! a supervisor reaps only its own pids, tests running side by side in one
//! process do not disturb each other (a supervisor that reaped with
//! `waitpid(-1)` would steal the others' children and fail them).

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Client, Ctx, Driven, WAIT, play_role, role, tcp_addr};
use master_proto::Status;
use master_proto::master::{Exit, Outcome, ReapOutcome};
use master_proto_supervisor::{
    ChildExits, ChildState, CrashGuard, Event, ExitWatch, Service, ServiceId, Spare, SpawnReason, StopReason,
    Supervisor,
};
use master_proto_transports::AnyTransport;
use master_proto_transports::flavours::{Duplex, Memfd};

/// A supervisor with one echo-like service playing `role` on a TCP port of
/// 127.0.0.1.
fn one_service(
    ctx: &Ctx,
    role: &'static str,
    sup: Supervisor,
    build: impl FnOnce(master_proto_supervisor::ServiceBuilder) -> master_proto_supervisor::ServiceBuilder,
) -> (Driven, ServiceId) {
    let ctx = ctx.clone();
    let builder = Service::builder(role)
        .transport(AnyTransport::postfix())
        .listen_tcp(([127, 0, 0, 1], 0))
        .command(move |_| ctx.command(role));
    let mut sup = sup;
    let id = sup.add(build(builder).build().expect("building the service")).expect("adding the service");
    (Driven::new(sup), id)
}

#[test]
fn spawn_on_demand_under_concurrent_clients_never_above_the_limit() {
    let ctx = Ctx::new(module_path!(), "spawn_on_demand_under_concurrent_clients_never_above_the_limit");
    play_role(&ctx);
    let limit = 3;
    let (mut d, id) =
        one_service(&ctx, role::ECHO, Supervisor::new().unwrap(), |b| b.process_limit(limit).throttle_delay(WAIT));
    let addr = tcp_addr(&d.sup, id);
    assert_eq!(d.sup.snapshot(id).unwrap().total(), 0, "nothing is spawned before a client comes");

    // Eight clients at once; each echoes, then holds its connection (and
    // its child TAKEN) until released.
    let clients = 8;
    let (echoed_tx, echoed) = mpsc::channel();
    let mut release = Vec::new();
    let mut threads = Vec::new();
    for n in 0..clients {
        let (tx, rx) = mpsc::channel::<()>();
        release.push(tx);
        let echoed_tx = echoed_tx.clone();
        threads.push(std::thread::spawn(move || {
            let mut client = Client::connect(addr);
            client.echo(&format!("client {n}"));
            echoed_tx.send(n).expect("report");
            let _ = rx.recv_timeout(WAIT);
            client.echo(&format!("client {n} again"));
        }));
    }
    let mut served = 0;
    let check = |d: &Driven| {
        let snap = d.sup.snapshot(id).unwrap();
        assert!(snap.total() <= limit, "{} children, above the limit {limit}", snap.total());
        snap
    };
    // Three children, all busy, the limit reported; the other clients wait.
    d.until("three busy children and the limit reached", |d| {
        let snap = check(d);
        snap.busy == limit && d.events.iter().any(|(_, e)| matches!(e, Event::LimitReached { limit: 3, .. }))
    });
    assert!(!d.sup.snapshot(id).unwrap().listening, "at the limit the master does not watch the socket");
    // Release clients as they are served, until all are.
    d.until("every client served", |d| {
        check(d);
        while let Ok(n) = echoed.try_recv() {
            served += 1;
            release[n].send(()).expect("release");
        }
        served == clients
    });
    for t in threads {
        t.join().expect("a client failed");
    }
    // The shutdown reads what the channel still holds (a client may have
    // had its echo before the master read its child's TAKEN).
    d.shutdown();
    let spawned: Vec<usize> = d.all(|e| match e {
        Event::Spawned { children, reason: SpawnReason::Demand, .. } => Some(*children),
        Event::Spawned { .. } => panic!("a spawn for another reason than a client"),
        _ => None,
    });
    assert!(spawned.len() >= limit, "{spawned:?}");
    assert!(spawned.iter().all(|&n| n <= limit), "children counted at each spawn: {spawned:?}");
    let taken = d.all(|e| matches!(e, Event::Status { outcome: Outcome::Taken, .. }).then_some(())).len();
    assert_eq!(taken, clients, "one TAKEN per client");
    let busy_most = d.all(|e| match e {
        Event::Status { busy, .. } => Some(*busy),
        _ => None,
    });
    assert_eq!(busy_most.iter().max(), Some(&limit));
    let (spawned, reaped) = d.spawned_and_reaped();
    assert_eq!(spawned, reaped, "every child reaped");
    assert!(d.all(|e| matches!(e, Event::Killed { .. }).then_some(())).is_empty(), "every child left by itself");
}

#[test]
fn reload_retires_children_which_finish_their_client_and_exit() {
    let ctx = Ctx::new(module_path!(), "reload_retires_children_which_finish_their_client_and_exit");
    play_role(&ctx);
    let (mut d, id) = one_service(&ctx, role::ECHO, Supervisor::new().unwrap(), |b| b.process_limit(4));
    let addr = tcp_addr(&d.sup, id);

    let mut old_client = Client::connect(addr);
    let (old, old_generation) = d.until_event("the first spawn", 0, |e| match e {
        Event::Spawned { pid, generation, .. } => Some((*pid, *generation)),
        _ => None,
    });
    d.until("the first child TAKEN", |d| d.sup.snapshot(id).unwrap().busy == 1);
    old_client.echo("before the reload");

    let epoch = d.sup.reload_service(id).expect("reload");
    assert_eq!(epoch, 1);
    let mark = d.events.len();
    let retired = d.until_event("the reload event", mark, |e| match e {
        Event::Reloaded { retired, epoch: 1, .. } => Some(retired.clone()),
        _ => None,
    });
    assert_eq!(retired, [old]);
    assert_eq!(d.sup.snapshot(id).unwrap().retired, 1);

    // A new client gets a new child, of a later generation.
    let mut new_client = Client::connect(addr);
    let (new, new_generation) = d.until_event("a spawn after the reload", mark, |e| match e {
        Event::Spawned { pid, generation, .. } => Some((*pid, *generation)),
        _ => None,
    });
    assert!(new_generation > old_generation);
    new_client.echo("after the reload");
    d.until("the new child TAKEN", |d| d.sup.snapshot(id).unwrap().busy == 1);

    // The old child still serves its client to the end, then exits.
    old_client.echo("still served after the reload");
    drop(old_client);
    let (exit, outcome) = d.until_event("the old child reaped", mark, |e| match e {
        Event::Reaped { pid, exit, outcome, .. } if *pid == old => Some((*exit, *outcome)),
        _ => None,
    });
    assert_eq!(exit, Exit::Code(0));
    let ReapOutcome::Reaped { child, throttle_began: false } = outcome else { panic!("{outcome:?}") };
    assert!(child.retired && child.generation == old_generation);
    let snap = d.sup.snapshot(id).unwrap();
    assert_eq!(snap.children.iter().map(|c| (c.pid, c.state)).collect::<Vec<_>>(), [(new, ChildState::Busy)]);
    assert_eq!(snap.counters.reloads, 1);

    drop(new_client);
    d.shutdown();
    let (spawned, reaped) = d.spawned_and_reaped();
    assert_eq!(spawned, reaped);
}

#[test]
fn a_child_that_dies_before_serving_throttles_spawning() {
    let ctx = Ctx::new(module_path!(), "a_child_that_dies_before_serving_throttles_spawning");
    play_role(&ctx);
    let delay = Duration::from_millis(600);
    let (mut d, id) = one_service(&ctx, role::DIE, Supervisor::new().unwrap(), |b| b.throttle_delay(delay));
    // A client waits in the backlog: every child dies without taking it.
    let _client = std::net::TcpStream::connect(tcp_addr(&d.sup, id)).expect("connect");
    let until = d.until_event("the throttle", 0, |e| match e {
        Event::Throttled { delay: throttled, until, .. } => {
            assert_eq!(*throttled, delay);
            Some(*until)
        }
        _ => None,
    });
    let reaps = d.all(|e| match e {
        Event::Reaped { exit, outcome, .. } => Some((*exit, outcome.name())),
        _ => None,
    });
    assert_eq!(reaps, [(Exit::Code(1), "reaped-throttle")]);
    assert!(!d.sup.snapshot(id).unwrap().listening, "no listening while throttled");
    let mark = d.events.len();
    let respawned_at = d.until_event("a spawn after the throttle", mark, |e| match e {
        Event::Spawned { .. } => Some(Instant::now()),
        _ => None,
    });
    assert!(respawned_at >= until, "spawned again {:?} before the throttle ended", until - respawned_at);
    assert!(
        d.events[mark..].iter().any(|(_, e)| matches!(e, Event::ThrottleEnded { .. })),
        "the throttle's end is reported"
    );
    d.shutdown();
    assert!(d.sup.master(id).unwrap().counters().throttled >= 1);
}

#[test]
fn the_crash_loop_guard_backs_off_on_schedule() {
    let ctx = Ctx::new(module_path!(), "the_crash_loop_guard_backs_off_on_schedule");
    play_role(&ctx);
    let guard = CrashGuard {
        window: Duration::from_secs(60),
        max_failures: 3,
        initial_backoff: Duration::from_millis(300),
        max_backoff: Duration::from_millis(600),
    };
    // Each child serves one client, then crashes: Postfix's throttle never
    // fires (it served someone), the guard does.
    let (mut d, id) = one_service(&ctx, role::CRASH, Supervisor::new().unwrap(), |b| b.crash_guard(guard));
    let addr = tcp_addr(&d.sup, id);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut n = 0;
            // Ends when told to, or when the service has gone (the
            // connection is refused or reset).
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 100 {
                if common::try_echo_once(addr, &format!("client {n}")).is_err() {
                    return;
                }
                n += 1;
            }
        })
    };
    let mut trips = Vec::new();
    let mut from = 0;
    for _ in 0..3 {
        let trip = d.until_event("the guard to trip", from, |e| match e {
            Event::CrashLoop { failures, level, backoff, until, .. } => Some((*failures, *level, *backoff, *until)),
            _ => None,
        });
        from =
            d.events.iter().position(|(_, e)| matches!(e, Event::CrashLoop { until, .. } if *until == trip.3)).unwrap()
                + 1;
        trips.push(trip);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let schedule: Vec<(u32, u32, Duration)> = trips.iter().map(|t| (t.0, t.1, t.2)).collect();
    assert_eq!(
        schedule,
        [(3, 1, Duration::from_millis(300)), (3, 2, Duration::from_millis(600)), (3, 3, Duration::from_millis(600))],
        "three failures trip it; the back-off doubles up to its cap"
    );
    // No child was spawned during a back-off.
    for (i, (_, _, _, until)) in trips.iter().enumerate() {
        let tripped_at =
            d.events.iter().find(|(_, e)| matches!(e, Event::CrashLoop { until: u, .. } if u == until)).unwrap().0;
        for (at, e) in &d.events {
            if let Event::Spawned { .. } = e {
                assert!(!(*at > tripped_at && at < until), "trip {i}: a spawn during the back-off");
            }
        }
    }
    assert!(d.all(|e| matches!(e, Event::CrashLoopEnded { .. }).then_some(())).len() >= 2);
    assert!(
        d.all(|e| matches!(e, Event::Throttled { .. }).then_some(())).is_empty(),
        "Postfix's throttle stayed out of it"
    );
    assert_eq!(d.sup.snapshot(id).unwrap().service_counters.crash_loops, 3);
    d.shutdown();
    // Dropping the supervisor closes the socket: a client left waiting in
    // its backlog is reset.
    drop(d);
    client.join().expect("the client thread");
}

#[test]
fn the_spare_pool_keeps_idle_children_within_the_limit() {
    let ctx = Ctx::new(module_path!(), "the_spare_pool_keeps_idle_children_within_the_limit");
    play_role(&ctx);
    let limit = 5;
    let (mut d, id) =
        one_service(&ctx, role::ECHO, Supervisor::new().unwrap(), |b| b.process_limit(limit).spare(Spare::new(2, 3)));
    let addr = tcp_addr(&d.sup, id);
    let idle_and_total = |d: &Driven| {
        let s = d.sup.snapshot(id).unwrap();
        assert!(s.total() <= limit, "{} children above the limit", s.total());
        (s.idle, s.total())
    };
    d.until("two spares before any client", |d| idle_and_total(d) == (2, 2));
    assert!(d.all(|e| matches!(e, Event::Spawned { reason: SpawnReason::Demand, .. }).then_some(())).is_empty());

    // Each busy child is replaced by a spare, up to the limit.
    let mut clients = Vec::new();
    for (n, want) in [(1, (2, 3)), (2, (2, 4)), (3, (2, 5)), (4, (1, 5))] {
        let mut c = Client::connect(addr);
        c.echo("hello");
        clients.push(c);
        d.until(&format!("{n} busy: idle and total {want:?}"), |d| {
            d.sup.snapshot(id).unwrap().busy == n && idle_and_total(d) == want
        });
    }
    // All idle again: five, two above max_idle; the youngest two are
    // stopped, which does not throttle the service.
    drop(clients);
    d.until("back to max_idle", |d| idle_and_total(d) == (3, 3));
    let stopped = d.all(|e| match e {
        Event::SpareStopped { pid, .. } => Some(*pid),
        _ => None,
    });
    assert_eq!(stopped.len(), 2, "{:#?}", d.lines());
    for pid in &stopped {
        let reap = d.until_event("the stopped spare reaped", 0, |e| match e {
            Event::Reaped { pid: p, exit, stopped, outcome, .. } if p == pid => Some((*exit, *stopped, *outcome)),
            _ => None,
        });
        assert_eq!(reap.0, Exit::Signal(15));
        assert_eq!(reap.1, Some(StopReason::Spare));
        assert!(matches!(reap.2, ReapOutcome::Reaped { throttle_began: false, .. }));
    }
    assert!(d.sup.master(id).unwrap().throttled_until(Instant::now()).is_none());
    d.shutdown();
}

#[test]
fn two_services_on_different_transports_share_one_loop() {
    let ctx = Ctx::new(module_path!(), "two_services_on_different_transports_share_one_loop");
    play_role(&ctx);
    let mut sup = Supervisor::new().unwrap();
    let cmd = |ctx: &Ctx| {
        let ctx = ctx.clone();
        move |_: &master_proto_supervisor::Spawning<'_>| ctx.command(role::ECHO)
    };
    // Typed transports: the supervisor holds services of different types.
    let a = sup
        .add(
            Service::builder("a").transport(Duplex).listen_tcp(([127, 0, 0, 1], 0)).command(cmd(&ctx)).build().unwrap(),
        )
        .unwrap();
    let b = sup
        .add(Service::builder("b").transport(Memfd).listen_tcp(([127, 0, 0, 1], 0)).command(cmd(&ctx)).build().unwrap())
        .unwrap();
    let mut d = Driven::new(sup);
    let (addr_a, addr_b) = (tcp_addr(&d.sup, a), tcp_addr(&d.sup, b));
    let mut ca = Client::connect(addr_a);
    let mut cb = Client::connect(addr_b);
    d.until("both services busy", |d| d.sup.snapshot(a).unwrap().busy == 1 && d.sup.snapshot(b).unwrap().busy == 1);
    ca.echo("to a");
    cb.echo("to b");
    assert_eq!(d.sup.snapshot(a).unwrap().transport, "duplex");
    assert_eq!(d.sup.snapshot(b).unwrap().transport, "memfd");
    drop((ca, cb));
    d.until("both idle again", |d| d.sup.snapshot(a).unwrap().idle == 1 && d.sup.snapshot(b).unwrap().idle == 1);
    for id in [a, b] {
        let updates: Vec<Status> = d.all(|e| match e {
            Event::Status { service, update, outcome, .. } if *service == id && outcome.is_applied() => {
                Some(update.status)
            }
            _ => None,
        });
        assert_eq!(updates, [Status::TAKEN, Status::AVAIL], "service {}", id.index());
    }
    d.shutdown();
    for id in [a, b] {
        let c = d.sup.master(id).unwrap().counters();
        assert_eq!((c.spawned, c.reaped), (1, 1));
    }
}

#[test]
fn shutdown_kills_a_child_that_ignores_the_disconnect_after_the_grace_period() {
    let ctx = Ctx::new(module_path!(), "shutdown_kills_a_child_that_ignores_the_disconnect_after_the_grace_period");
    play_role(&ctx);
    let grace = Duration::from_millis(400);
    let sup = Supervisor::builder().shutdown_grace(grace).build().unwrap();
    let (mut d, id) = one_service(&ctx, role::STUBBORN, sup, |b| b);
    let _client = std::net::TcpStream::connect(tcp_addr(&d.sup, id)).expect("connect");
    let pid = d.until_event("the spawn", 0, |e| match e {
        Event::Spawned { pid, .. } => Some(*pid),
        _ => None,
    });
    let began = Instant::now();
    d.sup.shutdown();
    let killed = d.until_event("the kill", 0, |e| match e {
        Event::Killed { pids, .. } => Some(pids.clone()),
        _ => None,
    });
    assert!(began.elapsed() >= grace, "killed {:?} into a {grace:?} grace period", began.elapsed());
    assert_eq!(killed, [pid]);
    let (exit, stopped) = d.until_event("the reap", 0, |e| match e {
        Event::Reaped { exit, stopped, .. } => Some((*exit, *stopped)),
        _ => None,
    });
    assert_eq!((exit, stopped), (Exit::Signal(9), Some(StopReason::Shutdown)));
    d.until("the shutdown to complete", |d| d.sup.is_done());
    assert!(matches!(d.events.last().map(|(_, e)| e), Some(Event::ShutdownComplete)));
}

#[test]
fn forced_polling_reaps_children_without_pidfds() {
    let ctx = Ctx::new(module_path!(), "forced_polling_reaps_children_without_pidfds");
    play_role(&ctx);
    let sup = Supervisor::builder().child_exits(ChildExits::Poll(Duration::from_millis(20))).build().unwrap();
    let (mut d, id) = one_service(&ctx, role::ECHO, sup, |b| b);
    let addr = tcp_addr(&d.sup, id);
    let mut client = Client::connect(addr);
    let (pid, watch) = d.until_event("the spawn", 0, |e| match e {
        Event::Spawned { pid, watch, .. } => Some((*pid, *watch)),
        _ => None,
    });
    assert_eq!(watch, ExitWatch::Poll);
    client.echo("polled");
    assert!(d.sup.snapshot(id).unwrap().children.iter().all(|c| c.watch == ExitWatch::Poll));
    assert!(d.sup.next_deadline().is_some(), "polling needs a deadline");
    // A reload retires the child: it exits after its client, and is found
    // by the poll.
    d.sup.reload();
    drop(client);
    let exit = d.until_event("the reap by polling", 0, |e| match e {
        Event::Reaped { pid: p, exit, .. } if *p == pid => Some(*exit),
        _ => None,
    });
    assert_eq!(exit, Exit::Code(0));
    d.shutdown();
}

#[test]
fn an_outside_loop_needs_only_the_descriptor_and_the_deadline() {
    let ctx = Ctx::new(module_path!(), "an_outside_loop_needs_only_the_descriptor_and_the_deadline");
    play_role(&ctx);
    let (Driven { mut sup, .. }, id) = one_service(&ctx, role::ECHO, Supervisor::new().unwrap(), |b| b);
    let addr = tcp_addr(&sup, id);
    let client = std::thread::spawn(move || Client::connect(addr).echo("from outside"));
    // The application's own loop: poll(2) on the supervisor's descriptor
    // until its deadline, then poll_once without waiting. No poll_once
    // comes first: the descriptor alone must say that there is work.
    let deadline = Instant::now() + WAIT;
    let mut outcomes = Vec::new();
    while !outcomes.contains(&Outcome::Avail) {
        let now = Instant::now();
        assert!(now < deadline, "{WAIT:?} without the child's AVAIL; outcomes {outcomes:?}");
        let until = sup.next_deadline().map_or(deadline, |d| d.min(deadline));
        let mut fds = [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(&sup), nix::poll::PollFlags::POLLIN)];
        let _ = nix::poll::poll(&mut fds, master_proto_conformance::harness::poll_timeout(until - now));
        sup.poll_once(Some(Duration::ZERO), |e| {
            if let Event::Status { outcome, .. } = e {
                outcomes.push(outcome);
            }
        })
        .expect("poll_once");
    }
    client.join().expect("the client");
    assert_eq!(outcomes, [Outcome::Taken, Outcome::Avail]);
}

#[test]
fn sockets_are_bound_from_addresses_or_taken_from_the_caller_and_a_bound_unix_path_is_removed() {
    let dir = master_proto_conformance::harness::TempDir::new("supervisor-listen");
    let path = dir.path().join("echo.sock");
    let caller = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let caller_addr = caller.local_addr().unwrap();
    let service = Service::builder("sockets")
        .listen(caller)
        .listen_unix(&path)
        .listen_tcp(([127, 0, 0, 1], 0))
        .command(|_| std::process::Command::new("/bin/false"))
        .build()
        .expect("build");
    let addrs = service.listen_addrs();
    assert_eq!(addrs[0], master_proto_supervisor::ListenAddr::Tcp(caller_addr));
    assert_eq!(addrs[1], master_proto_supervisor::ListenAddr::Unix(path.clone()));
    assert!(matches!(addrs[2], master_proto_supervisor::ListenAddr::Tcp(a) if a.port() != 0));
    assert!(path.exists());
    let mut sup = Supervisor::new().unwrap();
    let id = sup.add(service).unwrap();
    assert_eq!(sup.listen_addrs(id).unwrap(), addrs);
    drop(sup);
    assert!(!path.exists(), "the socket file this crate made is removed with the service");

    // Building refuses what cannot work, saying why.
    let e = Service::builder("x").build().expect_err("no command");
    assert!(matches!(e, master_proto_supervisor::BuildError::NoCommand), "{e}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let e = Service::builder("x")
        .listen_tcp(taken.local_addr().unwrap())
        .command(|_| std::process::Command::new("/bin/false"))
        .build()
        .expect_err("address in use");
    assert!(e.to_string().contains("cannot listen on 127.0.0.1:"), "{e}");
    let e = Service::builder("x")
        .transport(Memfd)
        .postfix_daemon(master_proto_supervisor::PostfixDaemon::new(
            "/bin/false",
            "x",
            master_proto_supervisor::ServiceType::Unix,
        ))
        .build()
        .expect_err("a Postfix daemon on memfd");
    assert!(matches!(e, master_proto_supervisor::BuildError::NotPostfixWire { transport: "memfd" }), "{e}");
}

#[test]
fn a_flooding_child_gets_a_bounded_share_of_each_wake_up() {
    let ctx = Ctx::new(module_path!(), "a_flooding_child_gets_a_bounded_share_of_each_wake_up");
    play_role(&ctx);
    // A pipe holds 5,461 records (64 KiB): a flooder fills it while the
    // supervisor is not looking, and blocks. One turn of the loop then
    // hands over at most 1,024 of them (the rest wait for the next turns),
    // where a channel read until empty would take them all, and more as
    // the flooder refills it: a flood on a shared channel never keeps the
    // supervisor from its other work.
    let transport = AnyTransport::from(master_proto_transports::flavours::Pipe);
    let (mut d, id) = one_service(&ctx, role::FLOOD, Supervisor::new().unwrap(), |b| b.transport(transport));
    let _client = std::net::TcpStream::connect(tcp_addr(&d.sup, id)).expect("connect");
    let pid = d.until_event("the flooder's spawn", 0, |e| match e {
        Event::Spawned { pid, .. } => Some(*pid),
        _ => None,
    });
    let statuses = |d: &Driven| d.events.iter().filter(|(_, e)| matches!(e, Event::Status { .. })).count();
    let mut turns = Vec::new();
    for _ in 0..3 {
        let full = master_proto_conformance::harness::poll_until(Instant::now() + WAIT, || {
            master_proto_conformance::harness::thread_blocked_writing(pid, 5).is_some()
        });
        assert!(full, "the flooder never filled its channel");
        let before = statuses(&d);
        d.turn();
        turns.push(statuses(&d) - before);
    }
    assert!(turns.iter().all(|&n| n > 0 && n <= 1024), "updates handed over per turn: {turns:?}");
    d.shutdown();
}
