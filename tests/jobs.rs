//! Scheduled jobs, as a user meets them: the runner fires the template's schedules on a clock the
//! test moves; a duplicate invocation does nothing (on both stores, raced); a failing run is
//! retried and its failure stays visible; a backup taken while writers write restores into a
//! directory a runner then serves; the report over a seeded day has exactly the expected figures;
//! the Lambda handlers take recorded Scheduler and EventBridge events, back up with CreateBackup
//! and publish with PutEvents against moto.

use livesync_core::clock::{Clock, ManualClock, SystemClock};
use livesync_core::jobs::backup::Backups;
use livesync_core::jobs::report::{self, REPORTS_ROOM};
use livesync_core::jobs::runs::{self, RunStatus};
use livesync_core::jobs::{JobName, JobSettings, Jobs, RunOutcome};
use livesync_core::store::Store;
use livesync_core::tally;
use livesync_dynamodb::{DynamoBackups, DynamoStore};
use livesync_embedded_store::backup::{self as local_backup, LocalBackups};
use livesync_embedded_store::{EmbeddedStore, Options};
use livesync_runner::cli::{JobArg, RunArgs};
use livesync_runner::{JobsArgs, ScheduleClock, StoreArgs, StoreKind};
use livesync_tests::{Local, PATIENCE, moto_config, moto_table};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ms(time: &str) -> u64 {
    time.parse::<jiff::Timestamp>().unwrap().as_millisecond() as u64
}

/// Waits (at most [`PATIENCE`]) until `check` holds, calling `nudge` between looks.
async fn eventually<T>(mut check: impl AsyncFnMut() -> Option<T>, mut nudge: impl FnMut()) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "the condition never held");
        nudge();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A test template: the backup every day at 02:00 UTC, nothing else.
fn write_template(dir: &Path, expression: &str) -> std::path::PathBuf {
    let path = dir.join("template.yaml");
    let text = format!(
        r#"
Parameters:
  BackupSchedule:
    Type: String
    Default: {expression}
Resources:
  BackupFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildMethod: rust-cargolambda
      BuildProperties:
        Binary: backup
    Properties:
      Events:
        Nightly:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: !Ref BackupSchedule
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn embedded(dir: &Path) -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::open(dir, Options::default()).unwrap())
}

/// Waits for the backup run of `scheduled` to have a record that `holds`, calling `nudge`
/// between looks; returns the record.
async fn backup_run(
    store: &dyn Store,
    scheduled: &str,
    holds: impl Fn(&runs::RunRecord) -> bool,
    nudge: impl FnMut(),
) -> runs::RunRecord {
    eventually(async || runs::get(store, "backup", scheduled).await.unwrap().filter(|r| holds(r)), nudge).await
}

/// Waits for the backup run of `scheduled` to have succeeded.
async fn succeeded(store: &dyn Store, scheduled: &str) -> runs::RunRecord {
    backup_run(store, scheduled, |r| r.status == RunStatus::Succeeded, || {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_fires_the_templates_schedule_on_a_clock_the_test_moves() {
    let scratch = tempfile::tempdir().unwrap();
    let template = write_template(scratch.path(), "cron(0 2 * * ? *)");
    let clock = Arc::new(ManualClock::new(ms("2026-12-02T01:59:00Z")));
    let schedule_clock: Arc<dyn Clock> = clock.clone();
    let local = Local::start_with(|config| {
        config.jobs.template = template.clone();
        config.schedule_clock = ScheduleClock(Some(schedule_clock));
    })
    .await;
    let store = embedded(local.data_dir()).await;
    // GIVEN a minute before the schedule, no run yet
    assert!(runs::list(store.as_ref(), "backup", 10).await.unwrap().is_empty());
    // WHEN the clock passes 02:00
    clock.set(ms("2026-12-02T02:00:30Z"));
    // THEN the 02:00 backup runs, once, and its backup file exists
    let run = succeeded(store.as_ref(), "2026-12-02T02:00:00Z").await;
    assert_eq!((run.attempt, run.trigger.as_str()), (1, "schedule"));
    let backups = local_backup::list(&local.data_dir().join("backups")).unwrap();
    assert_eq!(backups.iter().map(|b| b.1.name.as_str()).collect::<Vec<_>>(), ["livesync-20261202T020000Z"]);
    // AND the next day's run waits for the next day
    clock.set(ms("2026-12-02T23:00:00Z"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(runs::list(store.as_ref(), "backup", 10).await.unwrap().len(), 1);
    clock.set(ms("2026-12-03T02:00:00Z"));
    succeeded(store.as_ref(), "2026-12-03T02:00:00Z").await;
    // AND after the machine slept three days, it runs once, late, for the last fire only
    clock.set(ms("2026-12-06T02:30:00Z"));
    succeeded(store.as_ref(), "2026-12-06T02:00:00Z").await;
    let scheduled: Vec<String> =
        runs::list(store.as_ref(), "backup", 10).await.unwrap().into_iter().map(|r| r.scheduled).collect();
    assert_eq!(scheduled, ["2026-12-06T02:00:00Z", "2026-12-03T02:00:00Z", "2026-12-02T02:00:00Z"]);
    local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_scheduled_run_is_retried_and_its_failure_stays_visible() {
    let scratch = tempfile::tempdir().unwrap();
    let template = write_template(scratch.path(), "cron(0 2 * * ? *)");
    // A file where the backup folder should be: every backup attempt fails, for real.
    let blocked = scratch.path().join("not-a-folder");
    std::fs::write(&blocked, "in the way").unwrap();
    let clock = Arc::new(ManualClock::new(ms("2026-12-02T01:59:00Z")));
    let schedule_clock: Arc<dyn Clock> = clock.clone();
    let local = Local::start_with(|config| {
        config.jobs.template = template.clone();
        config.jobs.backup_dir = Some(blocked.join("backups"));
        config.schedule_clock = ScheduleClock(Some(schedule_clock));
    })
    .await;
    let store = embedded(local.data_dir()).await;
    clock.set(ms("2026-12-02T02:00:00Z"));
    // The first attempt fails (the clock stays put: a fire more than an hour late is dropped).
    backup_run(store.as_ref(), "2026-12-02T02:00:00Z", |r| r.status == RunStatus::Failed, || {}).await;
    // Lambda's schedule of retries: a minute, then two, after each failure. The clock is moved
    // on a little at a time until the third attempt has failed.
    let moving = clock.clone();
    let run = backup_run(
        store.as_ref(),
        "2026-12-02T02:00:00Z",
        |r| r.status == RunStatus::Failed && r.attempt == 3,
        || moving.advance(Duration::from_secs(15)),
    )
    .await;
    assert_eq!(
        run.error.as_deref().unwrap(),
        format!(
            "the local backup failed: cannot list the backups: {}: Not a directory (os error 20)",
            blocked.join("backups").display()
        )
    );
    // No fourth attempt comes, however long we wait.
    clock.advance(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs::get(store.as_ref(), "backup", "2026-12-02T02:00:00Z").await.unwrap().unwrap().attempt, 3);
    local.stop().await;
}

/// Races `count` deliveries of the same Scheduler invocation on `jobs`: exactly one runs it.
async fn race_duplicate_deliveries(jobs: Arc<Jobs>, count: usize) -> Vec<&'static str> {
    let invocations: Vec<_> = (0..count)
        .map(|_| {
            let jobs = jobs.clone();
            tokio::spawn(async move {
                match livesync_handlers::jobs::scheduled(&jobs, JobName::Backup, fixture("scheduler-backup.json")).await
                {
                    Ok(RunOutcome::Ran(_)) => "ran",
                    Ok(RunOutcome::AlreadyDone(_)) => "already_done",
                    Ok(RunOutcome::Busy(_)) => "busy",
                    Err(error) => panic!("a delivery failed: {error}"),
                }
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for invocation in invocations {
        outcomes.push(invocation.await.unwrap());
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_of_one_scheduled_time_back_up_once_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path()).await;
    let backups = Arc::new(LocalBackups::new(dir.path(), dir.path().join("backups")));
    let jobs =
        Arc::new(Jobs::new(store.clone(), Arc::new(SystemClock), JobSettings::default()).with_backups(backups.clone()));
    let outcomes = race_duplicate_deliveries(jobs.clone(), 8).await;
    assert_eq!(outcomes.iter().filter(|o| **o == "ran").count(), 1, "{outcomes:?}");
    // A late duplicate, after the run finished, is answered from the record.
    assert_eq!(race_duplicate_deliveries(jobs, 1).await, ["already_done"]);
    assert_eq!(backups.list().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_of_one_scheduled_time_back_up_once_on_dynamodb() {
    let sdk = moto_config().await;
    let table = moto_table(&sdk, "jobs-dup").await;
    let store: Arc<dyn Store> = Arc::new(DynamoStore::new(&sdk, &table));
    let backups = Arc::new(DynamoBackups::new(&sdk, &table));
    let jobs = Arc::new(Jobs::new(store, Arc::new(SystemClock), JobSettings::default()).with_backups(backups.clone()));
    let outcomes = race_duplicate_deliveries(jobs.clone(), 8).await;
    assert_eq!(outcomes.iter().filter(|o| **o == "ran").count(), 1, "{outcomes:?}");
    assert_eq!(race_duplicate_deliveries(jobs, 1).await, ["already_done"]);
    // CreateBackup against moto through the real SDK: one backup, named after its time.
    let names: Vec<String> = backups.list().await.unwrap().into_iter().map(|b| b.name).collect();
    assert_eq!(names, ["livesync-20261202T020000Z"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_function_deletes_backups_older_than_the_retention_on_dynamodb() {
    let sdk = moto_config().await;
    let table = moto_table(&sdk, "jobs-retention").await;
    let store: Arc<dyn Store> = Arc::new(DynamoStore::new(&sdk, &table));
    let backups = Arc::new(DynamoBackups::new(&sdk, &table));
    // GIVEN a backup taken "long ago" (retention zero: anything older than now is old)
    backups.take("livesync-20200101T020000Z").await.unwrap();
    let settings = JobSettings { backup_retention: Duration::ZERO, ..JobSettings::default() };
    let jobs = Jobs::new(store, Arc::new(SystemClock), settings).with_backups(backups.clone());
    tokio::time::sleep(Duration::from_millis(10)).await;
    // WHEN the scheduled backup runs
    let outcome =
        livesync_handlers::jobs::scheduled(&jobs, JobName::Backup, fixture("scheduler-backup.json")).await.unwrap();
    let RunOutcome::Ran(record) = outcome else { panic!("{outcome:?}") };
    // THEN only its own backup is left, and the run says what it deleted
    let summary: Value = serde_json::from_str(record.summary.as_deref().unwrap()).unwrap();
    assert_eq!(summary["deleted"], json!(["livesync-20200101T020000Z"]));
    let names: Vec<String> = backups.list().await.unwrap().into_iter().map(|b| b.name).collect();
    assert_eq!(names, ["livesync-20261202T020000Z"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_four_writers_publish_restores_and_a_runner_continues_each_rooms_seqs() {
    let mut local = Local::start().await;
    let url = local.url();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u64)>();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (url, stop, acked) = (url.clone(), stop.clone(), acked_tx.clone());
            tokio::spawn(async move {
                let mut client = livesync_tests::Client::connect(&url).await;
                let room = format!("busy-{w}");
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let ack = client.publish(&room, Some(&format!("w{w}-{n}")), json!({"n": n})).await;
                    let _ = acked.send((w, ack["seq"].as_u64().unwrap()));
                }
            })
        })
        .collect();
    // Let every writer get going, then take the backup (the CLI's command, in this process
    // beside the runner) while they keep writing.
    let mut acked_before = [0u64; 4];
    while acked_before.iter().any(|seq| *seq < 20) {
        let (w, seq) = acked_rx.recv().await.unwrap();
        acked_before[w] = acked_before[w].max(seq);
    }
    while let Ok((w, seq)) = acked_rx.try_recv() {
        acked_before[w] = acked_before[w].max(seq);
    }
    let data = StoreArgs {
        store: StoreKind::Embedded,
        table: String::new(),
        create_tables: false,
        data_dir: local.data_dir().to_owned(),
        retention_days: 7,
    };
    let run = RunArgs { job: JobArg::Backup, data, jobs: JobsArgs::default() };
    livesync_runner::commands::jobs_run(&run).await.unwrap();
    // Writers go on after the backup for a while.
    for _ in 0..40 {
        acked_rx.recv().await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let backups = local_backup::list(&local.data_dir().join("backups")).unwrap();
    assert_eq!(backups.len(), 1);
    let (file, manifest) = &backups[0];

    // Restore into a fresh directory and serve it.
    let restored = tempfile::tempdir().unwrap();
    local_backup::restore(file, restored.path(), false, &|_, _| {}).unwrap();
    // A directory holding data is refused without --force.
    let again = local_backup::restore(file, restored.path(), false, &|_, _| {}).unwrap_err();
    assert!(again.to_string().contains("already holds data"), "{again}");
    local.restart().await;
    let runner = livesync_runner::Runner::start(livesync_runner::Config::for_tests(restored.path())).await.unwrap();
    let mut reader = livesync_tests::Client::connect(&runner.url()).await;
    let mut events_in_backup = 0;
    for (w, acked) in acked_before.iter().enumerate() {
        let room = format!("busy-{w}");
        let mut events = Vec::new();
        let mut since = 0;
        loop {
            let page = reader.request(json!({"action": "sync", "room": room, "since": since})).await;
            let got = page["events"].as_array().unwrap().clone();
            since = got.last().map_or(since, |e| e["seq"].as_u64().unwrap());
            events.extend(got);
            if page["more"] != true {
                break;
            }
        }
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        // Every event acknowledged before the backup started is there, with no gap.
        assert!(seqs.len() as u64 >= *acked, "room {room}: {} events, {acked} acknowledged before", seqs.len());
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "room {room} has a gap");
        assert!(events.iter().enumerate().all(|(i, e)| e["data"]["n"] == json!(i + 1)), "room {room}'s data");
        events_in_backup += seqs.len() as u64;
        // The restored runner continues the room's seqs.
        let ack = reader.publish(&room, Some("after-restore"), json!("next")).await;
        assert_eq!(ack["seq"].as_u64().unwrap(), seqs.len() as u64 + 1);
    }
    assert_eq!(events_in_backup, manifest.events, "the manifest counts the events it holds");
    runner.shutdown().await.unwrap();
    local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_over_a_seeded_day_has_exactly_the_expected_figures_and_is_stored_pushed_once() {
    let local = Local::start().await;
    let store = embedded(local.data_dir()).await;
    let mut dashboard = local.client().await;
    dashboard.join(REPORTS_ROOM, None).await;
    // GIVEN a day: chat with two people in the lobby at once, then one of them leaves
    let mut ann = local.client().await;
    let mut bob = local.client().await;
    ann.request(json!({"action": "join", "room": "lobby", "user": "ann"})).await;
    bob.request(json!({"action": "join", "room": "lobby", "user": "bob"})).await;
    for n in 0..5 {
        ann.publish("lobby", Some(&format!("m{n}")), json!({"text": n})).await;
    }
    // a document written twice, and a stale write refused as a conflict
    let put = |base: u64, title: &str| json!({"action": "doc.put", "room": "notes", "doc": "plan", "base": base, "value": {"title": title}});
    assert_eq!(ann.request(put(0, "v1")).await["type"], "doc");
    assert_eq!(ann.request(put(1, "v2")).await["type"], "doc");
    let stale = bob.request(put(1, "late")).await;
    assert_eq!(stale["code"], "conflict", "{stale}");
    // a shop: 10 tees, 3 + 4 sold, a refill of hats that stay plentiful, mugs that run low
    for (action, sku, amount) in [
        ("set", "tee", 10),
        ("adjust", "tee", -3),
        ("adjust", "tee", -4),
        ("set", "hat", 50),
        ("adjust", "hat", 5),
        ("set", "mug", 2),
    ] {
        let field = if action == "set" { "level" } else { "delta" };
        let reply =
            ann.request(json!({"action": format!("stock.{action}"), "room": "shop", "sku": sku, field: amount})).await;
        assert_eq!(reply["type"], "stock", "{reply}");
    }
    bob.request(json!({"action": "leave", "room": "lobby"})).await;
    // The figures are counted from the change feed: wait until it has counted the day's last events.
    let today = tally::utc_date(SystemClock.now_ms());
    eventually(
        async || {
            let days = tally::room_days(store.as_ref(), &today).await.unwrap();
            let counted = |room: &str, events: u64| days.iter().any(|d| d.room == room && d.events == events);
            (counted("shop", 6) && counted("lobby", 8)).then_some(())
        },
        || {},
    )
    .await;

    // WHEN the report runs, on a deployment keeping events 30 days
    let month = Duration::from_secs(30 * 86_400);
    let jobs = Jobs::new(
        store.clone(),
        Arc::new(SystemClock),
        JobSettings { event_retention: month, ..JobSettings::default() },
    );
    let outcome =
        jobs.run(JobName::Report, jiff::Timestamp::now(), livesync_core::jobs::Trigger::Manual).await.unwrap();
    assert!(matches!(outcome, RunOutcome::Ran(_)), "{outcome:?}");

    // THEN its figures are exactly the day's
    let report = report::stored(store.as_ref(), &today).await.unwrap().expect("the report is stored");
    let rooms: Vec<(String, u64, u64, u64, u64)> = report
        .rooms
        .iter()
        .map(|r| (r.room.clone(), r.events, r.peak_connections, r.doc_versions, r.conflicts))
        .collect();
    assert_eq!(
        rooms,
        vec![
            // joined ann, joined bob, 5 messages, left bob; two members at once at most
            ("lobby".to_owned(), 8, 2, 0, 0),
            ("notes".to_owned(), 2, 0, 2, 1),
            // (the dashboard's `reports` room is not the day's activity)
            ("shop".to_owned(), 6, 0, 0, 0),
        ]
    );
    let sales: Vec<(String, u64)> = report.sales.iter().map(|s| (s.sku.clone(), s.units_sold)).collect();
    assert_eq!(sales, vec![("tee".to_owned(), 7)]);
    let restock: Vec<(String, i64)> = report.restock.iter().map(|r| (r.sku.clone(), r.level)).collect();
    assert_eq!(restock, vec![("mug".to_owned(), 2), ("tee".to_owned(), 3)]);
    assert_eq!(
        (report.totals.events, report.totals.doc_versions, report.totals.conflicts, report.totals.units_sold),
        (16, 2, 1, 7)
    );
    // AND the dashboard in the reports room saw it live, as a `report` event
    let pushed = dashboard.pushed_events(REPORTS_ROOM, 1).await;
    assert_eq!(pushed[0]["kind"], "report");
    assert_eq!(pushed[0]["data"]["totals"]["units_sold"], 7);
    // kept as long as the deployment keeps events
    let seq = pushed[0]["seq"].as_u64().unwrap();
    let event = store.get(&livesync_core::layout::event_key(REPORTS_ROOM, seq)).await.unwrap().unwrap();
    let expires = event.number(livesync_core::store::TTL_ATTRIBUTE).unwrap();
    let in_a_month = (SystemClock.now_ms() / 1000 + month.as_secs()) as i64;
    assert!((in_a_month - 120..=in_a_month).contains(&expires), "expires at {expires}, not in 30 days ({in_a_month})");
    local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counting_the_same_batch_twice_counts_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path()).await;
    let mut feed = store.change_feed().await.unwrap();
    let engine = livesync_core::Engine::new(store.clone(), Arc::new(SystemClock));
    for n in 0..3 {
        let frame = json!({"action": "publish", "room": "r", "data": n}).to_string();
        let ack = engine.handle(&livesync_core::access::Caller::anonymous("c1"), "c1", &format!("q{n}"), &frame).await;
        assert!(matches!(ack, livesync_core::protocol::ServerFrame::Ack { .. }), "{ack:?}");
    }
    let mut changes = Vec::new();
    while changes.iter().filter(|c: &&livesync_core::store::Change| c.key.sk.starts_with("EVT#")).count() < 3 {
        changes.extend(feed.next_batch(100).await.unwrap());
    }
    let now = SystemClock.now_ms();
    let first = tally::record(store.as_ref(), now, &changes).await.unwrap();
    let again = tally::record(store.as_ref(), now, &changes).await.unwrap();
    assert_eq!((first.events, first.repeats), (3, 0));
    assert_eq!((again.events, again.repeats), (3, 3), "a redelivered batch is recognised");
    let days = tally::room_days(store.as_ref(), &tally::utc_date(now)).await.unwrap();
    assert_eq!(days.iter().map(|d| (d.room.as_str(), d.events)).collect::<Vec<_>>(), [("r", 3)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_function_publishes_with_put_events_to_moto_and_refuses_a_bus_that_is_not_there() {
    let sdk = moto_config().await;
    let table = moto_table(&sdk, "jobs-report").await;
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    let bus = format!("reports-{}", std::process::id());
    events.create_event_bus().name(&bus).send().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(DynamoStore::new(&sdk, &table));
    let publisher = Arc::new(livesync_lambdas::EventBridgePublisher::new(&sdk, &bus));
    let jobs = Jobs::new(store.clone(), Arc::new(SystemClock), JobSettings::default()).with_publisher(publisher);
    // A recorded EventBridge rule event for 23:55: the report of 2026-12-02.
    let outcome = livesync_handlers::jobs::scheduled(&jobs, JobName::Report, fixture("scheduled-event-report.json"))
        .await
        .unwrap();
    let RunOutcome::Ran(record) = outcome else { panic!("{outcome:?}") };
    assert_eq!(record.scheduled, "2026-12-02T23:55:00Z");
    assert!(report::stored(store.as_ref(), "2026-12-02").await.unwrap().is_some());
    // The second delivery does not publish again: it does nothing.
    let again = livesync_handlers::jobs::scheduled(&jobs, JobName::Report, fixture("scheduled-event-report.json"))
        .await
        .unwrap();
    assert!(matches!(again, RunOutcome::AlreadyDone(_)));
    // A bus that does not exist fails the run, which is recorded as failed for the retry.
    let missing = Arc::new(livesync_lambdas::EventBridgePublisher::new(&sdk, "no-such-bus"));
    let failing = Jobs::new(store.clone(), Arc::new(SystemClock), JobSettings::default()).with_publisher(missing);
    let mut event = fixture("scheduled-event-report.json");
    event["time"] = json!("2026-12-03T23:55:00Z");
    let error = livesync_handlers::jobs::scheduled(&failing, JobName::Report, event).await.unwrap_err();
    assert!(livesync_core::engine::Chain(&error).to_string().contains("no-such-bus"), "{error}");
    let failed = runs::get(store.as_ref(), "report", "2026-12-03T23:55:00Z").await.unwrap().unwrap();
    assert_eq!((failed.status, failed.attempt), (RunStatus::Failed, 1));
}

#[test]
fn an_invocation_without_a_scheduled_time_or_for_another_job_is_refused_with_what_to_do() {
    use livesync_handlers::jobs::invocation;
    let none = invocation(JobName::Backup, &json!({})).unwrap_err().to_string();
    assert!(none.contains("<aws.scheduler.scheduled-time>"), "{none}");
    let wrong =
        invocation(JobName::Backup, &json!({"job": "report", "scheduledTime": "2026-12-02T02:00:00Z"})).unwrap_err();
    assert_eq!(wrong.to_string(), "this function runs the backup job, but the invocation asks for \"report\"");
    let parsed = invocation(JobName::Backup, &fixture("scheduler-backup.json")).unwrap();
    assert_eq!(parsed.scheduled.to_string(), "2026-12-02T02:00:00Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_made_earlier_never_replaces_a_later_one_of_the_same_day() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path()).await;
    let later = report::compute(store.as_ref(), "2026-12-02", 5, "2026-12-02T23:55:00Z".to_owned()).await.unwrap();
    let earlier = report::compute(store.as_ref(), "2026-12-02", 5, "2026-12-02T23:50:00Z".to_owned()).await.unwrap();
    assert!(report::store_report(store.as_ref(), &later).await.unwrap());
    // Two runs finishing out of order: the earlier one's figures do not win.
    assert!(!report::store_report(store.as_ref(), &earlier).await.unwrap());
    assert_eq!(
        report::stored(store.as_ref(), "2026-12-02").await.unwrap().unwrap().generated_at,
        "2026-12-02T23:55:00Z"
    );
}
