//! The client commands as a user types them: `livesync publish`, `livesync tail` (gap-free across
//! a restart of the runner), `livesync connect` (frames in on stdin, out on stdout); and what
//! they say for a bad URL or a runner that is down.

mod common;

use common::{signal, start, wait_for_exit};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn livesync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_livesync")).args(args).output().unwrap()
}

fn said(output: &Output) -> String {
    assert!(!output.status.success(), "it succeeded: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A command's stdout lines, as they come.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

fn next_line(lines: &mpsc::Receiver<String>) -> String {
    lines.recv_timeout(Duration::from_secs(30)).expect("no output")
}

#[test]
fn publish_and_tail_follow_a_room_across_a_restart_of_the_runner() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (runner, url) = start(&["--data-dir", data, "--listen", &listen], &[]);
    let published = String::from_utf8(livesync(&["publish", &url, "lobby", r#"{"n":1}"#]).stdout).unwrap();
    assert!(published.starts_with("lobby seq 1 id "), "{published}");

    let mut tail = Command::new(env!("CARGO_BIN_EXE_livesync"))
        .args(["tail", &url, "lobby", "--since", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut tail);
    let seq = |line: String| serde_json::from_str::<serde_json::Value>(&line).unwrap()["seq"].as_u64().unwrap();
    assert_eq!(seq(next_line(&lines)), 1);
    // An idempotent publish: the same id twice is one event.
    for _ in 0..2 {
        let again =
            String::from_utf8(livesync(&["publish", &url, "lobby", "plain text", "--id", "once"]).stdout).unwrap();
        assert!(again.starts_with("lobby seq 2 id once"), "{again}");
    }
    assert_eq!(seq(next_line(&lines)), 2);

    // The runner restarts; what is published meanwhile reaches the tail, in order, once.
    signal(&runner, "TERM");
    assert!(wait_for_exit(runner).success());
    let (runner, _) = start(&["--data-dir", data, "--listen", &listen], &[]);
    for n in 3..=5 {
        let out = String::from_utf8(livesync(&["publish", &url, "lobby", &n.to_string()]).stdout).unwrap();
        assert!(out.starts_with(&format!("lobby seq {n} ")), "{out}");
    }
    assert_eq!((0..3).map(|_| seq(next_line(&lines))).collect::<Vec<_>>(), [3, 4, 5]);
    tail.kill().unwrap();
    signal(&runner, "TERM");
    assert!(wait_for_exit(runner).success());
}

#[test]
fn connect_sends_each_line_and_prints_each_frame() {
    let dir = tempfile::tempdir().unwrap();
    let (runner, url) = start(&["--data-dir", dir.path().to_str().unwrap()], &[]);
    let mut connect = Command::new(env!("CARGO_BIN_EXE_livesync"))
        .args(["connect", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut connect);
    let mut stdin = connect.stdin.take().unwrap();
    writeln!(stdin, r#"{{"action":"join","room":"r","ref":1}}"#).unwrap();
    writeln!(stdin, "not json").unwrap();
    writeln!(stdin, r#"{{"action":"publish","room":"r","data":"hi","ref":2}}"#).unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.starts_with("< ") && l.contains(r#""type":"event""#)) {
        seen.push(next_line(&lines));
    }
    assert!(seen.iter().any(|l| l.starts_with("> ") && l.contains(r#""action":"join""#)), "{seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("< ") && l.contains(r#""type":"joined""#)), "{seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("< ") && l.contains(r#""type":"ack""#)), "{seen:?}");
    drop(stdin);
    let output = connect.wait_with_output().unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not sent: a frame is a JSON object"), "{stderr}");
    signal(&runner, "TERM");
    assert!(wait_for_exit(runner).success());
}

#[test]
fn a_bad_url_or_a_runner_that_is_down_is_explained() {
    let bad = said(&livesync(&["publish", "http://127.0.0.1:3001", "r", "1"]));
    assert!(bad.contains("must start with ws:// or wss://"), "{bad}");
    let down = format!("ws://127.0.0.1:{}", free_port());
    for args in [vec!["publish", &down, "r", "1"], vec!["tail", &down, "r"], vec!["connect", &down]] {
        let said = said(&livesync(&args));
        assert!(said.contains("cannot connect to") && said.contains("is the runner running"), "{args:?}: {said}");
    }
}
