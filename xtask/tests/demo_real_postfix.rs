//! A real Postfix daemon, spawn(8), run by `xtask demo --service` as master(8) would run it: on demand, TAKEN and AVAIL for every client, retired by a reload, reaped.
//!
//! Built only with the `real-postfix` feature: it needs root, the user
//! `postfix` and Debian's `postfix` package (`/usr/lib/postfix/sbin/spawn`),
//! and fails at once, saying so, without them. Run it with
//!
//! ```text
//! cargo test -p xtask --features real-postfix --test demo_real_postfix
//! ```
//!
//! The demo runs `spawn -n echo.sock -t unix -V user=nobody argv=/bin/cat`
//! (the master.cf line `echo.sock unix - n n - - spawn user=nobody
//! argv=/bin/cat`): a single_server that runs `/bin/cat` on each client's
//! connection. As a Postfix daemon started by hand, it runs in the queue
//! directory of a private configuration (`MAIL_CONFIG`) in a temporary
//! directory; the demo gives it the status channel at fd 5, the listening
//! socket at fd 6, `GENERATION` and the flow pipe at fds 3 and 4, as
//! master(8) does. The demo's load generator then checks every echo.

mod common;

use common::{Demo, num, summary, tally};
use master_proto_conformance::postfix;

const SPAWN: &str = "/usr/lib/postfix/sbin/spawn";

const HOW_TO_RUN: &str = "this test needs root, the user postfix and Debian's postfix package \
     (cargo test -p xtask --features real-postfix --test demo_real_postfix, as root)";

#[test]
fn postfix_spawn_runs_under_the_demo() {
    let postfix_uid = postfix::preflight(&[SPAWN], HOW_TO_RUN);
    let instance = postfix::private_instance("xtask-demo-postfix", postfix_uid, "/usr/lib/postfix/sbin", "", Some(""));
    let d = instance.path();
    let socket = d.join("echo.sock");
    let listen = format!("unix:{}", socket.display());
    let args = [
        "--listen",
        &listen,
        "--clients",
        "3",
        "--max-children",
        "3",
        "--duration",
        "3",
        "--reload-after",
        "1.5",
        "--hold",
        "0.02",
        "--service",
        SPAWN,
        "-V",
        "user=nobody",
        "argv=/bin/cat",
    ];
    let demo = Demo::start_with(&args, |cmd| {
        cmd.current_dir(d.join("queue")).env("MAIL_CONFIG", d.join("conf"));
    });
    let (status, lines, stderr) = demo.finish();
    assert!(status.success(), "{status}: {stderr}");
    let t = tally(&lines, 3);
    let s = summary(&lines);
    assert!(num(&s, "connections") > 0, "{lines:#?}\n{stderr}");
    assert_eq!(num(&s, "failed-connections"), 0, "every client got its echo from spawn(8)'s /bin/cat: {stderr}");
    assert!(num(&s, "taken") > 0 && num(&s, "avail") > 0, "spawn(8) sends TAKEN and AVAIL: {lines:#?}");
    // A retired child may take a client before it sees the channel closed;
    // its TAKEN then goes nowhere.
    assert!(num(&s, "taken") <= num(&s, "connections"), "one TAKEN per client at most");
    assert_eq!(t.reloads.len(), 1);
    assert!(!t.reloads[0].1.is_empty(), "the reload retired spawn processes");
    assert!(!t.gens_after_reload.is_empty(), "new spawn processes after the reload");
    assert_eq!(t.spawned, t.reaped, "every spawn process exited (status 0, checked per line) and was reaped");
    assert_eq!(s["children-left"], "0");
}
