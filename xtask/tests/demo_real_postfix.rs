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

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{Demo, num, summary, tally};

const SPAWN: &str = "/usr/lib/postfix/sbin/spawn";

const HOW_TO_RUN: &str = "this test needs root, the user postfix and Debian's postfix package \
     (cargo test -p xtask --features real-postfix --test demo_real_postfix, as root)";

/// The uid of user `postfix`, after checking that this can run at all.
fn preflight() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no effective uid in /proc/self/status: {status}"));
    assert_eq!(euid, "0", "not running as root (effective uid {euid}): {HOW_TO_RUN}");
    assert!(Path::new(SPAWN).is_file(), "{SPAWN} is missing: {HOW_TO_RUN}");
    let passwd = std::fs::read_to_string("/etc/passwd").expect("reading /etc/passwd");
    passwd
        .lines()
        .find_map(|l| l.strip_prefix("postfix:"))
        .and_then(|rest| rest.split(':').nth(1))
        .and_then(|uid| uid.parse().ok())
        .unwrap_or_else(|| panic!("there is no user postfix in /etc/passwd: {HOW_TO_RUN}"))
}

/// A private Postfix configuration in a temporary directory, removed when
/// dropped: `conf/main.cf`, `queue/{pid,public,private}`, `data/`.
struct Instance(PathBuf);

impl Instance {
    fn new(postfix_uid: u32) -> Instance {
        let d = std::env::temp_dir().join(format!("xtask-demo-postfix-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        let instance = Instance(d.clone());
        // Reachable to the users Postfix switches to, whatever the umask.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod 755");
        for sub in ["conf", "queue", "queue/pid", "queue/public", "queue/private", "data"] {
            std::fs::create_dir(d.join(sub)).unwrap_or_else(|e| panic!("creating {sub}: {e}"));
        }
        for sub in ["queue/public", "queue/private", "data"] {
            std::os::unix::fs::chown(d.join(sub), Some(postfix_uid), None)
                .unwrap_or_else(|e| panic!("chown postfix {sub}: {e}"));
        }
        let shown = d.to_str().filter(|s| !s.contains(char::is_whitespace)).expect("a plain temp dir path");
        let main_cf = format!(
            "compatibility_level = 3.6\nqueue_directory = {shown}/queue\ndata_directory = {shown}/data\n\
             daemon_directory = /usr/lib/postfix/sbin\ncommand_directory = /usr/sbin\nmail_owner = postfix\n\
             inet_interfaces = loopback-only\ninet_protocols = ipv4\n"
        );
        let path = d.join("conf/main.cf");
        std::fs::write(&path, main_cf).expect("writing main.cf");
        std::fs::write(d.join("conf/master.cf"), "").expect("writing master.cf");
        // Postfix ignores a main.cf modified less than a second ago.
        let past = SystemTime::now() - Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(past))
            .expect("backdating main.cf");
        instance
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn postfix_spawn_runs_under_the_demo() {
    let instance = Instance::new(preflight());
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
