//! The job and backup commands of the `livesync` binary: what each prints, and the errors that
//! say what to do next. Every command here reads the same `--data-dir` / `LIVESYNC_DATA_DIR`
//! (or `--store dynamodb`) as the runner, and may run while a runner serves that store.

use crate::cli::{BackupsListArgs, CronArgs, JobArg, ListArgs, ReportArgs, RestoreArgs, RunArgs, RunsArgs};
use crate::{StoreArgs, StoreKind, open_store};
use indicatif::{ProgressBar, ProgressStyle};
use livesync_core::clock::{Clock, SystemClock};
use livesync_core::jobs::backup::BackupRecord;
use livesync_core::jobs::report::{self, DailyReport};
use livesync_core::jobs::schedule::{Schedule, from_crontab};
use livesync_core::jobs::{JobName, Jobs, RunOutcome, Trigger, runs};
use livesync_core::store::Store;
use livesync_core::tally::utc_date;
use livesync_embedded_store::backup::{self as local_backup, LocalBackups};
use livesync_embedded_store::{DATABASE_FILE, Options};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub type CommandError = Box<dyn std::error::Error>;

fn refuse(message: impl Into<String>) -> CommandError {
    message.into().into()
}

impl JobArg {
    pub fn job(self) -> JobName {
        match self {
            JobArg::Backup => JobName::Backup,
            JobArg::Report => JobName::Report,
        }
    }
}

/// Opens the store a command works on. An embedded data directory must already hold a store: a
/// mistyped --data-dir is an error, not a new empty store.
async fn open(data: &StoreArgs) -> Result<Arc<dyn Store>, CommandError> {
    if data.store == StoreKind::Embedded && !data.data_dir.join(DATABASE_FILE).exists() {
        return Err(refuse(format!(
            "there is no LiveSync store in {} (no {DATABASE_FILE}); give the --data-dir (or LIVESYNC_DATA_DIR) \
             the runner uses",
            data.data_dir.display()
        )));
    }
    // This process's change feeds are not the runner's: it must not prune changes the runner's
    // fanout has yet to read.
    Ok(open_store(data, Options::beside_a_runner()).await?)
}

/// A progress bar for work that takes more than a moment; hidden until then, and when stderr is
/// not a terminal.
fn progress_bar(what: &'static str) -> ProgressBar {
    let bar = ProgressBar::hidden();
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what);
    bar
}

fn show_after_a_moment(bar: &ProgressBar, started: std::time::Instant) {
    if bar.is_hidden() && started.elapsed() > Duration::from_millis(500) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
}

pub fn jobs_list(args: &ListArgs) -> Result<(), CommandError> {
    if !args.template.exists() {
        return Err(refuse(format!(
            "no template at {}: run from the project's root, or give --template",
            args.template.display()
        )));
    }
    let schedules = crate::template::read(&args.template, &BTreeMap::new())?;
    if schedules.is_empty() {
        println!("no job has a schedule in {}", args.template.display());
    }
    let now = jiff::Timestamp::now();
    for entry in schedules {
        let state = if entry.enabled { "" } else { "  (disabled)" };
        println!("{}  {}  {}/{}{state}", entry.job, entry.schedule, entry.function, entry.event);
        let upcoming = entry.schedule.upcoming(now, usize::from(args.next));
        if upcoming.is_empty() && args.next > 0 {
            println!("    never fires again");
        }
        for at in upcoming {
            println!("    next: {at}");
        }
    }
    Ok(())
}

pub async fn jobs_run(args: &RunArgs) -> Result<(), CommandError> {
    let store = open(&args.data).await?;
    let job = args.job.job();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let bar = progress_bar("backing up");
    let jobs = match (job, args.data.store) {
        (JobName::Backup, StoreKind::Embedded) => {
            let started = std::time::Instant::now();
            let shown = bar.clone();
            let backups = LocalBackups::new(&args.data.data_dir, args.data.backup_dir(&args.jobs)).with_progress(
                Arc::new(move |done, total| {
                    shown.set_length(total);
                    shown.set_position(done);
                    show_after_a_moment(&shown, started);
                }),
            );
            Jobs::new(store, clock.clone(), args.jobs.settings()).with_backups(Arc::new(backups))
        }
        _ => crate::jobs(&args.data, &args.jobs, store, clock.clone()).await,
    };
    let now = jiff::Timestamp::from_millisecond(clock.now_ms() as i64)?;
    let outcome = jobs.run(job, now, Trigger::Manual).await;
    bar.finish_and_clear();
    match outcome? {
        RunOutcome::Ran(record) => {
            println!("{job} {} succeeded in {} ms", record.scheduled, record.duration_ms.unwrap_or(0));
            if let Some(summary) = record.summary {
                println!("{summary}");
            }
            Ok(())
        }
        RunOutcome::AlreadyDone(record) | RunOutcome::Busy(record) => Err(refuse(format!(
            "a {job} run for {} is already {}; try again in a second",
            record.scheduled,
            record.status.name()
        ))),
    }
}

pub async fn jobs_runs(args: &RunsArgs) -> Result<(), CommandError> {
    let store = open(&args.data).await?;
    let jobs: Vec<JobName> = match args.job {
        Some(job) => vec![job.job()],
        None => JobName::ALL.to_vec(),
    };
    let mut any = false;
    let now = SystemClock.now_ms();
    for job in jobs {
        for run in runs::list(store.as_ref(), job.name(), usize::from(args.limit)).await? {
            any = true;
            let duration = run.duration_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"));
            let detail = run.error.as_deref().or(run.summary.as_deref()).unwrap_or("");
            let status = if run.is_abandoned(now) {
                "abandoned (its run died; the next delivery takes it over)"
            } else {
                run.status.name()
            };
            println!(
                "{job}  {}  {status}  attempt {}  {}  {duration}  {detail}",
                run.scheduled, run.attempt, run.trigger
            );
        }
    }
    if !any {
        println!("no runs yet: jobs run on the template's schedules, or now with `livesync jobs run backup|report`");
    }
    Ok(())
}

pub async fn backups_list(args: &BackupsListArgs) -> Result<(), CommandError> {
    let backups: Vec<BackupRecord> = match args.data.store {
        StoreKind::Embedded => {
            let folder =
                args.backup_dir.clone().unwrap_or_else(|| args.data.data_dir.join(local_backup::BACKUP_FOLDER));
            if !folder.exists() && !args.data.data_dir.join(DATABASE_FILE).exists() {
                return Err(refuse(format!(
                    "there is no LiveSync store in {} and no backups in {}; give the --data-dir (or --backup-dir) \
                     the runner uses",
                    args.data.data_dir.display(),
                    folder.display()
                )));
            }
            local_backup::list(&folder)?
                .into_iter()
                .map(|(path, m)| BackupRecord {
                    name: m.name,
                    location: path.display().to_string(),
                    created_ms: m.created_ms,
                    items: Some(m.items),
                    bytes: Some(m.compressed_bytes),
                })
                .collect()
        }
        StoreKind::Dynamodb => {
            use livesync_core::jobs::backup::Backups;
            let sdk = livesync_dynamodb::sdk_config().await;
            livesync_dynamodb::DynamoBackups::new(&sdk, &args.data.table).list().await?
        }
    };
    if backups.is_empty() {
        eprintln!("no backups yet: `livesync jobs run backup` takes one now");
    }
    for backup in backups {
        let created = jiff::Timestamp::from_millisecond(backup.created_ms as i64).unwrap_or_default();
        let items = backup.items.map_or_else(String::new, |n| format!("  {n} items"));
        let bytes = backup.bytes.map_or_else(String::new, |n| format!("  {n} bytes"));
        println!("{}  {created}  {}{items}{bytes}", backup.location, backup.name);
    }
    Ok(())
}

pub fn restore(args: &RestoreArgs) -> Result<(), CommandError> {
    let bar = progress_bar("restoring");
    let started = std::time::Instant::now();
    let shown = bar.clone();
    let restored = local_backup::restore(&args.backup, &args.data_dir, args.force, &move |done, total| {
        shown.set_length(total);
        shown.set_position(done);
        show_after_a_moment(&shown, started);
    });
    bar.finish_and_clear();
    let manifest = restored?;
    println!(
        "restored {} ({} items, {} events in {} rooms, taken {}) into {}",
        manifest.name,
        manifest.items,
        manifest.events,
        manifest.rooms,
        manifest.created_at,
        args.data_dir.display()
    );
    Ok(())
}

pub async fn report(args: &ReportArgs) -> Result<(), CommandError> {
    let date = match &args.date {
        Some(date) => {
            let parsed = date.parse::<jiff::civil::Date>().ok().filter(|d| d.to_string() == *date);
            parsed.ok_or_else(|| refuse(format!("--date {date:?} is not a date: use YYYY-MM-DD")))?.to_string()
        }
        None => utc_date(SystemClock.now_ms()),
    };
    let store = open(&args.data).await?;
    let stored = if args.live { None } else { report::stored(store.as_ref(), &date).await? };
    let (report, origin) = match stored {
        Some(report) => (report, "stored report"),
        None => {
            let now = livesync_core::jobs::run_time(jiff::Timestamp::now());
            let origin =
                if date == utc_date(SystemClock.now_ms()) { "counted now: the day so far" } else { "counted now" };
            (report::compute(store.as_ref(), &date, args.low_stock_threshold, now).await?, origin)
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, origin);
    }
    Ok(())
}

fn print_report(report: &DailyReport, origin: &str) {
    println!("LiveSync report for {} ({origin}, made {})", report.date, report.generated_at);
    let t = &report.totals;
    println!(
        "  {} rooms, {} events, {} document versions, {} text edits, {} conflicts refused, {} units sold",
        t.rooms, t.events, t.doc_versions, t.text_edits, t.conflicts, t.units_sold
    );
    if !report.rooms.is_empty() {
        println!("  rooms (events, peak connections, document versions, conflicts):");
        for room in &report.rooms {
            println!(
                "    {}  {}  {}  {}  {}",
                room.room, room.events, room.peak_connections, room.doc_versions, room.conflicts
            );
        }
    }
    if !report.sales.is_empty() {
        println!("  units sold:");
        for sale in &report.sales {
            println!("    {}/{}  {}", sale.room, sale.sku, sale.units_sold);
        }
    }
    println!("  restock (levels below {} as of {}):", report.low_stock_threshold, report.generated_at);
    if report.restock.is_empty() {
        println!("    nothing");
    }
    for low in &report.restock {
        println!("    {}/{}  {} left", low.room, low.sku, low.level);
    }
}

pub fn cron(args: &CronArgs) -> Result<(), CommandError> {
    let text = args.expression.trim();
    // An EventBridge expression (`cron(...)`, `rate (...)`) is checked as it is; anything else is
    // read as a crontab line.
    let expression = if text.contains('(') { text.to_owned() } else { from_crontab(text)? };
    let schedule = Schedule::parse(&expression, Some(&args.timezone))?;
    println!("{}", schedule.expression());
    let upcoming = schedule.upcoming(jiff::Timestamp::now(), usize::from(args.next));
    if upcoming.is_empty() && args.next > 0 {
        eprintln!("warning: {} never fires again (is the date possible, the year not past?)", schedule.expression());
    }
    for at in upcoming {
        let local = at.to_zoned(jiff::tz::TimeZone::get(&args.timezone).unwrap_or(jiff::tz::TimeZone::UTC));
        println!("  next: {at}  ({} {})", local.strftime("%Y-%m-%d %H:%M"), args.timezone);
    }
    Ok(())
}
