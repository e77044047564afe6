//! Conformance cases for [`OpenWorkIndex`] implementations (feature
//! `testkit`). Each case takes a fresh, **empty** index and panics with a
//! message naming the broken promise.
//!
//! [`open_work_conformance_tests!`](crate::open_work_conformance_tests)
//! expands to one `#[tokio::test]` per case, calling an async factory that
//! returns `Option<impl IndexFixture>` (`None` = skip):
//!
//! ```ignore
//! async fn index() -> Option<std::sync::Arc<InMemoryOpenWorkIndex>> {
//!     Some(std::sync::Arc::new(InMemoryOpenWorkIndex::new()))
//! }
//! payorch_engine::open_work_conformance_tests!(index);
//! ```

use std::future::Future;
use std::sync::Arc;

use time::OffsetDateTime;

use super::{OpenItem, OpenWorkIndex, WorkKind};
use crate::store::StreamId;
use crate::store::testkit::test_instant;

/// What a factory hands to a case: an empty index plus whatever must be
/// cleaned up afterwards.
pub trait IndexFixture: Send + 'static {
    type Index: OpenWorkIndex + 'static;
    fn index(&self) -> Arc<Self::Index>;
    /// Called after a case that passed.
    fn teardown(self) -> impl Future<Output = ()> + Send;
}

impl<I: OpenWorkIndex + 'static> IndexFixture for Arc<I> {
    type Index = I;
    fn index(&self) -> Arc<I> {
        Arc::clone(self)
    }
    async fn teardown(self) {}
}

fn item(stream: &str, kind: WorkKind, since_ms: i64, touched_ms: i64) -> OpenItem {
    OpenItem {
        stream_id: StreamId::new(stream),
        kind,
        since: test_instant(since_ms),
        touched_at: test_instant(touched_ms),
    }
}

async fn list_all<I: OpenWorkIndex + ?Sized>(
    index: &I,
    kind: WorkKind,
    touched_before: Option<OffsetDateTime>,
) -> Vec<OpenItem> {
    match index.list(kind, touched_before, None, 10_000).await {
        Ok(v) => v,
        Err(e) => panic!("list {kind} failed: {e}"),
    }
}

async fn must_apply<I: OpenWorkIndex + ?Sized>(index: &I, open: &[OpenItem], closed: &[&str]) {
    let closed: Vec<StreamId> = closed.iter().map(|s| StreamId::new(*s)).collect();
    if let Err(e) = index.apply(open, &closed).await {
        panic!("apply failed: {e}");
    }
}

async fn must_count<I: OpenWorkIndex + ?Sized>(index: &I, kind: WorkKind) -> u64 {
    match index.count(kind).await {
        Ok(n) => n,
        Err(e) => panic!("count {kind} failed: {e}"),
    }
}

/// Upserts add or replace one row per stream (all fields round-trip);
/// removals delete; removing an absent stream is a no-op; a stream in both
/// lists of one `apply` ends removed; kinds are kept apart.
pub async fn upsert_replace_remove<I: OpenWorkIndex>(index: Arc<I>) {
    let a = item("order-a", WorkKind::OrderCall, 1, 2);
    let b = item("agreement-b", WorkKind::AgreementCancel, 3, 4);
    let c = item("checkout-c", WorkKind::CheckoutSession, 5, 6);
    must_apply(index.as_ref(), &[a.clone(), b.clone(), c.clone()], &[]).await;
    assert_eq!(
        list_all(index.as_ref(), WorkKind::OrderCall, None).await,
        vec![a.clone()],
        "order row round trip"
    );
    assert_eq!(
        list_all(index.as_ref(), WorkKind::AgreementCancel, None).await,
        vec![b.clone()],
        "agreement row round trip"
    );
    assert_eq!(
        list_all(index.as_ref(), WorkKind::CheckoutSession, None).await,
        vec![c.clone()],
        "checkout row round trip"
    );
    for kind in WorkKind::ALL {
        assert_eq!(must_count(index.as_ref(), kind).await, 1, "count of {kind}");
    }

    // Replace: a newer call on the same order.
    let a2 = item("order-a", WorkKind::OrderCall, 100, 101);
    must_apply(
        index.as_ref(),
        std::slice::from_ref(&a2),
        &["never-indexed"],
    )
    .await;
    assert_eq!(
        list_all(index.as_ref(), WorkKind::OrderCall, None).await,
        vec![a2],
        "upsert replaces the row"
    );
    assert_eq!(
        must_count(index.as_ref(), WorkKind::OrderCall).await,
        1,
        "one row per stream"
    );

    // Remove, and both lists at once.
    let d = item("order-d", WorkKind::OrderCall, 7, 8);
    must_apply(index.as_ref(), &[d], &["order-a", "order-d"]).await;
    assert!(
        list_all(index.as_ref(), WorkKind::OrderCall, None)
            .await
            .is_empty(),
        "removed rows are gone; closed wins over open in one apply"
    );
    assert_eq!(
        must_count(index.as_ref(), WorkKind::AgreementCancel).await,
        1,
        "other kinds untouched"
    );

    // Removing again is a no-op.
    must_apply(index.as_ref(), &[], &["order-a"]).await;
    assert_eq!(
        must_count(index.as_ref(), WorkKind::CheckoutSession).await,
        1
    );
}

/// `list` orders by stream id, pages with `after` and `limit`, and filters
/// on `touched_before` (inclusive).
pub async fn list_pages_and_filters<I: OpenWorkIndex>(index: Arc<I>) {
    let items: Vec<OpenItem> = (0..25)
        .map(|i| item(&format!("order-{i:03}"), WorkKind::OrderCall, i, 1000 + i))
        .collect();
    // Applied in reverse, to show the order comes from the stream id.
    let mut rev = items.clone();
    rev.reverse();
    must_apply(index.as_ref(), &rev, &[]).await;
    must_apply(
        index.as_ref(),
        &[item("checkout-x", WorkKind::CheckoutSession, 0, 0)],
        &[],
    )
    .await;

    let mut seen = Vec::new();
    let mut after: Option<StreamId> = None;
    loop {
        let page = match index
            .list(WorkKind::OrderCall, None, after.as_ref(), 7)
            .await
        {
            Ok(p) => p,
            Err(e) => panic!("list page failed: {e}"),
        };
        assert!(page.len() <= 7, "list returned more than its limit");
        let Some(last) = page.last() else { break };
        after = Some(last.stream_id.clone());
        seen.extend(page);
    }
    assert_eq!(
        seen, items,
        "pages in stream id order, each row once, kinds apart"
    );

    let old = list_all(
        index.as_ref(),
        WorkKind::OrderCall,
        Some(test_instant(1009)),
    )
    .await;
    assert_eq!(
        old,
        items[..10].to_vec(),
        "touched_before keeps rows touched at or before it"
    );
    assert!(
        list_all(index.as_ref(), WorkKind::OrderCall, Some(test_instant(999)))
            .await
            .is_empty(),
        "nothing touched that early"
    );
    assert_eq!(must_count(index.as_ref(), WorkKind::OrderCall).await, 25);
}

/// `clear` removes every row of every kind.
pub async fn clear_empties<I: OpenWorkIndex>(index: Arc<I>) {
    must_apply(
        index.as_ref(),
        &[
            item("order-1", WorkKind::OrderCall, 1, 1),
            item("agreement-1", WorkKind::AgreementCancel, 1, 1),
            item("checkout-1", WorkKind::CheckoutSession, 1, 1),
        ],
        &[],
    )
    .await;
    if let Err(e) = index.clear().await {
        panic!("clear failed: {e}");
    }
    for kind in WorkKind::ALL {
        assert_eq!(
            must_count(index.as_ref(), kind).await,
            0,
            "clear leaves no {kind} row"
        );
    }
}

/// Many open items in one `apply` (a rebuild's batch) all land.
pub async fn large_batches<I: OpenWorkIndex>(index: Arc<I>) {
    let items: Vec<OpenItem> = (0..2_500)
        .map(|i| item(&format!("order-{i:05}"), WorkKind::OrderCall, i, i))
        .collect();
    must_apply(index.as_ref(), &items, &[]).await;
    assert_eq!(must_count(index.as_ref(), WorkKind::OrderCall).await, 2_500);
    let closed: Vec<String> = (0..2_500)
        .step_by(2)
        .map(|i| format!("order-{i:05}"))
        .collect();
    let closed: Vec<&str> = closed.iter().map(String::as_str).collect();
    must_apply(index.as_ref(), &[], &closed).await;
    assert_eq!(must_count(index.as_ref(), WorkKind::OrderCall).await, 1_250);
}

/// Expands to one `#[tokio::test]` per case, in a module
/// `open_work_conformance`. The argument names an `async fn() ->
/// Option<impl IndexFixture>` visible from the calling module.
#[macro_export]
macro_rules! open_work_conformance_tests {
    ($factory:ident) => {
        mod open_work_conformance {
            $crate::open_work_conformance_tests!(@cases $factory;
                upsert_replace_remove,
                list_pages_and_filters,
                clear_empties,
                large_batches,
            );
        }
    };
    (@cases $factory:ident; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                use $crate::open_work::testkit::IndexFixture as _;
                let Some(fx) = super::$factory().await else {
                    eprintln!(concat!("SKIP: open-work case ", stringify!($case), ": no index"));
                    return;
                };
                $crate::open_work::testkit::$case(fx.index()).await;
                fx.teardown().await;
            }
        )*
    };
}
