//! The `roundtable` binary as an operator uses it: provision an account,
//! start the directory, talk to it, stop it with Ctrl-C.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{logged_addr, watch_output};

const BIN: &str = env!("CARGO_BIN_EXE_roundtable");

fn add_user(db: &std::path::Path, name: &str, password: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["directory", "add-user", name, "--password-stdin", "--db"])
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Starts `roundtable directory` on port 0 and returns it with the address
/// it logged.
fn start_directory(db: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["directory", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = watch_output(child.stderr.take().unwrap(), logged_addr);
    (child, addr)
}

fn exchange(s: &mut TcpStream, send: &str, expect: &str) {
    s.write_all(send.as_bytes()).unwrap();
    let mut got = vec![0u8; expect.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), expect);
}

#[test]
fn add_user_then_log_in_then_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dir.db");
    let out = add_user(&db, "corrado", "mypass");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "created account corrado\n"
    );
    let out = add_user(&db, "corrado", "mypass");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "updated account corrado\n"
    );
    // A name that cannot appear in QUERY results is refused.
    let out = add_user(&db, "bad,name", "x");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid user name"));

    let (mut server, addr) = start_directory(&db);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    exchange(
        &mut s,
        "USER 0 corrado\n",
        "ACK 35\nhi corrado, authentication required",
    );
    exchange(
        &mut s,
        "PASS 0 mypass\n",
        "ACK 26\nsuccessfully authenticated",
    );
    exchange(&mut s, "QUERY 0\n", "RESULT 0\n");

    // Ctrl-C: the open session is told, and the process exits cleanly.
    let status = Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    exchange(&mut s, "", "ERR 20\nserver shutting down");
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(code) = server.try_wait().unwrap() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "directory did not exit on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "exit status {code}");
}

#[test]
fn list_and_remove_users() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dir.db");
    add_user(&db, "bob", "b");
    add_user(&db, "alice", "a");
    let list = Command::new(BIN)
        .args(["directory", "list-users", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout), "alice\nbob\n");
    let rm = Command::new(BIN)
        .args(["directory", "remove-user", "bob", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(rm.status.success());
    let rm = Command::new(BIN)
        .args(["directory", "remove-user", "bob", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!rm.status.success());
    assert!(String::from_utf8_lossy(&rm.stderr).contains("no account named bob"));
}
