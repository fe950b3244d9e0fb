//! The tokio driver: two services driven by `tokio::drive` on a current-thread runtime, reload and shutdown through the `Handle`, and tokio's own child processes (and the application's) keeping their exit statuses beside it.
//!
//! The services run on `duplex` and `pipe`. The edge-triggered fix for the
//! `seqpacket` and `memfd` transports is being made on another branch;
//! once it is on main, this test should run those two as well.

mod common;

use std::process::Command;

use common::{Client, Ctx, play_role, role, tcp_addr};
use master_proto::master::{Exit, Outcome};
use master_proto_supervisor::{Event, Service, Supervisor};
use master_proto_transports::flavours::{Duplex, Pipe};

#[test]
fn the_tokio_driver_serves_reloads_and_shuts_down_beside_tokios_own_children() {
    let ctx = Ctx::new(module_path!(), "the_tokio_driver_serves_reloads_and_shuts_down_beside_tokios_own_children");
    play_role(&ctx);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut sup = Supervisor::new().expect("supervisor");
        let command = |ctx: &Ctx| {
            let ctx = ctx.clone();
            move |_: &master_proto_supervisor::Spawning<'_>| ctx.command(role::ECHO)
        };
        let a = sup
            .add(
                Service::builder("duplex")
                    .transport(Duplex)
                    .listen_tcp(([127, 0, 0, 1], 0))
                    .command(command(&ctx))
                    .build()
                    .unwrap(),
            )
            .unwrap();
        let b = sup
            .add(
                Service::builder("pipe")
                    .transport(Pipe)
                    .listen_tcp(([127, 0, 0, 1], 0))
                    .command(command(&ctx))
                    .build()
                    .unwrap(),
            )
            .unwrap();
        let addrs = [tcp_addr(&sup, a), tcp_addr(&sup, b)];
        let handle = sup.handle();
        let mut events = Vec::new();

        // The application's own children: one by tokio, one by std.
        let mut by_tokio = tokio::process::Command::new("/bin/sh").args(["-c", "exit 43"]).spawn().expect("sh");
        let mut by_std = Command::new("/bin/sh").args(["-c", "exit 44"]).spawn().expect("sh");

        let driver = master_proto_supervisor::tokio::drive(&mut sup, |e| events.push(e));
        let script = async {
            // Clients in blocking threads: each echo needs a child the
            // driver spawned on demand.
            let echo_both = |text: &'static str| {
                tokio::task::spawn_blocking(move || {
                    for addr in addrs {
                        let mut client = Client::connect(addr);
                        client.echo(text);
                    }
                })
            };
            echo_both("before the reload").await.expect("clients");
            assert_eq!(by_tokio.wait().await.expect("tokio reaps its child").code(), Some(43));
            handle.reload();
            echo_both("after the reload").await.expect("clients");
            handle.shutdown();
        };
        let (driven, ()) = tokio::join!(driver, script);
        driven.expect("the driver");
        assert_eq!(by_std.wait().expect("std reaps its child").code(), Some(44));
        drop(sup);

        let lines: Vec<String> = events.iter().map(ToString::to_string).collect();
        for id in [a, b] {
            let of = |f: &dyn Fn(&Event) -> bool| events.iter().filter(|e| e.service() == Some(id) && f(e)).count();
            assert_eq!(of(&|e| matches!(e, Event::Reloaded { .. })), 1, "{lines:#?}");
            assert_eq!(of(&|e| matches!(e, Event::Status { outcome: Outcome::Taken, .. })), 2, "{lines:#?}");
            let spawned = of(&|e| matches!(e, Event::Spawned { .. }));
            assert_eq!(spawned, 2, "one child before the reload, one after: {lines:#?}");
            assert_eq!(of(&|e| matches!(e, Event::Reaped { exit: Exit::Code(0), .. })), spawned, "{lines:#?}");
        }
        assert!(matches!(events.last(), Some(Event::ShutdownComplete)), "{lines:#?}");
    });
}
