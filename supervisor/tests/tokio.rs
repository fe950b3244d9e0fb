//! The tokio driver: services driven by `tokio::drive` on a current-thread runtime, reload and shutdown through the `Handle`, and tokio's own child processes (and the application's) keeping their exit statuses beside it.
//!
//! One service per transport built here (the facade's list): tokio waits
//! edge-triggered, so every transport's source must be edge-safe (contract
//! item 7).

mod common;

use std::process::Command;

use common::{Client, Ctx, play_role, role, tcp_addr};
use master_proto::Delivery;
use master_proto::master::{Exit, Outcome};
use master_proto_supervisor::{Event, Service, Supervisor};
use master_proto_transports::AnyTransport;

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
        let ids: Vec<_> = AnyTransport::all()
            .map(|t| {
                let service =
                    Service::builder(t.name()).transport(t).listen_tcp(([127, 0, 0, 1], 0)).command(command(&ctx));
                (sup.add(service.build().unwrap()).unwrap(), t.caps().delivery == Delivery::LatestState)
            })
            .collect();
        let addrs: Vec<_> = ids.iter().map(|&(id, _)| tcp_addr(&sup, id)).collect();
        let handle = sup.handle();
        let mut events = Vec::new();

        // The application's own children: one by tokio, one by std.
        let mut by_tokio = tokio::process::Command::new("/bin/sh").args(["-c", "exit 43"]).spawn().expect("sh");
        let mut by_std = Command::new("/bin/sh").args(["-c", "exit 44"]).spawn().expect("sh");

        // A reload through the Handle takes effect when the driver next
        // runs: until then the old children still accept. The script waits
        // for every service's Reloaded before its next clients.
        let reloaded = tokio::sync::Notify::new();
        let reloads = std::cell::Cell::new(0);
        let driver = master_proto_supervisor::tokio::drive(&mut sup, |e| {
            if matches!(e, Event::Reloaded { .. }) {
                reloads.set(reloads.get() + 1);
                reloaded.notify_one();
            }
            events.push(e);
        });
        let script = async {
            // Clients in blocking threads: each echo needs a child the
            // driver spawned on demand.
            let echo_all = |text: &'static str| {
                let addrs = addrs.clone();
                tokio::task::spawn_blocking(move || {
                    for addr in addrs {
                        let mut client = Client::connect(addr);
                        client.echo(text);
                    }
                })
            };
            echo_all("before the reload").await.expect("clients");
            assert_eq!(by_tokio.wait().await.expect("tokio reaps its child").code(), Some(43));
            handle.reload();
            let all_reloaded = async {
                while reloads.get() < ids.len() {
                    reloaded.notified().await;
                }
            };
            tokio::time::timeout(common::WAIT, all_reloaded).await.expect("every service reloaded");
            echo_all("after the reload").await.expect("clients");
            handle.shutdown();
        };
        let (driven, ()) = tokio::join!(driver, script);
        driven.expect("the driver");
        assert_eq!(by_std.wait().expect("std reaps its child").code(), Some(44));
        drop(sup);

        let lines: Vec<String> = events.iter().map(ToString::to_string).collect();
        for &(id, latest_state) in &ids {
            let of = |f: &dyn Fn(&Event) -> bool| events.iter().filter(|e| e.service() == Some(id) && f(e)).count();
            assert_eq!(of(&|e| matches!(e, Event::Reloaded { .. })), 1, "{lines:#?}");
            let taken = of(&|e| matches!(e, Event::Status { outcome: Outcome::Taken, .. }));
            if latest_state {
                // A child's TAKEN may be overwritten by its AVAIL before
                // the master looks.
                assert!(taken <= 2, "{lines:#?}");
            } else {
                assert_eq!(taken, 2, "{lines:#?}");
            }
            let spawned = of(&|e| matches!(e, Event::Spawned { .. }));
            assert_eq!(spawned, 2, "one child before the reload, one after: {lines:#?}");
            assert_eq!(of(&|e| matches!(e, Event::Reaped { exit: Exit::Code(0), .. })), spawned, "{lines:#?}");
        }
        assert!(matches!(events.last(), Some(Event::ShutdownComplete)), "{lines:#?}");
    });
}
