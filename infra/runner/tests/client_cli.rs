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
    // The ack and the push may come in either order: the reply and the fanout race.
    let arrived = |seen: &[String], kind: &str| seen.iter().any(|l| l.starts_with("< ") && l.contains(kind));
    while !(arrived(&seen, r#""type":"event""#) && arrived(&seen, r#""type":"ack""#)) {
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

/// A data directory whose room `old` had 3 events, 8 days ago: past the 7-day retention, swept.
fn a_room_expired_long_ago(dir: &std::path::Path) {
    use livesync_core::store::Store;
    use std::sync::Arc;
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let embedded = Arc::new(livesync_embedded_store::EmbeddedStore::open(dir, Default::default()).unwrap());
        let store: Arc<dyn Store> = embedded.clone();
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let clock = Arc::new(livesync_core::clock::ManualClock::new(now_ms - 8 * 86_400_000));
        let engine = livesync_core::Engine::new(store.clone(), clock);
        let mut feed = store.change_feed().await.unwrap();
        let caller = livesync_core::access::Caller::anonymous("w");
        for n in 1..=3 {
            engine.handle(&caller, "w", "p", &format!(r#"{{"action":"publish","room":"old","data":{n}}}"#)).await;
        }
        let mut changes = Vec::new();
        while changes.len() < 3 {
            changes.extend(feed.next_batch(10).await.unwrap());
        }
        // Nobody to post to: the fanout marks the room's head.
        let nobody = Arc::new(livesync_runner::connections::Connections::new(1 << 20, 1 << 20));
        livesync_core::Fanout::new(store, nobody).deliver(&changes).await;
        assert_eq!(embedded.sweep().await.unwrap().expired_items, 3);
    });
}

#[test]
fn tail_says_when_the_events_it_asks_for_have_expired_and_goes_on_from_the_oldest_held() {
    let dir = tempfile::tempdir().unwrap();
    a_room_expired_long_ago(dir.path());
    let (runner, url) = start(&["--data-dir", dir.path().to_str().unwrap()], &[]);
    let mut tail = Command::new(env!("CARGO_BIN_EXE_livesync"))
        .args(["tail", &url, "old", "--since", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(tail.stderr.take().unwrap());
    let (said_tx, said) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = said_tx.send(line);
        }
    });
    let lines = lines_of(&mut tail);
    let seq = |line: String| serde_json::from_str::<serde_json::Value>(&line).unwrap()["seq"].as_u64().unwrap();
    let note = said.recv_timeout(Duration::from_secs(30)).expect("tail says the events expired");
    assert!(note.contains("events after seq 0 have expired on the server; continuing from seq 4"), "{note}");

    let out = String::from_utf8(livesync(&["publish", &url, "old", "after the silence"]).stdout).unwrap();
    assert!(out.starts_with("old seq 4 "), "seqs go on: {out}");
    assert_eq!(seq(next_line(&lines)), 4);
    tail.kill().unwrap();
    signal(&runner, "TERM");
    assert!(wait_for_exit(runner).success());
}
