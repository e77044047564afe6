//! A Postgres session advisory lock on a dedicated connection: at most one
//! holder per (database, key) in the whole cluster, e.g. exactly one active
//! relay or reconciler. The lock lives as long as the connection's session:
//! dropping [`AdvisoryLock`] closes the connection and the server frees the
//! lock; a holder that dies (process killed, connection cut) loses it the
//! same way, so a standby's next [`AdvisoryLock::try_acquire`] takes over.

use sqlx::postgres::PgPool;
use sqlx::{Connection, PgConnection};

use crate::PgStoreError;

/// A held session advisory lock (bigint key form).
#[derive(Debug)]
pub struct AdvisoryLock {
    conn: Option<PgConnection>,
    key: i64,
}

impl AdvisoryLock {
    /// A stable lock key for a name (64-bit FNV-1a), e.g.
    /// `AdvisoryLock::key_for("payorch.relay")`.
    pub fn key_for(name: &str) -> i64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        i64::from_ne_bytes(h.to_ne_bytes())
    }

    /// Tries once to take the lock `key` on a new connection made with the
    /// pool's connect options (not a pooled connection: the lock must not
    /// go back to the pool). `Ok(None)`: another session holds it.
    pub async fn try_acquire(
        pool: &PgPool,
        key: i64,
    ) -> Result<Option<AdvisoryLock>, PgStoreError> {
        let options = pool.connect_options();
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(PgStoreError::Connect)?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .map_err(PgStoreError::Query)?;
        if got {
            Ok(Some(AdvisoryLock {
                conn: Some(conn),
                key,
            }))
        } else {
            // Best effort: the session ends either way.
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// The key this lock holds.
    pub fn key(&self) -> i64 {
        self.key
    }

    /// Checks that the session holding the lock is still alive (and so
    /// still holds it). A holder calls this before each unit of work; on
    /// `false` it must stop and compete again with `try_acquire`.
    pub async fn is_held(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let held: Result<bool, sqlx::Error> = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
             AND pid = pg_backend_pid() AND granted \
             AND ((classid::int8 << 32) | objid::int8) = $1 AND objsubid = 1)",
        )
        .bind(self.key)
        .fetch_one(conn)
        .await;
        match held {
            Ok(h) => h,
            Err(_) => {
                self.conn = None;
                false
            }
        }
    }

    /// The backend pid of the holding session (for monitoring and tests).
    pub async fn backend_pid(&mut self) -> Result<i32, PgStoreError> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| PgStoreError::Query(sqlx::Error::PoolClosed))?;
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await
            .map_err(PgStoreError::Query)
    }

    /// Releases the lock and closes the session gracefully.
    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(self.key)
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
        }
    }
}
