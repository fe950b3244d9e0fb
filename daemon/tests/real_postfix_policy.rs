//! The `policy` example as the access policy service of a real Postfix smtpd(8), under a real master(8): a blocked sender is refused at RCPT TO, another is accepted.
//!
//! Built only with the `real-postfix` feature: it needs root and Debian's
//! `postfix` package, and fails at once, saying so, without them. Run it
//! (after `cargo build -p master-proto-daemon --examples`) with
//!
//! ```text
//! cargo test -p master-proto-daemon --features real-postfix --test real_postfix_policy
//! ```
//!
//! A private Postfix instance (its own configuration, queue and log in a
//! temporary directory) runs smtpd on a loopback port with
//! `check_policy_service unix:private/policy` in its recipient
//! restrictions, beside the services smtpd needs up to RCPT TO
//! (trivial-rewrite, proxymap, anvil, cleanup), and the example as the
//! `policy` service (`policy unix - n n - - policy blocked@example.com`).
//! The test then holds one SMTP session:
//!
//! 1. `MAIL FROM:<blocked@example.com>`, `RCPT TO`: a 5xx reply (Postfix
//!    turns the policy's `REJECT` into 554 5.7.1) carrying the policy's
//!    text;
//! 2. `RSET`, `MAIL FROM:<someone@example.org>`, `RCPT TO`: 250 (the
//!    policy said `DUNNO`, `permit_mynetworks` allowed it).
//!
//! Then it shows that the master heard the policy child's `TAKEN` and
//! `AVAIL`: a client of the test's own sends the policy service half a
//! request, so the child is busy in its handler (after `TAKEN`), and the
//! master, with no idle policy child left, watches the service's socket
//! again (its epoll set, read from `/proc`); the rest of the request gets
//! its answer, the child sends `AVAIL`, and the master stops watching. The
//! master's log shows the policy child's requests with no warning.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

use common::real::{DAEMONS, Instance, MASTER};
use common::{WAIT, poll_until};

/// What to do without root or without Postfix.
const HOW_TO_RUN: &str = "this test runs a real Postfix master(8) and smtpd(8): it needs Debian's postfix \
     package (`DEBIAN_FRONTEND=noninteractive apt-get install -y postfix`, as .ci/run does) and root \
     (`cargo test -p master-proto-daemon --features real-postfix --test real_postfix_policy` as root)";

/// The Postfix daemons the instance runs beside the example.
const DAEMONS_USED: [&str; 5] = ["smtpd", "trivial-rewrite", "proxymap", "anvil", "cleanup"];

#[test]
fn smtpd_rejects_the_sender_the_policy_example_names() {
    let programs: Vec<String> = DAEMONS_USED.iter().map(|d| format!("{DAEMONS}/{d}")).collect();
    let mut needed: Vec<&str> = programs.iter().map(String::as_str).collect();
    needed.push(MASTER);
    let postfix_uid = common::postfix::preflight(&needed, HOW_TO_RUN);

    // A free loopback port for smtpd (bound and released: the master binds
    // it again at once).
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let master_cf = format!(
        "127.0.0.1:{port} inet n -       n       -       -       smtpd\n\
         policy    unix  -       n       n       -       -       policy -v blocked@example.com\n\
         rewrite   unix  -       -       n       -       -       trivial-rewrite\n\
         proxymap  unix  -       -       n       -       -       proxymap\n\
         anvil     unix  -       -       n       -       1       anvil\n\
         cleanup   unix  n       -       n       -       0       cleanup\n"
    );
    let main_cf = "myhostname = mx.example.test\n\
                   mydomain = example.test\n\
                   mydestination =\n\
                   mynetworks = 127.0.0.0/8\n\
                   smtpd_relay_restrictions = permit_mynetworks, reject\n\
                   smtpd_recipient_restrictions = check_policy_service unix:private/policy, permit_mynetworks, reject\n\
                   local_recipient_maps =\n\
                   smtpd_reject_unlisted_recipient = no\n\
                   smtpd_tls_security_level = none\n\
                   smtpd_helo_required = no\n";
    let service = ("private/policy", "policy");
    let mut pf = Instance::start(
        "real_postfix_policy-test",
        postfix_uid,
        &master_cf,
        main_cf,
        &DAEMONS_USED,
        &["policy"],
        service,
    );

    // cleanup(8) makes a queue file in incoming/ once a recipient is
    // accepted (the session ends before any mail is sent).
    let incoming = pf.dir.path().join("queue/incoming");
    std::fs::create_dir(&incoming).expect("creating queue/incoming");
    std::os::unix::fs::chown(&incoming, Some(postfix_uid), None).expect("chown postfix queue/incoming");

    // The SMTP session.
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut smtp = Smtp::connect(&mut pf, addr);
    smtp.expect(220, "the greeting", &mut pf);
    smtp.command("EHLO client.example.test", 250, &mut pf);
    smtp.command("MAIL FROM:<blocked@example.com>", 250, &mut pf);
    let refused = smtp.command_reply("RCPT TO:<someone@example.net>", &mut pf);
    assert!(
        refused.starts_with('5') && refused.contains("sender blocked@example.com is blocked"),
        "the blocked sender should get a 5xx with the policy's text at RCPT TO, got {refused:?}\n{}",
        pf.diagnostics()
    );
    smtp.command("RSET", 250, &mut pf);
    smtp.command("MAIL FROM:<someone@example.org>", 250, &mut pf);
    smtp.command("RCPT TO:<someone@example.net>", 250, &mut pf);
    smtp.command("QUIT", 221, &mut pf);
    let child = pf.only_child("the policy service served smtpd");

    // TAKEN and AVAIL, as the master sees them.
    pf.await_watching(false, "the policy child's AVAIL after smtpd's requests (it is idle)");
    let mut own = pf.connect("the test's own policy client");
    own.send("request=smtpd_access_policy"); // a line: send() adds the newline
    pf.await_watching(true, "the policy child's TAKEN for half a request (no policy child is idle)");
    own.send("sender=blocked@example.com");
    own.send("");
    own.expect_echo("action=REJECT sender blocked@example.com is blocked");
    own.expect_echo("");
    pf.await_watching(false, "the policy child's AVAIL after answering");
    assert_eq!(pf.only_child("after the test's own request"), child, "the same policy child served everyone");

    // The policy child logged (-v) each request: smtpd's two, ours.
    let served = pf.stderr.read_until(Instant::now() + WAIT, |t| t.matches("policy: client ").count() >= 3);
    assert!(served, "the policy child should log three requests\n{}", pf.diagnostics());
    pf.await_log("postfix/smtpd", "smtpd's lines in the master's log");
    pf.assert_clean_log("after the session");
    let text = pf.stderr.text();
    assert!(
        !text.contains("warning:") && !text.contains("fatal:"),
        "the policy child reports problems\n{}",
        pf.diagnostics()
    );
}

/// An SMTP client session, each reply bounded by `WAIT`.
struct Smtp {
    conn: BufReader<TcpStream>,
}

impl Smtp {
    /// Connects to smtpd at `addr`, waiting for the master to listen.
    fn connect(pf: &mut Instance, addr: SocketAddr) -> Smtp {
        let mut last = None;
        let connected = poll_until(Instant::now() + WAIT, || match TcpStream::connect(addr) {
            Ok(s) => {
                last = Some(Ok(s));
                true
            }
            Err(e) => {
                last = Some(Err(e));
                false
            }
        });
        match last {
            Some(Ok(s)) if connected => {
                s.set_read_timeout(Some(WAIT)).expect("read timeout");
                s.set_write_timeout(Some(WAIT)).expect("write timeout");
                Smtp { conn: BufReader::new(s) }
            }
            other => panic!("smtpd at {addr} did not accept within {WAIT:?}: {other:?}\n{}", pf.diagnostics()),
        }
    }

    /// Reads one reply, all its lines; returns it as text.
    fn reply(&mut self, pf: &mut Instance) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            match self.conn.read_line(&mut line) {
                Ok(n) if n > 0 => {}
                got => panic!("awaiting an SMTP reply (so far {reply:?}): {got:?}\n{}", pf.diagnostics()),
            }
            reply.push_str(&line);
            // "250-..." continues, "250 ..." ends.
            if line.as_bytes().get(3) != Some(&b'-') {
                return reply;
            }
        }
    }

    fn expect(&mut self, code: u16, what: &str, pf: &mut Instance) {
        let reply = self.reply(pf);
        assert!(reply.starts_with(&code.to_string()), "{what}: expected {code}, got {reply:?}\n{}", pf.diagnostics());
    }

    fn command_reply(&mut self, command: &str, pf: &mut Instance) -> String {
        self.conn.get_mut().write_all(format!("{command}\r\n").as_bytes()).expect("sending an SMTP command");
        self.reply(pf)
    }

    fn command(&mut self, command: &str, code: u16, pf: &mut Instance) {
        let reply = self.command_reply(command, pf);
        assert!(
            reply.starts_with(&code.to_string()),
            "{command}: expected {code}, got {reply:?}\n{}",
            pf.diagnostics()
        );
    }
}
