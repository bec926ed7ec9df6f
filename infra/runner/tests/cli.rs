//! The `livesync` command line as a user meets it: `livesync token` mints a token a runner with
//! the same secret accepts, and an open runner will not listen beyond loopback.

mod common;

use common::{call, signal, start, wait_for_exit};
use livesync_client::Connection;
use serde_json::json;
use std::process::Command;

const SECRET: &str = "a-command-line-test-secret-of-32-bytes";

fn livesync(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_livesync")).args(args).envs(envs.iter().copied()).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_token_opens_a_runner_with_the_same_secret_for_its_rooms_only() {
    let minted = livesync(
        &["token", "--sub", "ann", "--read", "lobby, doc-*", "--write", "lobby", "--ttl", "10m"],
        &[("LIVESYNC_AUTH_SECRET", SECRET)],
    );
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let dir = tempfile::tempdir().unwrap();
    let (child, url) = start(&["--data-dir", dir.path().to_str().unwrap()], &[("LIVESYNC_AUTH_SECRET", SECRET)]);
    let refused = Connection::open(&url, None).await.err().expect("refused without a token");
    let why = std::error::Error::source(&refused).map(ToString::to_string).unwrap_or_default();
    assert!(why.contains("401"), "{refused}: {why}");
    let mut socket = Connection::open(&url, Some(&token)).await.unwrap();
    let ack = call(&mut socket, json!({"action": "publish", "room": "lobby", "data": 1, "ref": 1})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let forbidden = call(&mut socket, json!({"action": "publish", "room": "doc-1", "data": 1, "ref": 2})).await;
    assert_eq!(forbidden["code"], "forbidden", "{forbidden}");
    signal(&child, "TERM");
    assert!(wait_for_exit(child).success());
}

#[test]
fn token_explains_what_is_missing() {
    let no_secret = livesync(&["token", "--sub", "ann"], &[]);
    assert!(!no_secret.status.success());
    assert!(String::from_utf8_lossy(&no_secret.stderr).contains("--secret"));
    let short = livesync(&["token", "--sub", "ann", "--secret", "short"], &[]);
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 32 bytes"));
    let bad_ttl = livesync(&["token", "--sub", "ann", "--ttl", "forever", "--secret", SECRET], &[]);
    assert!(String::from_utf8_lossy(&bad_ttl.stderr).contains("--ttl"));
}

#[test]
fn an_open_runner_refuses_a_public_address_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let refused = livesync(
        &["--listen", "0.0.0.0:0", "--management-listen", "127.0.0.1:0", "--data-dir", dir.path().to_str().unwrap()],
        &[],
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("without authentication") && said.contains("--auth-secret") && said.contains("--insecure"),
        "{said}"
    );
}
