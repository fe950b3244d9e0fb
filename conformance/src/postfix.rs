//! A private Postfix configuration for the tests that run real Postfix
//! programs (`transport-pipe`'s `real_postfix*`, `xtask`'s
//! `demo_real_postfix`): the checks before running Postfix, and a directory
//! laid out as an installation.
//!
//! Postfix needs root, its programs, the user `postfix`, a `main.cf`, a
//! queue directory with `pid/`, `public/` and `private/` (the latter two
//! owned by `postfix`) and a data directory owned by `postfix`. Everything
//! here lives in a fresh temporary directory, so that neither `/etc/postfix`
//! nor `/var/spool/postfix` is touched and a system Postfix, if any, is not
//! disturbed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::harness::TempDir;

/// Fails at once, saying what to do (`how_to_run`), unless this process is
/// root and every one of `programs` exists; returns the uid of user
/// `postfix`.
///
/// # Panics
///
/// If any of that is missing, saying what and `how_to_run`.
pub fn preflight(programs: &[&str], how_to_run: &str) -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no effective uid in /proc/self/status: {status}"));
    assert_eq!(euid, "0", "not running as root (effective uid {euid}): {how_to_run}");
    for program in programs {
        assert!(Path::new(program).is_file(), "{program} is missing: {how_to_run}");
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("reading /etc/passwd");
    passwd
        .lines()
        .find_map(|l| l.strip_prefix("postfix:"))
        .and_then(|rest| rest.split(':').nth(1))
        .and_then(|uid| uid.parse().ok())
        .unwrap_or_else(|| panic!("there is no user postfix in /etc/passwd: {how_to_run}"))
}

/// Lays out a private Postfix installation in a new temporary directory
/// named after `name`: `conf/main.cf` (the base settings, with
/// `daemon_directory` and then `main_cf_extra`, in both of which `{dir}`
/// stands for the directory), `conf/master.cf` if given,
/// `queue/{pid,public,private}` and `data/`.
///
/// # Panics
///
/// If the directory cannot be laid out, or its path cannot be written into
/// `main.cf` (white space or a comma in it).
pub fn private_instance(
    name: &str,
    postfix_uid: u32,
    daemon_directory: &str,
    main_cf_extra: &str,
    master_cf: Option<&str>,
) -> TempDir {
    let dir = TempDir::new(name);
    let d = dir.path();
    // Reachable to the users Postfix switches to (mail_owner, a command's
    // user), as an installation's directories are, whatever the umask.
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod 755 the instance dir");
    let shown = d.to_str().filter(|s| !s.contains(char::is_whitespace) && !s.contains(','));
    let Some(shown) = shown else {
        panic!("the temp dir {} cannot be written into main.cf: set TMPDIR to a plain path", d.display())
    };
    for sub in ["conf", "queue", "queue/pid", "queue/public", "queue/private", "data"] {
        std::fs::create_dir(d.join(sub)).unwrap_or_else(|e| panic!("creating {sub}: {e}"));
    }
    for sub in ["queue/public", "queue/private", "data"] {
        std::os::unix::fs::chown(d.join(sub), Some(postfix_uid), None)
            .unwrap_or_else(|e| panic!("chown postfix {sub}: {e}"));
    }
    let main_cf = format!(
        "compatibility_level = 3.6\n\
         queue_directory = {shown}/queue\n\
         data_directory = {shown}/data\n\
         daemon_directory = {daemon_directory}\n\
         command_directory = /usr/sbin\n\
         mail_owner = postfix\n\
         inet_interfaces = loopback-only\n\
         inet_protocols = ipv4\n\
         {main_cf_extra}",
        daemon_directory = daemon_directory.replace("{dir}", shown),
        main_cf_extra = main_cf_extra.replace("{dir}", shown),
    );
    let files = [("main.cf", Some(main_cf.as_str())), ("master.cf", master_cf)];
    for (name, text) in files.into_iter().filter_map(|(name, text)| Some((name, text?))) {
        let path = d.join("conf").join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {name}: {e}"));
        // Postfix loads no file modified within the last second, in case
        // an editor is still writing it: it dozes 300 ms at a time until
        // the file is old enough, some 2 s for a new main.cf. Backdate the
        // files so that Postfix starts at once.
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(an_hour_ago))
            .unwrap_or_else(|e| panic!("backdating {name}: {e}"));
    }
    dir
}
