//! `peerd serve` configuration through the real binary: the `--config` file under `PEERD_*`
//! variables under flags (seen in `--print-config` and in what the server does), refusals
//! naming the key (a typo in a key, values that cannot work), `--print-config` fed back as
//! `--config`, the example in deploy/, and systemd readiness notification.
//!
//! Every child runs under a deadline (a watchdog SIGKILLs it). Servers do not pin: tests
//! run in parallel.

use std::collections::BTreeMap;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;
use common::{peerd, run, Output, Served};

/// Longest any child may run.
const LIMIT: Duration = Duration::from_secs(20);

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("config-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Write `text` as `dir/name` and return its path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The repository root (tests run in cli/).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `peerd serve <args>` run to completion.
fn serve(mut c: Command, args: &[&str]) -> Output {
    c.arg("serve").args(args);
    run(c, LIMIT, "peerd serve")
}

/// `--print-config` output: key -> (value as written, source comment).
fn printed(out: &Output) -> BTreeMap<String, (String, String)> {
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let mut keys = BTreeMap::new();
    let mut section = String::new();
    for line in out.stdout.lines() {
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((kv, source)) = line.rsplit_once("  # ") {
            let (name, value) = match kv.strip_prefix("# ") {
                Some(unset) => (unset.strip_suffix(": not set").unwrap(), "(not set)"),
                None => kv.split_once(" = ").unwrap(),
            };
            keys.insert(
                format!("{section}.{name}"),
                (value.to_string(), source.to_string()),
            );
        }
    }
    keys
}

/// A `peerd serve` that has printed its ready line.
struct Server(Served);

impl Server {
    fn start(mut cmd: Command, args: &[&str]) -> Server {
        cmd.arg("serve").args(args);
        Server(Served::one_line(cmd, LIMIT))
    }

    /// The ready line `peerd listening on ADDR shards=N pid=PID`.
    fn ready(&self) -> &str {
        &self.0.lines[0]
    }

    /// The address of the ready line.
    fn addr(&self) -> &str {
        self.0.endpoint()
    }

    fn shards(&self) -> &str {
        self.0.lines[0].split(' ').nth(4).expect("ready line")
    }

    /// SIGTERM; the exit status must be 0. Returns stderr.
    fn terminate(mut self) -> String {
        let (status, stderr) = self.0.terminate(LIMIT);
        assert_eq!(status.code(), Some(0), "{stderr}");
        stderr
    }
}

#[test]
fn file_then_environment_then_flag_each_wins_over_the_one_before() {
    let dir = scratch("precedence");
    // Distinct loopback addresses (all of 127/8 is local on Linux) tell the layers apart in
    // the ready line; shards=1 from the file, where the default is one per core.
    let file = write(
        &dir,
        "peerd.toml",
        "[listen]\nendpoints = [\"127.0.0.2:0\"]\n\n\
         [runtime]\nshards = 1\nno_pin = true\n\n\
         [limits]\nmax_frame_len = 2048\n",
    );
    let file = file.to_str().unwrap();

    // The file over the defaults.
    let p = printed(&serve(peerd(), &["--config", file, "--print-config"]));
    assert_eq!(
        p["listen.endpoints"],
        ("[\"127.0.0.2:0\"]".into(), "file".into())
    );
    assert_eq!(p["limits.max_frame_len"], ("2048".into(), "file".into()));
    assert_eq!(
        p["timeouts.heartbeat_ms"],
        ("15000".into(), "default".into())
    );
    let s = Server::start(peerd(), &["--config", file]);
    assert!(s.addr().starts_with("127.0.0.2:"), "{}", s.ready());
    assert_eq!(s.shards(), "shards=1", "{}", s.ready());
    s.terminate();

    // The environment over the file.
    let env = || {
        let mut c = peerd();
        c.env("PEERD_LISTEN", "127.0.0.3:0")
            .env("PEERD_MAX_FRAME_LEN", "4096");
        c
    };
    let p = printed(&serve(env(), &["--config", file, "--print-config"]));
    assert_eq!(
        p["listen.endpoints"],
        ("[\"127.0.0.3:0\"]".into(), "env PEERD_LISTEN".into())
    );
    assert_eq!(
        p["limits.max_frame_len"],
        ("4096".into(), "env PEERD_MAX_FRAME_LEN".into())
    );
    assert_eq!(p["runtime.shards"], ("1".into(), "file".into()));
    let s = Server::start(env(), &["--config", file]);
    assert!(s.addr().starts_with("127.0.0.3:"), "{}", s.ready());
    s.terminate();

    // A flag over the environment (and over a variable the flag would refuse).
    let mut args = vec!["--config", file, "--listen", "127.0.0.4:0"];
    args.extend(["--max-frame-len", "8192"]);
    let mut c = env();
    c.env("PEERD_SHARDS", "0");
    let p = printed(&serve(
        c,
        &[&args[..], &["--print-config", "--shards", "1"]].concat(),
    ));
    assert_eq!(
        p["listen.endpoints"],
        ("[\"127.0.0.4:0\"]".into(), "flag --listen".into())
    );
    assert_eq!(
        p["limits.max_frame_len"],
        ("8192".into(), "flag --max-frame-len".into())
    );
    assert_eq!(p["runtime.shards"], ("1".into(), "flag --shards".into()));
    let s = Server::start(env(), &args);
    assert!(s.addr().starts_with("127.0.0.4:"), "{}", s.ready());
    s.terminate();
}

#[test]
fn a_typo_in_a_key_is_refused_naming_the_key_and_its_line() {
    let dir = scratch("typo");
    for (text, key, line, suggestion) in [
        (
            "[listen]\nendpoints = [\"127.0.0.1:0\"]\n\n[limits]\nmax_frame_lenn = 2048\n",
            "limits.max_frame_lenn",
            5,
            "limits.max_frame_len",
        ),
        // A section name misspelt.
        ("[limitz]\nmax_frame_len = 2048\n", "limitz", 1, "limits"),
        // A key in the wrong section (here: none).
        ("shards = 2\n", "shards", 1, "runtime.shards"),
        // Dotted keys are keys too.
        ("runtime.shard = 2\n", "runtime.shard", 1, "runtime.shards"),
    ] {
        let file = write(&dir, "typo.toml", text);
        let file = file.to_str().unwrap();
        for print in [false, true] {
            let mut args = vec!["--config", file, "--no-pin"];
            if print {
                args.push("--print-config");
            }
            let out = serve(peerd(), &args);
            assert_eq!(out.status.code(), Some(2), "{text:?}: {}", out.stderr);
            assert_eq!(out.stdout, "", "{text:?}: started or printed");
            let want = format!(
                "peerd: config file {file}, line {line}: unknown key `{key}` \
                 (did you mean `{suggestion}`?)\n"
            );
            assert_eq!(out.stderr, want, "{text:?}");
        }
    }
}

#[test]
fn nonsensical_values_are_refused_naming_the_key() {
    let dir = scratch("values");
    // (file, key named, line named (0: no line, the message names the source), words).
    for (text, key, line, says) in [
        (
            "[limits]\nmax_frame_len = 0\n",
            "limits.max_frame_len",
            2,
            "at least 1024",
        ),
        (
            "[limits]\nmax_frame_len = 5000000000\n",
            "limits.max_frame_len",
            2,
            "u32",
        ),
        ("[runtime]\nshards = 0\n", "runtime.shards", 2, "at least 1"),
        (
            "[runtime]\nshards = \"many\"\n",
            "runtime.shards",
            2,
            "string",
        ),
        (
            "[timeouts]\nheartbeat_ms = -5\n",
            "timeouts.heartbeat_ms",
            2,
            "-5",
        ),
        (
            "[limits]\nmemory_budget = 1024\n",
            "limits.memory_budget",
            2,
            "at least 16777216",
        ),
        (
            "\n[listen]\nendpoints = [\"nope\"]\n",
            "listen.endpoints",
            3,
            "host:port",
        ),
        (
            "[listen]\nendpoints = \"127.0.0.1:0\"\n",
            "listen.endpoints",
            2,
            "sequence",
        ),
        ("[runtime]\nno_pin = \"yes\"\n", "runtime.no_pin", 2, "bool"),
        ("limits = 5\n", "limits", 1, "integer"),
        (
            "[listen]\nendpoints = []\n",
            "listen.endpoints",
            0,
            "at least one endpoint",
        ),
        (
            "[tls]\ncert = \"server.pem\"\n",
            "tls.cert",
            0,
            "needs tls.key",
        ),
        (
            "[listen]\nendpoints = [\"tls://127.0.0.1:0\"]\n",
            "listen.endpoints",
            0,
            "needs a certificate",
        ),
        // Only listen() can tell (the cores this process may use); it is named the same.
        (
            "[runtime]\ncores = [4096]\n",
            "runtime.cores",
            0,
            "core 4096 is not available",
        ),
    ] {
        let file = write(&dir, "bad.toml", text);
        let file = file.to_str().unwrap();
        // No --listen: a flag would override the file's endpoints.
        let out = serve(peerd(), &["--config", file]);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {}", out.stderr);
        assert!(!out.stdout.contains("listening"), "{text:?} started");
        let want = if line > 0 {
            format!("peerd: config file {file}, line {line}: {key}: ")
        } else {
            format!("peerd: {key} (file {file}): ")
        };
        assert!(
            out.stderr.starts_with(&want) && out.stderr.contains(says),
            "{text:?}: want {want:?} .. {says:?}, got {:?}",
            out.stderr
        );
    }
    // Where the value came from is named whatever the source.
    let mut c = peerd();
    c.env("PEERD_TLS_KEY", "server.key");
    let out = serve(c, &["--print-config"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "peerd: tls.key (env PEERD_TLS_KEY): needs tls.cert (--tls-cert, PEERD_TLS_CERT) too\n"
    );
    // Not a file at all.
    let out = serve(
        peerd(),
        &["--config", dir.join("absent.toml").to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot read config file"),
        "{}",
        out.stderr
    );
    let file = write(&dir, "broken.toml", "[listen\n");
    let out = serve(peerd(), &["--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("line 1"), "{}", out.stderr);
}

#[test]
fn print_config_fed_back_gives_the_same_configuration_and_binds_nothing() {
    let dir = scratch("round-trip");
    // A port held here: --print-config must not try to bind it.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = held.local_addr().unwrap().to_string();
    let file = write(
        &dir,
        "in.toml",
        "[websocket]\norigins = [\"https://a.example\", \"https://b.example\"]\n\
         [runtime]\ncores = [0]\n",
    );
    let mut c = peerd();
    c.env("PEERD_HEARTBEAT_MS", "2000")
        .env("PEERD_TLS_CERT", "/etc/peerd/cert.pem")
        .env("PEERD_TLS_KEY", "/etc/peerd/key.pem");
    let first = serve(
        c,
        &[
            "--config",
            file.to_str().unwrap(),
            "--print-config",
            "--listen",
            &held,
            "--listen",
            "ws://127.0.0.1:0/peerd",
            "--no-pin",
        ],
    );
    let p = printed(&first);
    assert_eq!(p["tls.cert"].1, "env PEERD_TLS_CERT");
    assert_eq!(p["runtime.no_pin"], ("true".into(), "flag --no-pin".into()));

    let out = write(&dir, "out.toml", &first.stdout);
    let second = serve(
        peerd(),
        &["--config", out.to_str().unwrap(), "--print-config"],
    );
    let parse = |o: &Output| -> toml::Table { toml::from_str(&o.stdout).expect("TOML") };
    assert_eq!(parse(&second), parse(&first), "{}", second.stdout);
    // Now every value is the file's (a setting with no value has none to take from it).
    for (key, (value, source)) in printed(&second) {
        if value != "(not set)" {
            assert_eq!(source, "file", "{key}");
        }
    }
    // And once more: the same bytes but the header's file name.
    let out2 = write(&dir, "out2.toml", &second.stdout);
    let third = serve(
        peerd(),
        &["--config", out2.to_str().unwrap(), "--print-config"],
    );
    assert_eq!(third.stdout.replace("out2.toml", "out.toml"), second.stdout);
}

#[test]
fn the_deploy_example_is_a_valid_config() {
    // What the issue checks, from the repository root.
    let mut c = peerd();
    c.current_dir(repo());
    let out = serve(c, &["--config", "deploy/peerd.toml", "--print-config"]);
    let p = printed(&out);
    // Every key it sets is read from it; those it leaves out are defaults.
    let text = std::fs::read_to_string(repo().join("deploy/peerd.toml")).unwrap();
    let set: toml::Table = toml::from_str(&text).unwrap();
    for (key, (_, source)) in &p {
        let (section, name) = key.split_once('.').unwrap();
        let in_file = set
            .get(section)
            .and_then(|t| t.as_table())
            .is_some_and(|t| t.contains_key(name));
        assert_eq!(source, if in_file { "file" } else { "default" }, "{key}");
    }
    assert_eq!(p["listen.endpoints"].0, "[\"127.0.0.1:7400\"]");
    assert_eq!(p["tls.cert"].0, "(not set)");
    // And the server starts with it (on a free port and unpinned, for a shared machine).
    let mut c = peerd();
    c.current_dir(repo());
    let s = Server::start(
        c,
        &[
            "--config",
            "deploy/peerd.toml",
            "--listen",
            "127.0.0.1:0",
            "--no-pin",
        ],
    );
    assert!(s.addr().starts_with("127.0.0.1:"), "{}", s.ready());
    s.terminate();
}

/// Receive one notification within the limit.
fn notification(sock: &UnixDatagram) -> String {
    sock.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn systemd_is_told_ready_after_the_ready_line_and_stopping_on_sigterm() {
    let dir = scratch("notify");
    // A path socket, and an abstract one (`@name`), as systemd may give either.
    let path = dir.join("notify.sock");
    let abstract_name = format!("peerd-test-notify-{}", std::process::id());
    let sockets = [
        (
            UnixDatagram::bind(&path).unwrap(),
            path.to_str().unwrap().to_string(),
        ),
        (
            UnixDatagram::bind_addr(
                &SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap(),
            )
            .unwrap(),
            format!("@{abstract_name}"),
        ),
    ];
    for (sock, env) in sockets {
        let mut c = peerd();
        c.env("NOTIFY_SOCKET", &env);
        let s = Server::start(c, &["--listen", "127.0.0.1:0", "--no-pin", "--shards", "1"]);
        // The ready line came first; READY=1 follows, naming the bound address.
        let ready = notification(&sock);
        let lines: Vec<&str> = ready.lines().collect();
        assert_eq!(lines[0], "READY=1", "{env}: {ready:?}");
        assert_eq!(
            lines[1],
            format!("STATUS=listening on {}", s.addr()),
            "{env}: {ready:?}"
        );
        s.0.sigterm();
        let stopping = notification(&sock);
        assert!(
            stopping.lines().next() == Some("STOPPING=1"),
            "{env}: {stopping:?}"
        );
        s.terminate();
    }

    // A socket that is not there: the server runs anyway and says so.
    let mut c = peerd();
    c.env("NOTIFY_SOCKET", dir.join("absent.sock"));
    let s = Server::start(c, &["--listen", "127.0.0.1:0", "--no-pin", "--shards", "1"]);
    let stderr = s.terminate();
    assert!(stderr.contains("cannot notify systemd"), "{stderr}");
}
