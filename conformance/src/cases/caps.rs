//! The declared capabilities, checked for honesty.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use master_proto::env::TRANSPORT_VAR;
use master_proto::master::{Master, Outcome};
use master_proto::{ChildEnd, Framing, Identity, Malformed, Received, Status, StatusSink, StatusUpdate};

use super::delivery::{back_pressure, pressure_role};
use super::{Share, expected_sender, open_config};
use crate::harness::{
    Bound, Ctx, Script, Spawn, Tracker, WAIT, await_poke, child_env, child_sink, drain, fail, receive, wait_readable,
};
use crate::hostile::Hostile;

/// Checks each declared capability against what the transport does:
///
/// - identity: every update's sender is what [`Identity`] promises; a
///   record forged (through [`Hostile::send_record`]) in another live
///   child's name is believed under [`Identity::Claimed`] (Postfix's
///   weakness, asserted so that the declaration stays honest) and is
///   `ForgedPid` under a verified identity;
/// - delivery: 2,000 updates arrive as [`master_proto::Delivery`] says;
/// - framing: 24 raw bytes are two records on a [`Framing::ByteStream`]
///   and one `Oversized(24)` packet under [`Framing::Packet`]; 5 bytes are
///   `Short(5)` on both;
/// - back-pressure: case 4 with one child;
/// - `thread_safe_sink`: the sink is `Sync` exactly when declared so;
/// - `postfix_wire`: a child given nothing but a plain `AF_UNIX`
///   `SOCK_STREAM` socket at fd 5 and no `MASTER_STATUS_TRANSPORT` (as a
///   real Postfix master(8) does) writes exactly the 12-byte records of
///   Postfix's `MASTER_STATUS`.
#[allow(clippy::too_many_lines, reason = "one check per capability, in order")]
pub fn declared_capabilities_are_honest<T: Hostile + Default>(ctx: &Ctx, share: Option<Share<T>>) {
    const HONEST: i32 = 2_000;
    if let Some(role) = ctx.role() {
        match role.as_str() {
            "honest" => {
                let sink = child_sink::<T>();
                for v in Script::sequence(2, HONEST, &[]).values() {
                    sink.notify(Status(v)).unwrap_or_else(|e| fail(format_args!("notify {v}: {e}")));
                }
                // Stay alive (and in the master's table) for the forger.
                let _ = await_poke();
                std::process::exit(0);
            }
            "forger" => {
                let arg = ctx.arg().unwrap_or_default();
                let nums: Vec<u32> = arg.split(':').filter_map(|n| n.parse().ok()).collect();
                let [victim, victim_gen] = nums[..] else { fail(format_args!("bad arg {arg:?}")) };
                let mut env = child_env();
                let me = env.pid;
                let mut raw = T::default().raw(&mut env).unwrap_or_else(|e| fail(format_args!("raw: {e}")));
                let forged = StatusUpdate {
                    pid: i32::try_from(victim).unwrap_or(0),
                    generation: victim_gen,
                    status: Status::TAKEN,
                };
                T::send_record(&mut raw, &forged).unwrap_or_else(|e| fail(format_args!("forging: {e}")));
                let twice =
                    StatusUpdate { pid: me, generation: env.generation, status: Status::AVAIL }.encode().repeat(2);
                // Only where raw writes are framed: the master checks
                // these two pieces (and pokes for them) only then.
                let pieces: &[&[u8]] = if T::RAW_FRAMING.is_some() { &[&twice[..], &[0xA5; 5][..]] } else { &[] };
                for &piece in pieces {
                    if !await_poke() {
                        fail("no poke");
                    }
                    T::send_raw(&mut raw, piece).unwrap_or_else(|e| fail(format_args!("raw write: {e}")));
                }
                std::process::exit(0);
            }
            "wire" => {
                let sink = child_sink::<T>();
                for s in [Status::TAKEN, Status::AVAIL] {
                    sink.notify(s).unwrap_or_else(|e| fail(format_args!("notify: {e}")));
                }
                std::process::exit(0);
            }
            _ => pressure_role::<T>(ctx, &role),
        }
    }
    let t = T::default();
    let caps = t.caps();

    // thread_safe_sink: the type system agrees with the declaration.
    assert_eq!(
        caps.thread_safe_sink,
        share.is_some(),
        "thread_safe_sink is declared but the sink's Sync says otherwise"
    );
    if let Some(framing) = T::RAW_FRAMING {
        assert_eq!(framing, caps.framing, "the hostile hook's framing differs from the declared one");
    }

    // Identity and delivery.
    let mut source = t.open().expect("open a channel");
    let mut master = Master::new(open_config());
    let generation = master.begin_spawn(Instant::now()).expect("begin a spawn");
    let mut honest = Spawn::new(ctx, "honest", generation).stdin().spawn(&t, &mut source);
    let victim = honest.pid();
    t.register_child(&mut source, generation, victim).unwrap_or_else(|e| fail(format_args!("register_child: {e}")));
    master.spawned(victim, generation).expect("register");
    let mut tracker = Tracker::new(caps.delivery);
    tracker.add(victim, generation, Script::sequence(2, HONEST, &[]));
    let bound = Bound::new(WAIT, WAIT);
    loop {
        drain(&mut source, |item| {
            let Received::Update { update, sender } = item else { panic!("malformed input {item:?}") };
            assert_eq!(sender, expected_sender(caps.identity, victim), "declared identity {:?}", caps.identity);
            tracker.take(&update).unwrap_or_else(|e| panic!("declared delivery {:?}: {e}", caps.delivery));
            master.receive(&item);
        });
        if tracker.all_complete() {
            break;
        }
        bound.wait(&source, || format!("the honest child's updates ({})", tracker.incomplete()));
    }

    // A forgery in the honest child's name, while it is alive.
    let forger_gen = master.begin_spawn(Instant::now()).expect("begin a spawn");
    let mut forger =
        Spawn::new(ctx, "forger", forger_gen).stdin().arg(format!("{victim}:{generation}")).spawn(&t, &mut source);
    t.register_child(&mut source, forger_gen, forger.pid())
        .unwrap_or_else(|e| fail(format_args!("register_child: {e}")));
    master.spawned(forger.pid(), forger_gen).expect("register");
    let got = receive(&mut source, 1, "the forged record");
    let forged = StatusUpdate { pid: victim, generation, status: Status::TAKEN };
    let sender = expected_sender(caps.identity, forger.pid());
    assert_eq!(got, vec![Received::Update { update: forged, sender }], "declared identity {:?}", caps.identity);
    let outcome = master.receive(&got[0]);
    match caps.identity {
        Identity::Claimed => assert_eq!(outcome, Outcome::Taken, "a claimed pid is believed, as in Postfix"),
        Identity::KernelPid | Identity::Channel => {
            assert_eq!(outcome, Outcome::ForgedPid { claimed: victim, verified: forger.pid() });
        }
    }

    // Framing, when the transport promises how raw writes are framed.
    if let Some(framing) = T::RAW_FRAMING {
        let mine = Received::Update {
            update: StatusUpdate { pid: forger.pid(), generation: forger_gen, status: Status::AVAIL },
            sender,
        };
        forger.poke();
        let want = match framing {
            Framing::ByteStream => vec![mine, mine],
            Framing::Packet => vec![Received::Malformed(Malformed::Oversized(24))],
        };
        assert_eq!(receive(&mut source, want.len(), "24 raw bytes"), want, "declared framing {framing:?}");
        forger.poke();
        let want = vec![Received::Malformed(Malformed::Short(5))];
        assert_eq!(receive(&mut source, 1, "5 raw bytes"), want, "declared framing {framing:?}");
    }
    forger.expect_success("the forger");
    honest.close_stdin();
    honest.expect_success("the honest child");
    drop(source);

    // Back-pressure: case 4 with one child.
    back_pressure::<T>(ctx, 1, 30_000);

    // Postfix wire compatibility.
    if caps.postfix_wire {
        let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
        let end = ChildEnd { transport: t.name(), status: OwnedFd::from(theirs), aux: Vec::new() };
        let (mut kid, _) = Spawn::new(ctx, "wire", 0o17).spawn_with(end, |cmd| {
            // A real Postfix master names no transport.
            cmd.env_remove(TRANSPORT_VAR);
        });
        let mut bytes = Vec::new();
        let deadline = Instant::now() + WAIT;
        while bytes.len() < 24 {
            assert!(
                wait_readable(std::os::fd::AsFd::as_fd(&ours), deadline),
                "waited {WAIT:?} for 24 bytes on a plain Postfix channel, got {bytes:?}"
            );
            let mut buf = [0u8; 64];
            let n = ours.read(&mut buf).expect("read the Postfix channel");
            assert!(n > 0, "EOF after {bytes:?}");
            bytes.extend_from_slice(&buf[..n]);
        }
        let pid = kid.pid();
        let want: Vec<u8> = [Status::TAKEN, Status::AVAIL]
            .into_iter()
            .flat_map(|status| StatusUpdate { pid, generation: 0o17, status }.encode())
            .collect();
        assert_eq!(bytes, want, "postfix_wire: Postfix's MASTER_STATUS records, byte for byte");
        kid.expect_success("a child on a plain Postfix channel");
    }
}
