//! The job commands as a user types them: `livesync cron`, `jobs list`, `jobs run` beside a
//! serving runner, `jobs runs`, `backups list`, `restore`, `report`; and what they say when
//! something is wrong.

mod common;

use common::{call, connect, next_push, signal, start, wait_for_exit};
use serde_json::json;
use std::process::{Command, Output};

fn livesync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_livesync")).args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// What a failed command said.
fn refusal(output: &Output) -> String {
    assert!(!output.status.success(), "it succeeded: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8(output.stderr.clone()).unwrap()
}

const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");

#[test]
fn cron_translates_a_crontab_line_and_shows_when_it_fires() {
    let said = stdout(&livesync(&["cron", "0 2 * * *"]));
    let mut lines = said.lines();
    assert_eq!(lines.next(), Some("cron(0 2 * * ? *)"));
    let next: Vec<&str> = lines.collect();
    assert_eq!(next.len(), 5, "{said}");
    assert!(next.iter().all(|l| l.contains("T02:00:00Z")), "{said}");
    let weekdays = stdout(&livesync(&["cron", "30 8 * * 1-5", "--timezone", "Europe/Paris", "--next", "1"]));
    assert!(weekdays.starts_with("cron(30 8 ? * MON-FRI *)\n"), "{weekdays}");
    assert!(weekdays.contains("08:30 Europe/Paris"), "{weekdays}");
}

#[test]
fn cron_says_why_a_line_cannot_be_translated() {
    assert!(refusal(&livesync(&["cron", "0 0 1 * 1"])).contains("use two schedules"));
    assert!(refusal(&livesync(&["cron", "cron(0 2 * * *)"])).contains("takes 6 fields"));
    assert!(refusal(&livesync(&["cron", "0 2 * * *", "--timezone", "Mars/Base"])).contains("unknown time zone"));
}

#[test]
fn jobs_list_shows_the_templates_schedules_and_next_fire_times() {
    let said = stdout(&livesync(&["jobs", "list", "--template", TEMPLATE, "--next", "2"]));
    assert!(said.contains("backup  cron(0 2 * * ? *) (UTC)  BackupFunction/Nightly"), "{said}");
    assert!(said.contains("report  cron(55 23 * * ? *) (UTC)  ReportFunction/EndOfDay"), "{said}");
    assert_eq!(said.lines().filter(|l| l.trim_start().starts_with("next: ")).count(), 4, "{said}");
    assert!(refusal(&livesync(&["jobs", "list", "--template", "/nowhere/template.yaml"])).contains("--template"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_beside_a_serving_runner_then_backups_restore_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_dir = data.to_str().unwrap();
    let (runner, url) = start(&["--data-dir", data_dir], &[]);
    let mut client = connect(&url).await;
    for n in 1..=3 {
        let ack = call(&mut client, json!({"action": "publish", "room": "lobby", "data": n, "ref": n})).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let mut dashboard = connect(&url).await;
    assert_eq!(call(&mut dashboard, json!({"action": "join", "room": "reports", "ref": "j"})).await["type"], "joined");

    // GIVEN a serving runner, WHEN a person runs the jobs from another process
    let backup = stdout(&livesync(&["jobs", "run", "backup", "--data-dir", data_dir]));
    assert!(backup.starts_with("backup ") && backup.contains(" succeeded in "), "{backup}");
    let report = stdout(&livesync(&["jobs", "run", "report", "--data-dir", data_dir]));
    assert!(report.contains("\"pushed_seq\":1"), "{report}");
    // THEN the runner pushes the report to the dashboard (a write from another process)
    let pushed = next_push(&mut dashboard).await;
    assert_eq!((pushed["room"].as_str(), pushed["kind"].as_str()), (Some("reports"), Some("report")), "{pushed}");

    // the runs are recorded
    let runs = stdout(&livesync(&["jobs", "runs", "--data-dir", data_dir]));
    assert!(runs.lines().any(|l| l.starts_with("backup ") && l.contains("succeeded  attempt 1  manual")), "{runs}");
    assert!(runs.lines().any(|l| l.starts_with("report ") && l.contains("succeeded")), "{runs}");
    // one backup, its file first
    let listed = stdout(&livesync(&["backups", "list", "--data-dir", data_dir]));
    let file = listed.split_whitespace().next().unwrap().to_owned();
    assert!(file.starts_with(&format!("{data_dir}/backups/livesync-")) && file.ends_with(".db.gz"), "{listed}");
    // the report reads back
    let shown = stdout(&livesync(&["report", "--data-dir", data_dir]));
    assert!(shown.starts_with("LiveSync report for ") && shown.contains("(stored report"), "{shown}");
    assert!(shown.contains("3 events"), "{shown}");

    // a second runner on the same directory is refused, and so is a restore under the runner
    let second = livesync(&["--data-dir", data_dir, "--listen", "127.0.0.1:0", "--management-listen", "127.0.0.1:0"]);
    let said = refusal(&second);
    let holder = format!("(process {})", runner.id());
    assert!(
        said.contains("is in use by another LiveSync runner or restore")
            && said.contains(&holder)
            && said.contains("stop it first"),
        "{said}"
    );
    let said = refusal(&livesync(&["restore", &file, "--data-dir", data_dir, "--force"]));
    assert!(said.contains("is in use") && said.contains(&holder), "{said}");

    // restore into a new directory; a second time is refused, then forced
    let restored = dir.path().join("restored");
    let restored_dir = restored.to_str().unwrap();
    let done = stdout(&livesync(&["restore", &file, "--data-dir", restored_dir]));
    assert!(done.starts_with("restored livesync-"), "{done}");
    let refused = refusal(&livesync(&["restore", &file, "--data-dir", restored_dir]));
    assert!(refused.contains("already holds data") && refused.contains("--force"), "{refused}");
    stdout(&livesync(&["restore", &file, "--data-dir", restored_dir, "--force"]));

    signal(&runner, "TERM");
    assert!(wait_for_exit(runner).success());
    // a runner on the restored directory serves the lobby and continues its seqs
    let (restored_runner, restored_url) = start(&["--data-dir", restored_dir], &[]);
    let mut late = connect(&restored_url).await;
    let joined = call(&mut late, json!({"action": "join", "room": "lobby", "since": 0, "ref": "j"})).await;
    let seqs: Vec<u64> = joined["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let ack = call(&mut late, json!({"action": "publish", "room": "lobby", "data": 4, "ref": 4})).await;
    assert_eq!(ack["seq"], 4);
    signal(&restored_runner, "TERM");
    assert!(wait_for_exit(restored_runner).success());
}

#[test]
fn job_commands_say_what_to_do_when_something_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo");
    let missing = missing.to_str().unwrap();
    let said = refusal(&livesync(&["jobs", "run", "backup", "--data-dir", missing]));
    assert!(said.contains("no LiveSync store") && said.contains("--data-dir"), "{said}");
    assert!(!std::path::Path::new(missing).exists(), "a mistyped directory is not created");
    assert!(refusal(&livesync(&["report", "--date", "yesterday", "--data-dir", missing])).contains("YYYY-MM-DD"));
    assert!(
        refusal(&livesync(&["report", "--date", "2026-12-02T10:00:00", "--data-dir", missing])).contains("YYYY-MM-DD")
    );
    assert!(refusal(&livesync(&["backups", "list", "--data-dir", missing])).contains("--data-dir"));
    assert!(refusal(&livesync(&["cron", "0 2 * * *", "--next", "18446744073709551615"])).contains("--next"));
    let stray = dir.path().join("notes.txt");
    std::fs::write(&stray, "hello").unwrap();
    let said = refusal(&livesync(&["restore", stray.to_str().unwrap(), "--data-dir", missing]));
    assert!(said.contains("is not a LiveSync backup"), "{said}");
    let help = stdout(&livesync(&["jobs", "--help"]));
    assert!(help.contains("list") && help.contains("run") && help.contains("runs"), "{help}");
}
