//! Listing and search (issue 15 point 1): a projection of every payment,
//! checkout session and recurring agreement into an index a store adapter
//! keeps in SQL ([`ResourceIndex`]), fed from `read_all` by the
//! [`Indexer`] with its own checkpoint ([`INDEX_CHECKPOINT`] in the
//! [`CheckpointStore`]), and rebuildable from position 0
//! ([`Indexer::rebuild`], `payorch replay --all`).
//!
//! The index answers which resources match (merchant, kind, status, created
//! range, merchant reference, one metadata key/value) in a stable order
//! (newest first: descending position of the resource's first event), with
//! cursor pagination (`starting_after` = the last id of the previous page).
//! The API then loads each listed resource's view from its stream, so a
//! listed item is exactly what `GET` shows.
//!
//! Rows are upserted with a version guard (an older fold never overwrites a
//! newer one), so applying a batch twice (a crash between the rows and the
//! checkpoint) changes nothing: delivery to the index is at-least-once and
//! its result exactly-once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use payorch_schemas::events::{AGREEMENT_STREAM_TYPE, CHECKOUT_STREAM_TYPE, ORDER_STREAM_TYPE};
use time::OffsetDateTime;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::aggregate::{AgreementAggregate, CheckoutAggregate, OrderAggregate};
use crate::read::{ReadError, fold_recorded, read_whole_stream};
use crate::store::{CheckpointStore, EventStore, Position, RecordedEvent, StoreError, StreamId};

/// Checkpoint name of the index.
pub const INDEX_CHECKPOINT: &str = "resource_index";

/// Most items one page may hold.
pub const MAX_LIMIT: usize = 100;

/// Longest metadata key or value the index stores (longer ones are cut
/// at a char boundary; the API refuses them before).
pub const MAX_METADATA_TEXT: usize = 500;

/// What a row describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    Payment,
    CheckoutSession,
    Agreement,
}

impl ResourceKind {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Payment => "payment",
            ResourceKind::CheckoutSession => "checkout_session",
            ResourceKind::Agreement => "agreement",
        }
    }

    /// From the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "payment" => Some(ResourceKind::Payment),
            "checkout_session" => Some(ResourceKind::CheckoutSession),
            "agreement" => Some(ResourceKind::Agreement),
            _ => None,
        }
    }

    fn of_stream_type(t: &str) -> Option<Self> {
        match t {
            ORDER_STREAM_TYPE => Some(ResourceKind::Payment),
            CHECKOUT_STREAM_TYPE => Some(ResourceKind::CheckoutSession),
            AGREEMENT_STREAM_TYPE => Some(ResourceKind::Agreement),
            _ => None,
        }
    }
}

/// One indexed resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexRow {
    pub kind: ResourceKind,
    pub id: Uuid,
    pub merchant_id: String,
    /// snake_case state, as the API shows it.
    pub status: String,
    pub merchant_reference: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Global position of the resource's first event: the list order.
    pub created_position: u64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Stream version the row was folded from (the upsert guard).
    pub version: u64,
}

/// A list request. `merchant_id` is always set: a merchant sees only its
/// own resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    pub kind: ResourceKind,
    pub merchant_id: String,
    pub status: Option<String>,
    /// Created at or after.
    pub created_gte: Option<OffsetDateTime>,
    /// Created at or before.
    pub created_lte: Option<OffsetDateTime>,
    pub merchant_reference: Option<String>,
    pub metadata: Option<(String, String)>,
    /// Items per page, 1..=[`MAX_LIMIT`].
    pub limit: usize,
    /// The last id of the previous page (must be this merchant's).
    pub starting_after: Option<Uuid>,
}

impl ListQuery {
    /// First page of everything of `kind` of `merchant_id`, 10 items.
    pub fn new(kind: ResourceKind, merchant_id: impl Into<String>) -> Self {
        ListQuery {
            kind,
            merchant_id: merchant_id.into(),
            status: None,
            created_gte: None,
            created_lte: None,
            merchant_reference: None,
            metadata: None,
            limit: 10,
            starting_after: None,
        }
    }

    /// Whether `row` passes the filters (not the cursor): the in-memory
    /// index's query, and the reference the SQL ones are tested against.
    pub fn matches(&self, row: &IndexRow) -> bool {
        row.kind == self.kind
            && row.merchant_id == self.merchant_id
            && self.status.as_ref().is_none_or(|s| &row.status == s)
            && self.created_gte.is_none_or(|t| row.created_at >= t)
            && self.created_lte.is_none_or(|t| row.created_at <= t)
            && self
                .merchant_reference
                .as_ref()
                .is_none_or(|r| row.merchant_reference.as_ref() == Some(r))
            && self
                .metadata
                .as_ref()
                .is_none_or(|(k, v)| row.metadata.get(k) == Some(v))
    }
}

/// One page: ids newest first, and whether more follow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub ids: Vec<Uuid>,
    pub has_more: bool,
}

/// Why a list request cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// `starting_after` names no resource of this merchant and kind: fix
    /// the request.
    #[error("starting_after {0} is not a {1} of this merchant")]
    UnknownCursor(Uuid, &'static str),
    /// The index store failed; retry.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The index a store adapter keeps (Postgres, SQLite, in memory).
#[async_trait]
pub trait ResourceIndex: Send + Sync {
    /// Inserts or replaces rows; a row whose stored version is newer than
    /// the given one is kept.
    async fn upsert(&self, rows: &[IndexRow]) -> Result<(), StoreError>;
    /// One page of `query`.
    async fn list(&self, query: &ListQuery) -> Result<ListPage, ListError>;
    /// Forgets every row (before a rebuild).
    async fn clear(&self) -> Result<(), StoreError>;
}

/// A value bound to a listing statement ([`list_statement`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlParam<'a> {
    Text(&'a str),
    Int(i64),
}

/// How a SQL dialect writes its n-th parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placeholders {
    /// `$1`, `$2`, ... (Postgres).
    Numbered,
    /// `?` (SQLite).
    Question,
}

/// A statement over the SQL index tables (`resource_index`,
/// `resource_index_metadata`) and its parameters, in order. The SQL
/// adapters run it and bind `params`; the query logic lives here once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlStatement<'a> {
    pub sql: String,
    pub params: Vec<SqlParam<'a>>,
}

/// Writes a [`SqlStatement`] in one dialect.
struct Builder<'a> {
    st: SqlStatement<'a>,
    style: Placeholders,
}

impl<'a> Builder<'a> {
    fn new(style: Placeholders) -> Self {
        Builder {
            st: SqlStatement {
                sql: String::new(),
                params: Vec::new(),
            },
            style,
        }
    }

    /// `text` followed by the placeholder of `param`.
    fn push(&mut self, text: &str, param: SqlParam<'a>) {
        self.st.sql.push_str(text);
        self.st.params.push(param);
        match self.style {
            Placeholders::Numbered => {
                self.st.sql.push('$');
                self.st.sql.push_str(&self.st.params.len().to_string());
            }
            Placeholders::Question => self.st.sql.push('?'),
        }
    }
}

/// The statement that reads the `created_position` of the cursor `id`
/// (the text of `q.starting_after`) among `q`'s merchant and kind.
pub fn cursor_statement<'a>(
    q: &'a ListQuery,
    id: &'a str,
    style: Placeholders,
) -> SqlStatement<'a> {
    let mut b = Builder::new(style);
    b.push(
        "SELECT created_position FROM resource_index WHERE kind = ",
        SqlParam::Text(q.kind.as_str()),
    );
    b.push(" AND id = ", SqlParam::Text(id));
    b.push(" AND merchant_id = ", SqlParam::Text(&q.merchant_id));
    b.st
}

/// The statement listing one page of `q` (one id column, text), newest
/// first, after the cursor's `created_position` `before`: at most
/// [`page_limit`] + 1 rows, so [`page_of`] can tell whether more follow.
pub fn list_statement(q: &ListQuery, before: Option<i64>, style: Placeholders) -> SqlStatement<'_> {
    let mut b = Builder::new(style);
    b.push(
        "SELECT r.id FROM resource_index r WHERE r.merchant_id = ",
        SqlParam::Text(&q.merchant_id),
    );
    b.push(" AND r.kind = ", SqlParam::Text(q.kind.as_str()));
    if let Some(s) = &q.status {
        b.push(" AND r.status = ", SqlParam::Text(s));
    }
    if let Some(t) = q.created_gte {
        b.push(" AND r.created_at_us >= ", SqlParam::Int(micros(t)));
    }
    if let Some(t) = q.created_lte {
        b.push(" AND r.created_at_us <= ", SqlParam::Int(micros(t)));
    }
    if let Some(r) = &q.merchant_reference {
        b.push(" AND r.merchant_reference = ", SqlParam::Text(r));
    }
    if let Some((k, v)) = &q.metadata {
        b.push(
            " AND EXISTS (SELECT 1 FROM resource_index_metadata m \
             WHERE m.merchant_id = r.merchant_id AND m.kind = r.kind AND m.id = r.id AND m.key = ",
            SqlParam::Text(k),
        );
        b.push(" AND m.value = ", SqlParam::Text(v));
        b.st.sql.push(')');
    }
    if let Some(p) = before {
        b.push(" AND r.created_position < ", SqlParam::Int(p));
    }
    let rows = i64::try_from(page_limit(q) + 1).unwrap_or(i64::MAX);
    b.push(
        " ORDER BY r.created_position DESC LIMIT ",
        SqlParam::Int(rows),
    );
    b.st
}

/// Items per page for `q`: its limit within 1..=[`MAX_LIMIT`].
pub fn page_limit(q: &ListQuery) -> usize {
    q.limit.clamp(1, MAX_LIMIT)
}

/// Microseconds since the epoch, as the SQL indexes store times.
pub fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// The page of `q` from the ids [`list_statement`] returned.
pub fn page_of(q: &ListQuery, ids: Vec<String>) -> Result<ListPage, StoreError> {
    let limit = page_limit(q);
    let mut out = Vec::with_capacity(ids.len());
    for text in ids {
        out.push(
            Uuid::parse_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("resource_index id {text:?}: {e}")))?,
        );
    }
    let has_more = out.len() > limit;
    out.truncate(limit);
    Ok(ListPage { ids: out, has_more })
}

/// Why the indexer stopped.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored stream could not be read or decoded (the checkpoint stays
    /// before its batch).
    #[error("index: stream {stream}: {source}")]
    Read {
        stream: String,
        #[source]
        source: ReadError,
    },
}

/// Feeds a [`ResourceIndex`] from the event log.
pub struct Indexer {
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    index: Arc<dyn ResourceIndex>,
    batch: usize,
    /// One catch-up at a time (the list handler and the background loop).
    running: Mutex<()>,
}

impl Indexer {
    pub fn new(
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        index: Arc<dyn ResourceIndex>,
    ) -> Self {
        Indexer {
            store,
            checkpoints,
            index,
            batch: 512,
            running: Mutex::new(()),
        }
    }

    /// The index.
    pub fn index(&self) -> &Arc<dyn ResourceIndex> {
        &self.index
    }

    /// Applies every event after the checkpoint; returns how many events
    /// were read. Each batch: the touched streams are folded whole (so a
    /// row is the resource's current state), upserted, then the checkpoint
    /// saved.
    pub async fn catch_up(&self) -> Result<usize, IndexError> {
        let _one = self.running.lock().await;
        let mut position = self
            .checkpoints
            .load_checkpoint(INDEX_CHECKPOINT)
            .await?
            .unwrap_or(Position::START);
        let mut read = 0;
        loop {
            let batch = self.store.read_all(position, self.batch).await?;
            let Some(last) = batch.last() else {
                return Ok(read);
            };
            let last_position = last.global_position;
            read += batch.len();
            let touched: BTreeSet<(StreamId, ResourceKind)> = batch
                .iter()
                .filter_map(|e| {
                    ResourceKind::of_stream_type(&e.stream_type).map(|k| (e.stream_id.clone(), k))
                })
                .collect();
            let mut rows = Vec::with_capacity(touched.len());
            for (stream, kind) in touched {
                let events = read_whole_stream(self.store.as_ref(), &stream)
                    .await
                    .map_err(|source| IndexError::Read {
                        stream: stream.to_string(),
                        source,
                    })?;
                let row = row_of(kind, &events).map_err(|source| IndexError::Read {
                    stream: stream.to_string(),
                    source,
                })?;
                rows.extend(row);
            }
            self.index.upsert(&rows).await?;
            self.checkpoints
                .save_checkpoint(INDEX_CHECKPOINT, last_position)
                .await?;
            position = last_position;
        }
    }

    /// Clears the index and applies the whole log from position 0.
    pub async fn rebuild(&self) -> Result<usize, IndexError> {
        {
            let _one = self.running.lock().await;
            self.index.clear().await?;
            self.checkpoints
                .save_checkpoint(INDEX_CHECKPOINT, Position::START)
                .await?;
        }
        self.catch_up().await
    }
}

/// The row of one stream from all its events (`None`: nothing to list
/// yet, e.g. a stream without its creating event).
pub fn row_of(kind: ResourceKind, events: &[RecordedEvent]) -> Result<Option<IndexRow>, ReadError> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(None);
    };
    let base = |id: Uuid,
                merchant_id: &str,
                status: &str,
                reference: &Option<String>,
                metadata: &BTreeMap<String, String>| IndexRow {
        kind,
        id,
        merchant_id: merchant_id.to_owned(),
        status: status.to_owned(),
        merchant_reference: reference.clone(),
        metadata: metadata.clone(),
        created_position: first.global_position.0,
        created_at: first.recorded_at,
        updated_at: last.recorded_at,
        version: last.version.0,
    };
    Ok(match kind {
        ResourceKind::Payment => {
            let s = fold_recorded::<OrderAggregate>(Default::default(), events)?;
            s.placed().map(|p| {
                base(
                    p.order_id.0,
                    p.merchant_id.as_str(),
                    s.phase().as_str(),
                    &p.merchant_reference,
                    &p.metadata,
                )
            })
        }
        ResourceKind::CheckoutSession => {
            let s = fold_recorded::<CheckoutAggregate>(Default::default(), events)?;
            s.requested.as_ref().map(|r| {
                base(
                    r.checkout_id.0,
                    r.merchant_id.as_str(),
                    s.phase.as_str(),
                    &r.merchant_reference,
                    &r.metadata,
                )
            })
        }
        ResourceKind::Agreement => {
            let s = fold_recorded::<AgreementAggregate>(Default::default(), events)?;
            s.created.as_ref().map(|c| {
                base(
                    c.agreement_id.0,
                    c.merchant_id.as_str(),
                    s.phase.as_str(),
                    &c.merchant_reference,
                    &c.metadata,
                )
            })
        }
    })
}

/// The index in memory (tests, embedding without SQL).
#[derive(Default)]
pub struct InMemoryIndex {
    rows: std::sync::Mutex<BTreeMap<(ResourceKind, Uuid), IndexRow>>,
}

impl InMemoryIndex {
    pub fn new() -> Self {
        Self::default()
    }
}

fn poisoned() -> StoreError {
    StoreError::Unavailable("index lock poisoned".into())
}

#[async_trait]
impl ResourceIndex for InMemoryIndex {
    async fn upsert(&self, rows: &[IndexRow]) -> Result<(), StoreError> {
        let mut map = self.rows.lock().map_err(|_| poisoned())?;
        for r in rows {
            let key = (r.kind, r.id);
            if map.get(&key).is_none_or(|old| old.version <= r.version) {
                map.insert(key, r.clone());
            }
        }
        Ok(())
    }

    async fn list(&self, q: &ListQuery) -> Result<ListPage, ListError> {
        let map = self.rows.lock().map_err(|_| poisoned())?;
        let before = match q.starting_after {
            Some(id) => match map.get(&(q.kind, id)) {
                Some(r) if r.merchant_id == q.merchant_id => Some(r.created_position),
                _ => return Err(ListError::UnknownCursor(id, q.kind.as_str())),
            },
            None => None,
        };
        let mut matching: Vec<&IndexRow> = map
            .values()
            .filter(|r| q.matches(r) && before.is_none_or(|b| r.created_position < b))
            .collect();
        matching.sort_by_key(|r| std::cmp::Reverse(r.created_position));
        let limit = q.limit.clamp(1, MAX_LIMIT);
        Ok(ListPage {
            has_more: matching.len() > limit,
            ids: matching.into_iter().take(limit).map(|r| r.id).collect(),
        })
    }

    async fn clear(&self) -> Result<(), StoreError> {
        self.rows.lock().map_err(|_| poisoned())?.clear();
        Ok(())
    }
}

/// The conformance suite every [`ResourceIndex`] adapter runs (feature
/// `testkit`): filters, order, cursors, merchant isolation, the version
/// guard and clear, checked against [`ListQuery::matches`].
#[cfg(any(test, feature = "testkit"))]
pub mod testkit {
    use super::*;

    fn row(n: u64, merchant: &str, status: &str) -> IndexRow {
        let t0 = OffsetDateTime::from_unix_timestamp(1_700_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        IndexRow {
            kind: ResourceKind::Payment,
            id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n as u128),
            merchant_id: merchant.to_owned(),
            status: status.to_owned(),
            merchant_reference: Some(format!("ref-{}", n % 3)),
            metadata: BTreeMap::from([
                ("shop".to_owned(), format!("s{}", n % 2)),
                ("n".to_owned(), n.to_string()),
            ]),
            created_position: n * 10,
            created_at: t0 + time::Duration::seconds(n as i64),
            updated_at: t0 + time::Duration::seconds(n as i64 + 1),
            version: 1,
        }
    }

    async fn all_pages(index: &dyn ResourceIndex, mut q: ListQuery) -> Vec<Uuid> {
        let mut out = Vec::new();
        loop {
            let page = index.list(&q).await.expect("list");
            out.extend(page.ids.iter().copied());
            if !page.has_more {
                return out;
            }
            q.starting_after = page.ids.last().copied();
            assert!(q.starting_after.is_some(), "has_more with an empty page");
        }
    }

    /// Runs the suite on an empty index.
    pub async fn conformance(index: &dyn ResourceIndex) {
        let statuses = ["authorised", "captured", "declined"];
        let mut rows: Vec<IndexRow> = (1..=25)
            .map(|n| row(n, "m-a", statuses[n as usize % 3]))
            .collect();
        rows.extend((26..=30).map(|n| row(n, "m-b", "captured")));
        let mut agreement = row(31, "m-a", "active");
        agreement.kind = ResourceKind::Agreement;
        rows.push(agreement.clone());
        index.upsert(&rows).await.expect("upsert");

        let expect = |q: &ListQuery| -> Vec<Uuid> {
            let mut m: Vec<&IndexRow> = rows.iter().filter(|r| q.matches(r)).collect();
            m.sort_by_key(|r| std::cmp::Reverse(r.created_position));
            m.into_iter().map(|r| r.id).collect()
        };
        let t0 = rows[0].created_at;
        let mut queries = Vec::new();
        for limit in [1, 3, 10, 100] {
            let mut q = ListQuery::new(ResourceKind::Payment, "m-a");
            q.limit = limit;
            queries.push(q);
        }
        let mut q = ListQuery::new(ResourceKind::Payment, "m-a");
        q.status = Some("captured".into());
        q.limit = 2;
        queries.push(q.clone());
        q.created_gte = Some(t0 + time::Duration::seconds(5));
        q.created_lte = Some(t0 + time::Duration::seconds(20));
        queries.push(q);
        let mut q = ListQuery::new(ResourceKind::Payment, "m-a");
        q.merchant_reference = Some("ref-1".into());
        q.limit = 4;
        queries.push(q);
        let mut q = ListQuery::new(ResourceKind::Payment, "m-a");
        q.metadata = Some(("shop".into(), "s1".into()));
        q.limit = 5;
        queries.push(q.clone());
        q.metadata = Some(("n".into(), "7".into()));
        queries.push(q);
        queries.push(ListQuery::new(ResourceKind::Payment, "m-b"));
        queries.push(ListQuery::new(ResourceKind::Agreement, "m-a"));
        queries.push(ListQuery::new(ResourceKind::CheckoutSession, "m-a"));
        for q in &queries {
            let want = expect(q);
            assert_eq!(all_pages(index, q.clone()).await, want, "{q:?}");
            let first = index.list(q).await.expect("list");
            assert_eq!(first.ids.len(), want.len().min(q.limit), "{q:?}");
            assert_eq!(first.has_more, want.len() > q.limit, "{q:?}");
        }

        // A cursor of another merchant or kind is refused.
        let mut q = ListQuery::new(ResourceKind::Payment, "m-a");
        q.starting_after = Some(rows[26].id);
        assert!(matches!(
            index.list(&q).await,
            Err(ListError::UnknownCursor(..))
        ));
        q.starting_after = Some(agreement.id);
        assert!(matches!(
            index.list(&q).await,
            Err(ListError::UnknownCursor(..))
        ));

        // The version guard: an older fold never overwrites a newer one.
        let mut newer = rows[3].clone();
        newer.version = 5;
        newer.status = "refunded".into();
        newer.metadata.insert("extra".into(), "yes".into());
        index.upsert(&[newer.clone()]).await.expect("upsert");
        let mut older = rows[3].clone();
        older.version = 4;
        index.upsert(&[older]).await.expect("upsert");
        let mut q = ListQuery::new(ResourceKind::Payment, "m-a");
        q.status = Some("refunded".into());
        assert_eq!(index.list(&q).await.expect("list").ids, vec![newer.id]);
        q.status = None;
        q.metadata = Some(("extra".into(), "yes".into()));
        assert_eq!(index.list(&q).await.expect("list").ids, vec![newer.id]);

        index.clear().await.expect("clear");
        let page = index
            .list(&ListQuery::new(ResourceKind::Payment, "m-a"))
            .await
            .expect("list");
        assert!(page.ids.is_empty() && !page.has_more);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_index_conforms() {
        super::testkit::conformance(&super::InMemoryIndex::new()).await;
    }

    /// Every filter, in both dialects: the same statement, parameters in
    /// placeholder order.
    #[test]
    fn list_statements_in_both_dialects() {
        let mut q = ListQuery::new(ResourceKind::Payment, "m-1");
        q.status = Some("captured".into());
        q.created_gte = Some(OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1));
        q.created_lte = Some(OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(2));
        q.merchant_reference = Some("ref".into());
        q.metadata = Some(("k".into(), "v".into()));
        q.limit = 500;
        let pg = list_statement(&q, Some(7), Placeholders::Numbered);
        let lite = list_statement(&q, Some(7), Placeholders::Question);
        assert_eq!(
            pg.sql,
            "SELECT r.id FROM resource_index r WHERE r.merchant_id = $1 AND r.kind = $2 \
             AND r.status = $3 AND r.created_at_us >= $4 AND r.created_at_us <= $5 \
             AND r.merchant_reference = $6 AND EXISTS (SELECT 1 FROM resource_index_metadata m \
             WHERE m.merchant_id = r.merchant_id AND m.kind = r.kind AND m.id = r.id AND m.key = $7 \
             AND m.value = $8) AND r.created_position < $9 ORDER BY r.created_position DESC LIMIT $10"
        );
        let mut n = 0;
        let numbered: String = lite
            .sql
            .chars()
            .map(|c| {
                if c == '?' {
                    n += 1;
                    format!("${n}")
                } else {
                    c.to_string()
                }
            })
            .collect();
        assert_eq!(numbered, pg.sql);
        assert_eq!(pg.params, lite.params);
        assert_eq!(
            pg.params,
            vec![
                SqlParam::Text("m-1"),
                SqlParam::Text("payment"),
                SqlParam::Text("captured"),
                SqlParam::Int(1_000_000),
                SqlParam::Int(2_000_000),
                SqlParam::Text("ref"),
                SqlParam::Text("k"),
                SqlParam::Text("v"),
                SqlParam::Int(7),
                SqlParam::Int(MAX_LIMIT as i64 + 1),
            ]
        );
        let q2 = ListQuery::new(ResourceKind::Agreement, "m-2");
        let bare = list_statement(&q2, None, Placeholders::Question);
        assert_eq!(
            bare.sql,
            "SELECT r.id FROM resource_index r WHERE r.merchant_id = ? AND r.kind = ? \
             ORDER BY r.created_position DESC LIMIT ?"
        );
        assert_eq!(bare.params.last(), Some(&SqlParam::Int(11)));
    }

    #[test]
    fn pages_say_whether_more_follow() {
        let mut q = ListQuery::new(ResourceKind::Payment, "m-1");
        q.limit = 2;
        let id = |n: u128| Uuid::from_u128(n).to_string();
        let page = page_of(&q, vec![id(1), id(2), id(3)]).unwrap();
        assert_eq!(page.ids, vec![Uuid::from_u128(1), Uuid::from_u128(2)]);
        assert!(page.has_more);
        let page = page_of(&q, vec![id(1)]).unwrap();
        assert!(!page.has_more);
        assert!(page_of(&q, vec!["not a uuid".into()]).is_err());
    }
}
