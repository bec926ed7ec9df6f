//! The end-of-day report: each room's figures, units sold per SKU and the restock list, from the
//! day's tally (see [`crate::tally`]).
//!
//! A report is stored (`REPORTS`, one item per date), pushed as a `report` event to the
//! [`REPORTS_ROOM`] room so dashboards see it live, and handed to a [`ReportPublisher`] (on AWS,
//! EventBridge `PutEvents`) so other systems can subscribe. The push carries an idempotency id
//! of the date and the run, so a retried run does not push twice.

use super::JobError;
use crate::clock::Clock;
use crate::layout::{self, ClientId};
use crate::ordering::{self, Entry, RoomHeads};
use crate::protocol::{EventKind, JsonData, MAX_MESSAGE_BYTES};
use crate::store::{Attr, Condition, Item, Store, StoreError};
use crate::tally;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The room every report is pushed to.
pub const REPORTS_ROOM: &str = "reports";

/// Who a report event is `from`.
pub const REPORT_SENDER: &str = "livesync";

/// A report larger than this is pushed and published as its totals only (the stored report
/// stays whole): a push must fit a client's message, and a PutEvents entry is at most 256 KB.
const MAX_PUSHED_BYTES: usize = MAX_MESSAGE_BYTES - 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyReport {
    /// The UTC day it covers, `YYYY-MM-DD`.
    pub date: String,
    /// When it was made (RFC 3339); figures of later in the day come in a later report.
    pub generated_at: String,
    pub low_stock_threshold: i64,
    pub totals: Totals,
    pub rooms: Vec<RoomFigures>,
    pub sales: Vec<SkuSales>,
    /// SKUs whose last level is below the threshold, lowest first.
    pub restock: Vec<Restock>,
    /// Only the totals are here: the whole report is stored, readable with `livesync report`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub rooms: u64,
    pub events: u64,
    pub doc_versions: u64,
    pub text_edits: u64,
    pub conflicts: u64,
    pub units_sold: u64,
    pub restock: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomFigures {
    pub room: String,
    pub events: u64,
    pub peak_connections: u64,
    pub doc_versions: u64,
    pub text_edits: u64,
    pub conflicts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuSales {
    pub room: String,
    pub sku: String,
    pub units_sold: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restock {
    pub room: String,
    pub sku: String,
    pub level: i64,
}

impl DailyReport {
    /// The report with its lists dropped, for where the whole one does not fit.
    pub fn summary(&self) -> DailyReport {
        DailyReport { rooms: Vec::new(), sales: Vec::new(), restock: Vec::new(), truncated: true, ..self.clone() }
    }

    /// The form that is pushed and published: the whole report, or its summary when too large.
    pub fn for_delivery(&self) -> DailyReport {
        let size = serde_json::to_string(self).map_or(usize::MAX, |json| json.len());
        if size > MAX_PUSHED_BYTES { self.summary() } else { self.clone() }
    }
}

/// Where reports go besides the store and the `reports` room.
#[async_trait]
pub trait ReportPublisher: Send + Sync {
    async fn publish(&self, report: &DailyReport) -> Result<(), JobError>;
}

/// The day's report, from its tally as it stands.
pub async fn compute(
    store: &dyn Store,
    date: &str,
    threshold: i64,
    generated_at: String,
) -> Result<DailyReport, StoreError> {
    let rooms: Vec<RoomFigures> = tally::room_days(store, date)
        .await?
        .into_iter()
        // The reports themselves are not the day's activity.
        .filter(|day| day.room != REPORTS_ROOM)
        .map(|day| RoomFigures {
            room: day.room,
            events: day.events,
            peak_connections: day.peak_connections,
            doc_versions: day.doc_versions,
            text_edits: day.text_edits,
            conflicts: day.conflicts,
        })
        .collect();
    let sales: Vec<SkuSales> = tally::sku_days(store, date)
        .await?
        .into_iter()
        .map(|day| SkuSales { room: day.room, sku: day.sku, units_sold: day.sold })
        .collect();
    let mut restock: Vec<Restock> = tally::below(store, threshold)
        .await?
        .into_iter()
        .map(|level| Restock { room: level.room, sku: level.sku, level: level.level })
        .collect();
    restock.sort_by(|a, b| (a.level, &a.room, &a.sku).cmp(&(b.level, &b.room, &b.sku)));
    let totals = Totals {
        rooms: rooms.len() as u64,
        events: rooms.iter().map(|r| r.events).sum(),
        doc_versions: rooms.iter().map(|r| r.doc_versions).sum(),
        text_edits: rooms.iter().map(|r| r.text_edits).sum(),
        conflicts: rooms.iter().map(|r| r.conflicts).sum(),
        units_sold: sales.iter().map(|s| s.units_sold).sum(),
        restock: restock.len() as u64,
    };
    Ok(DailyReport {
        date: date.to_owned(),
        generated_at,
        low_stock_threshold: threshold,
        totals,
        rooms,
        sales,
        restock,
        truncated: false,
    })
}

/// Stores the report as the one of its date (a later report of the same date replaces it).
/// A report made earlier than the stored one (two runs finishing out of order) leaves it: the
/// later figures stand. Returns whether this report was stored.
pub async fn store_report(store: &dyn Store, report: &DailyReport) -> Result<bool, StoreError> {
    let json = serde_json::to_string(report).map_err(|e| StoreError::Invalid(format!("report: {e}")))?;
    let key = layout::report_key(&report.date);
    for _ in 0..16 {
        let stored = store.get(&key).await?;
        let condition = match stored.as_ref().and_then(|item| item.string("generated_at")) {
            // RFC 3339 in UTC with whole seconds: string order is time order.
            Some(at) if at > report.generated_at.as_str() => return Ok(false),
            Some(at) => Condition::Equals { attr: "generated_at".to_owned(), value: Attr::S(at.to_owned()) },
            None if stored.is_some() => Condition::Exists,
            None => Condition::NotExists,
        };
        let item = Item::new(key.clone())
            .with("report", Attr::S(json.clone()))
            .with("generated_at", Attr::S(report.generated_at.clone()));
        if store.put(item, condition).await? == crate::store::Write::Done {
            return Ok(true);
        }
    }
    Err(StoreError::Unavailable(format!("the report of {} kept changing", report.date).into()))
}

/// The stored report of `date`, if one was made.
pub async fn stored(store: &dyn Store, date: &str) -> Result<Option<DailyReport>, StoreError> {
    let Some(item) = store.get(&layout::report_key(date)).await? else {
        return Ok(None);
    };
    let json = item
        .string("report")
        .ok_or_else(|| StoreError::Malformed { key: item.key.clone(), reason: "no report".to_owned() })?;
    serde_json::from_str(json)
        .map(Some)
        .map_err(|e| StoreError::Malformed { key: item.key.clone(), reason: format!("unreadable report: {e}") })
}

/// Pushes the report to the `reports` room, once per `run` (a retry of the run is answered from
/// the first push). Returns the event's seq.
pub async fn push(
    store: &dyn Store,
    clock: &dyn Clock,
    retention: std::time::Duration,
    report: &DailyReport,
    run: &str,
) -> Result<u64, JobError> {
    let json =
        serde_json::to_string(&report.for_delivery()).map_err(|e| StoreError::Invalid(format!("report: {e}")))?;
    let data = JsonData::from_json(json).map_err(|e| StoreError::Invalid(format!("report: {e}")))?;
    let id = format!("report-{}@{run}", report.date);
    let entry = Entry {
        room: REPORTS_ROOM,
        client_id: Some(ClientId { id: &id, scope: Some(REPORT_SENDER), digest: "report" }),
        fallback_id: &id,
        from: REPORT_SENDER,
        kind: EventKind::Report,
        data: &data,
        now_ms: clock.now_ms(),
        steps: Vec::new(),
    };
    match ordering::append(store, clock, &RoomHeads::keeping(retention), entry).await.map_err(JobError::from)? {
        ordering::Appended::Stored(published) => Ok(published.seq),
        ordering::Appended::Refused(_) => {
            Err(StoreError::Invalid("a report push has no conditions, yet it was refused".to_owned()).into())
        }
    }
}
